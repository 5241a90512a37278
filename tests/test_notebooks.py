"""Every code cell of the notebooks runs in a Jupyter kernel against real (tiny) runs, so the notebooks cannot
go stale; they are stored without outputs."""
import json

from naskd.cli import main

from .conftest import DATA, REPO

SPACE = "name: tiny\nops: [conv3, identity, lstm, none]\naggregators: [max_pool, avg_pool]\nnodes: 2\nwidth: 16\n"


def test_quickstart_notebook_runs(tiny_teacher, tmp_path, monkeypatch):
    teacher, _ = tiny_teacher
    (tmp_path / "tiny.yaml").write_text(SPACE)
    search = tmp_path / "search"
    assert main(["search", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA), "--space",
                 str(tmp_path / "tiny.yaml"), "--layers", "2", "--max-train-examples", "32", "--max-eval-examples",
                 "16", "--batch-size", "8", "--epochs", "2", "--out", str(search)]) == 0
    retrain = tmp_path / "retrain"
    assert main(["retrain", "--task", "sst2", "--teacher", str(teacher), "--genotype", str(search / "genotype.json"),
                 "--data-dir", str(DATA), "--max-train-examples", "32", "--max-eval-examples", "16", "--epochs", "1",
                 "--out", str(retrain)]) == 0
    monkeypatch.setenv("NASKD_SEARCH_RUN", str(search))
    monkeypatch.setenv("NASKD_STUDENT", str(retrain / "student"))
    monkeypatch.setenv("NASKD_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # executed as a user runs it: cell by cell in a Jupyter kernel (nbclient), which inherits the environment
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks/quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "cell.png").stat().st_size > 1000 and (tmp_path / "alphas.png").is_file()
    outputs = {c.get("execution_count"): c.get("outputs", []) for c in nb.cells if c.cell_type == "code"}
    flat = [o for os_ in outputs.values() for o in os_]
    assert not any(o.get("output_type") == "error" for o in flat)
    # in a kernel the two pictures are displayed, and the students' class probabilities printed
    assert sum("image/png" in o.get("data", {}) for o in flat) >= 2
    assert any(o.get("output_type") == "stream" and o.get("text", "").strip() for o in flat)


def test_notebooks_are_stored_without_outputs():
    """Outputs stay out of git (a run's paths and pictures would go stale and bloat the history)."""
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path


def test_search_run_notebook_runs(tiny_teacher, tmp_path, monkeypatch):
    """The one-shot search notebook on a tiny spos run of a tiny macro space, through retrain and export."""
    import yaml
    from nbclient import NotebookClient
    import nbformat

    teacher, _ = tiny_teacher
    space = tmp_path / "macro.yaml"
    space.write_text(yaml.safe_dump({"kind": "macro", "name": "tinymacro", "embed": [8, 16], "depth": [1, 2],
                                     "ops": ["lstm", "conv3"], "widths": [8, 16], "pooling": ["max", "mean"],
                                     "classifier": [8]}))
    run = tmp_path / "spos"
    assert main(["search", "--strategy", "spos", "--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA),
                 "--space", str(space), "--max-train-examples", "160", "--selection-examples", "48",
                 "--max-eval-examples", "16", "--batch-size", "16", "--epochs", "1", "--trials", "12",
                 "--population", "4", "--latency-threads", "1", "--out", str(run)]) == 0
    monkeypatch.setenv("NASKD_SEARCH_RUN", str(run))
    monkeypatch.setenv("NASKD_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("NASKD_NOTEBOOK_RETRAIN", "1")
    monkeypatch.setenv("NASKD_NOTEBOOK_RETRAIN_FLAGS", f"--data-dir {DATA} --max-train-examples 32 "
                                                      "--max-eval-examples 16 --epochs 1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(REPO / "notebooks/search_run.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    flat = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in flat)
    assert (tmp_path / "front.png").stat().st_size > 1000 and (tmp_path / "pick.png").is_file()
    assert (tmp_path / "pick.onnx").stat().st_size > 1000
    text = "".join(o.get("text", "") for o in flat if o.get("output_type") == "stream")
    assert "on the front" in text and "naskd retrain" in text and "exported" in text
