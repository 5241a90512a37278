import json

import numpy as np
import torch

from naskd.cli import main
from naskd.genotype import parse
from naskd.plotting import cell_graph, plot_alphas, plot_cell
from naskd.space.spec import SearchSpace

SPACE = SearchSpace("t", ops=("conv3", "identity", "lstm", "none"), aggregators=("max_pool", "avg_pool"),
                    nodes=3, width=8)


def test_cell_graph_matches_genotype(tmp_path):
    g = parse(torch.randn(9, 4), torch.randn(2), SPACE, layers=2, width=8)
    graph = cell_graph(g)
    assert set(graph.nodes) == {"c_{k-2}", "c_{k-1}", "0", "1", "2", "c_{k}"}
    names = ["c_{k-2}", "c_{k-1}", "0", "1", "2"]
    want = {(names[j], str(i), op) for i, node in enumerate(g.cell(0)) for op, j in node}
    got = {(u, v, d["op"]) for u, v, d in graph.edges(data=True) if d["op"] != "concat"}
    assert got == want and len(got) == 6
    out = tmp_path / "cell.png"
    plot_cell(g, out)
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"


def test_alpha_heat_map_and_cli(tmp_path):
    hist = []
    for epoch in (1, 2, 3):
        a = torch.randn(9, 4)
        g = parse(a, torch.randn(2), SPACE, layers=2, width=8)
        hist.append({"epoch": epoch, "genotype": g.to_dict(),
                     "alphas": {"ops": torch.softmax(a, -1).tolist(), "op_names": list(SPACE.ops)}})
    arr = plot_alphas(hist, tmp_path / "a.png")
    assert arr.shape == (3, 9, 4) and np.allclose(arr.sum(-1), 1.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps(hist))
    g.save(run / "genotype.json")
    assert main(["plot", str(run), "--alphas", "-o", str(tmp_path / "b.png")]) == 0
    assert main(["plot", str(run / "genotype.json"), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "b.png").is_file() and (tmp_path / "c.png").is_file()
    assert main(["plot", str(tmp_path), "--alphas", "-o", str(tmp_path / "d.png")]) == 2


# ---- issue 19: plot output guarded and checked; malformed inputs one line ------------------------------------

def _genotype_file(tmp_path):
    g = parse(torch.randn(9, 4), torch.randn(2), SPACE, layers=2, width=8)
    g.save(tmp_path / "g.json")
    return tmp_path / "g.json"


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("naskd plot: error: ") and "Traceback" not in err, err
    return lines[0]


def test_plot_unknown_format_lists_matplotlibs(tmp_path, capsys):
    """`naskd plot G.json -o x.foo`: one line with the formats matplotlib writes; nothing drawn or left."""
    import matplotlib.pyplot as plt

    g = _genotype_file(tmp_path)
    assert main(["plot", str(g), "-o", str(tmp_path / "x.foo")]) == 2
    msg = _one_error(capsys)
    known = sorted(plt.figure().canvas.get_supported_filetypes())
    assert f"matplotlib cannot write .foo files; use one of {', '.join(known)}" in msg
    assert {"png", "pdf", "svg"} <= set(known)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]


def test_plot_refuses_to_replace_a_file_unless_asked(tmp_path, capsys, monkeypatch):
    """`naskd plot -o FILE` over an existing file: refused (the file unchanged) without --overwrite; with it,
    replaced through a temporary file in the same folder (none left behind)."""
    g = _genotype_file(tmp_path)
    out = tmp_path / "mine.png"
    out.write_bytes(b"my own picture")
    assert main(["plot", str(g), "-o", str(out)]) == 2
    assert "mine.png already exists; pass --overwrite to replace it" in _one_error(capsys)
    assert out.read_bytes() == b"my own picture"
    assert main(["plot", str(g), "-o", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "mine.png"]
    # the default output, cell.png in the working directory, is guarded the same way
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "cell.png").write_bytes(b"x")
    monkeypatch.chdir(cwd)
    assert main(["plot", str(g)]) == 2
    assert "cell.png already exists" in _one_error(capsys) and (cwd / "cell.png").read_bytes() == b"x"


def test_plot_output_paths_that_cannot_be_written(tmp_path, capsys):
    g = _genotype_file(tmp_path)
    (tmp_path / "afile").write_text("x")
    cases = [(tmp_path, "is a directory; name a file to write with -o"),
             (tmp_path / "afile" / "p.png", "afile is a file, not a folder"),
             ("/proc/naskd-test.png", "cannot write /proc/naskd-test.png")]
    for out, expect in cases:
        assert main(["plot", str(g), "-o", str(out)]) == 2
        assert expect in _one_error(capsys), out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "g.json"]


def test_plot_alphas_of_a_malformed_history(tmp_path, capsys):
    bad = {"notjson": "{nope", "object": "{}", "numbers": "[1, 2]",
           "ragged": json.dumps([{"epoch": 1, "genotype": {"nodes": 2},
                                  "alphas": {"ops": [[1, 2], [3]], "op_names": ["a", "b"]}}]),
           "shape": json.dumps([{"epoch": 1, "genotype": {"nodes": 2},
                                 "alphas": {"ops": [[0.5, 0.5]], "op_names": ["a", "b"]}}])}
    expect = {"notjson": "cannot be read as JSON (JSONDecodeError", "object": "it holds a JSON dict, not a list",
              "numbers": "epoch entry 0 lacks epoch, alphas.ops", "ragged": "not number arrays of one shape",
              "shape": "alphas of shape (1, 2) do not fit 2 nodes (5 edges) and 2 ops"}
    for name, text in bad.items():
        (tmp_path / f"{name}.json").write_text(text)
        assert main(["plot", str(tmp_path / f"{name}.json"), "--alphas", "-o", str(tmp_path / f"{name}.png")]) == 2
        msg = _one_error(capsys)
        assert expect[name] in msg and f"{name}.json" in msg, msg
        assert not (tmp_path / f"{name}.png").exists()


def test_macro_and_teacher_genotypes_plot_as_stacks(tmp_path):
    from naskd.plotting import stack_of
    from naskd.space.macro import MacroGenotype
    from naskd.space.teacher_space import TeacherGenotype

    m = MacroGenotype("macro", 300, (("lstm", 300), ("conv3", 128)), "ends", 200)
    t = TeacherGenotype("teacher", 2, 6)
    assert stack_of(m) == ["word embeddings (300)", "lstm -> 300", "conv3 -> 128", "pooling: ends", "ReLU 200", "logits"]
    assert stack_of(t)[1:3] == ["teacher layer 1", "teacher layer 2"] and len(stack_of(t)) == 4
    for g in (m, t):
        g.save(tmp_path / "g.json")
        out = tmp_path / f"{g.to_dict()['kind']}.png"
        assert main(["plot", str(tmp_path / "g.json"), "-o", str(out)]) == 0
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
