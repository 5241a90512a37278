import pytest
import torch

from naskd.errors import NaskdError
from naskd.genotype import Genotype, edge_overlap, parameter_free_share, parse
from naskd.network import edge_list
from naskd.space import load_space
from naskd.space.spec import SearchSpace

SPACE = SearchSpace("t", ops=("conv3", "identity", "lstm", "none"), aggregators=("max_pool", "avg_pool"),
                    nodes=2, width=8)


def test_hand_set_alphas_give_known_genotype():
    # edges: (0,0) (0,1) (1,0) (1,1) (1,2)
    assert edge_list(2) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    a = torch.full((5, 4), -5.0)
    a[0, 3] = 9.0   # edge (0,0): 'none' dominates, but its best real op is weak
    a[0, 0] = 0.0
    a[1, 2] = 4.0   # (0,1) lstm strong
    a[2, 1] = 3.0   # (1,0) identity
    a[3, 0] = 1.0   # (1,1) conv3 weak
    a[4, 0] = 5.0   # (1,2) conv3 strong
    g = parse(a, torch.tensor([0.1, 2.0]), SPACE, layers=3, width=8)
    assert g.cells == (((("conv3", 0), ("lstm", 1)), (("identity", 0), ("conv3", 2))),)
    assert g.aggregator == "avg_pool"
    assert all(op != "none" for node in g.cell(0) for op, _ in node)


def test_none_never_chosen_even_when_it_wins_everywhere():
    a = torch.zeros(5, 4)
    a[:, 3] = 10.0
    g = parse(a, None, SPACE, layers=1, width=8)
    assert all(op != "none" for node in g.cell(0) for op, _ in node)


def test_json_round_trip_and_per_cell(tmp_path):
    a = torch.randn(3, 5, 4)
    g = parse(a, torch.randn(2), SPACE, layers=3, width=8)
    assert len(g.cells) == 3
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g
    assert Genotype.from_dict(g.to_dict()) == g
    assert edge_overlap(g, g) == 1.0


def test_bad_genotypes(tmp_path):
    g = parse(torch.randn(5, 4), torch.randn(2), SPACE, layers=2, width=8).to_dict()
    bad = dict(g, cells=[[[["warp", 0]], [["conv3", 1]]]])
    with pytest.raises(NaskdError, match="op 'warp' is not in the op table"):
        Genotype.from_dict(bad)
    bad = dict(g, cells=[[[["conv3", 5]], [["conv3", 1]]]])
    with pytest.raises(NaskdError, match="cannot read input 5"):
        Genotype.from_dict(bad)
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(NaskdError, match="not valid JSON"):
        Genotype.load(tmp_path / "x.json")
    with pytest.raises(NaskdError, match="does not exist"):
        Genotype.load(tmp_path / "missing.json")
    with pytest.raises(NaskdError, match="not a valid genotype"):
        Genotype.from_dict({"space": "x"})


def test_parameter_free_share():
    space = load_space("nas_kd")
    a = torch.full((9, 9), -5.0)
    a[:, space.ops.index("identity")] = 5.0
    g = parse(a, None, space, layers=2, width=64)
    assert parameter_free_share(g) == 1.0


def _identities(g: Genotype) -> list[int]:
    return [sum(op == "identity" for node in g.cell(c) for op, _ in node) for c in range(len(g.cells))]


def test_max_identity_caps_skips_and_keeps_the_strongest():
    # identity leads on every edge, with different strengths; conv3 second, lstm third
    a = torch.full((5, 4), -5.0)
    a[:, 1] = torch.tensor([3.0, 5.0, 2.0, 4.0, 1.0])
    a[:, 0] = 0.5
    a[:, 2] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.9])
    free = parse(a, None, SPACE, layers=1, width=8)
    assert _identities(free) == [4]
    assert parse(a, None, SPACE, layers=1, width=8, max_identity=4) == free    # under the cap: unchanged
    for cap in (0, 1, 2, 3):
        g = parse(a, None, SPACE, layers=1, width=8, max_identity=cap)
        assert _identities(g) == [cap]
        # the identities kept are the strongest ones; every barred edge takes its next-best op
        kept = sorted(((i, j) for i, node in enumerate(g.cell(0)) for op, j in node if op == "identity"))
        strength = {e: float(a[k, 1]) for k, e in enumerate(edge_list(2))}
        by_strength = sorted(strength, key=lambda e: -strength[e])
        chosen = {(i, j) for i, node in enumerate(free.cell(0)) for _, j in node}
        assert kept == sorted([e for e in by_strength if e in chosen][:cap])
        for i, node in enumerate(g.cell(0)):
            for op, j in node:
                if op != "identity":
                    assert op == ("lstm" if (i, j) == (1, 2) else "conv3")


