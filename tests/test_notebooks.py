"""Every code cell of the notebooks runs against real (tiny) runs, so the notebooks cannot go stale."""
import json
from pathlib import Path

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
    nb = json.loads((REPO / "notebooks/quickstart.ipynb").read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "quickstart.ipynb", "exec"), ns)
    assert (tmp_path / "cell.png").stat().st_size > 1000 and (tmp_path / "alphas.png").is_file()
    assert ns["probs"].shape == (2, 2)
    assert Path(ns["cell_png"]) == tmp_path / "cell.png"
