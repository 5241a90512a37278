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