def test_max_identity_per_cell_alphas_and_bad_value():
    a = torch.zeros(3, 5, 4)
    a[..., 1] = 4.0
    a[1, :, 1] = -4.0                       # cell 1 has no identity to cap
    g = parse(a, None, SPACE, layers=3, width=8, max_identity=1)
    assert _identities(g) == [1, 0, 1]
    with pytest.raises(NaskdError, match="max_identity must be 0 or more"):
        parse(a, None, SPACE, layers=3, width=8, max_identity=-1)


def test_committed_genotypes_build_the_students_the_results_name():
    """benchmarks/genotypes keeps the genotypes the results were measured on (runs/ is not kept): each loads,
    reads as its README row says, and the seed-0 one builds a student of the bench tables' 683,010
    non-embedding parameters (SST-2, teacher vocabulary of 30,522, 512 positions, width-64 tables)."""
    from pathlib import Path

    from naskd.network import count_parameters
    from naskd.students.fixed import FixedStudent

    from naskd.space.oneshot import load_genotype
    from naskd.students.macro import MacroStudent

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "genotypes"
    table = (folder / "README.md").read_text()
    files = sorted(folder.glob("*.json"))
    assert len(files) == 4
    for f in files:
        g = load_genotype(f)
        assert f"| `{f.name}` | {g.describe().replace('|', chr(92) + '|')} |" in table   # Markdown escapes pipes
    g = Genotype.load(folder / "sst2-seed0-2026-11-22.json")
    m = FixedStudent(g, kind="single", num_labels=2, vocab_size=30522, max_positions=512, width=64)
    total, emb = count_parameters(m)
    assert total - emb == 683010
    # the macro pick README ships: the architecture of its recorded run (9,428,394 parameters, 271,794 without
    # embeddings)
    m = MacroStudent(load_genotype(folder / "sst2-macro-random-pick.json"), vocab_size=30522, kind="single",
                     num_labels=2, pair=False)
    assert count_parameters(m) == (9428394, 9428394 - 271794)


GOOD = {"format": 1, "space": "t", "ops": ["conv3", "identity", "lstm", "none"], "aggregators": ["max_pool"],
        "nodes": 2, "layers": 2, "width": 8, "shared": True,
        "cells": [[[["conv3", 0], ["lstm", 1]], [["identity", 0], ["conv3", 2]]]], "aggregator": "max_pool"}


def _with(**changes):
    return {**GOOD, **changes}


def _without(key):
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize("data,message", [
    # JSON of the wrong type
    ([GOOD], "holds a JSON array, not an object"),
    ("genotype", "holds a JSON string, not an object"),
    (3, "holds a JSON number, not an object"),
    (None, "holds a JSON null, not an object"),
    # missing keys
    (_without("cells"), "missing 'cells'"),
    ({"space": "t"}, "missing 'ops', 'nodes', 'layers', 'width', 'cells'"),
    # numbers out of range or not whole (kind 7)
    (_with(layers=0), "'layers' must be an integer >= 1, got 0"),
    (_with(layers=1.5), "'layers' must be an integer >= 1, got 1.5"),
    (_with(nodes=-1), "'nodes' must be an integer >= 1, got -1"),
    (_with(width="8"), "'width' must be an integer >= 1, got '8'"),
    (_with(layers=True), "'layers' must be an integer >= 1, got True"),
    (_with(cells=[[[["conv3", 0.5], ["lstm", 1]], [["identity", 0], ["conv3", 2]]]]),
     r"cells\[0\]\[0\] \(cell 0, node 0\) edge 0: input index must be an integer >= 0, got 0.5"),
    (_with(cells=[[[["conv3", 1.0], ["lstm", 1]], [["identity", 0], ["conv3", 2]]]]),
     "input index must be an integer >= 0, got 1.0"),
    (_with(cells=[[[["conv3", -1], ["lstm", 1]], [["identity", 0], ["conv3", 2]]]]),
     "input index must be an integer >= 0, got -1"),
    (_with(cells=[[[["conv3", 0], ["lstm", 1]], [["identity", 0], ["conv3", 3]]]]),
     r"node 1 cannot read input 3 \(valid: 0..2\)"),
    # malformed structure (kind 6)
    (_with(cells=[[[["conv3", 0]], []]]), r"cells\[0\]\[1\] \(cell 0, node 1\) has no edges"),
    (_with(cells=[]), "'cells' must be a non-empty list"),
    (_with(cells={"0": []}), "'cells' must be a non-empty list"),
    (_with(cells=["conv3"]), r"cells\[0\] must be a list of nodes"),
    (_with(cells=[[{"conv3": 0}, [["conv3", 1]]]]), r"cells\[0\]\[0\] \(cell 0, node 0\) must be a list of"),
    (_with(cells=[[[["conv3"]], [["conv3", 1]]]]), r"edge 0 must be \[op name, input index\]"),
    (_with(cells=[[[[0, "conv3"]], [["conv3", 1]]]]), r"edge 0 must be \[op name, input index\]"),
    (_with(cells=[[[["conv3", 0]]]]), "cell 0 has 1 nodes, expected 2"),
    (_with(cells=[GOOD["cells"][0]] * 3), "3 cell descriptions for 2 layers"),
    (_with(ops="conv3"), "'ops' must be a list of names"),
    (_with(space=["t"]), "'space' must be a name"),
    (_with(format=2), "format 2, this naskd reads format 1"),
    # names not in the tables or in the genotype's own lists
    (_with(cells=[[[["warp", 0]], [["conv3", 1]]]]), "op 'warp' is not in the op table"),
    (_with(cells=[[[["attn4", 0]], [["conv3", 1]]]]), r"op 'attn4' is not among the genotype's ops"),
    (_with(aggregator="mean_of_squares"), "aggregator 'mean_of_squares' is not in the aggregator table"),
    (_with(aggregator="avg_pool"), "aggregator 'avg_pool' is not among the genotype's aggregators"),
    (_with(aggregator=3), "'aggregator' must be a name or null"),
])
def test_malformed_genotypes_fail_with_one_message(tmp_path, data, message):
    import json

    with pytest.raises(NaskdError, match=message) as e:
        Genotype.from_dict(data, "g.json")
    assert str(e.value).startswith("g.json") and "\n" not in str(e.value)
    f = tmp_path / "g.json"
    f.write_text(json.dumps(data))
    with pytest.raises(NaskdError, match=message) as e:
        Genotype.load(f)
    assert str(f) in str(e.value)


def test_the_reference_genotype_is_valid_and_round_trips():
    g = Genotype.from_dict(GOOD)
    assert g.layers == 2 and g.cell(1) == ((("conv3", 0), ("lstm", 1)), (("identity", 0), ("conv3", 2)))
    assert Genotype.from_dict(g.to_dict()) == g
    assert Genotype.from_dict({k: v for k, v in GOOD.items() if k not in ("format", "shared")}) == g


def test_genotype_files_that_are_not_json_text(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00{")
    with pytest.raises(NaskdError, match=r"bin.json is not UTF-8 JSON \(byte 0xff at offset 0\)"):
        Genotype.load(tmp_path / "bin.json")
    with pytest.raises(NaskdError, match="is a directory; name its genotype file"):
        Genotype.load(tmp_path)
    (tmp_path / "wrapped.json").write_text('{"genotype": "not a mapping"}')
    with pytest.raises(NaskdError, match="missing 'space'"):
        Genotype.load(tmp_path / "wrapped.json")


def test_check_refuses_hand_built_genotypes_without_layers():
    g = Genotype("t", ("conv3",), (), 1, 0, 8, ((("conv3", 0),),), None)
    with pytest.raises(NaskdError, match="layers must be an integer >= 1, got 0"):
        g.check("mine")
