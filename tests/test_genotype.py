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

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "genotypes"
    table = (folder / "README.md").read_text()
    files = sorted(folder.glob("*.json"))
    assert len(files) == 3
    for f in files:
        g = Genotype.load(f)
        assert f"| `{f.name}` | {g.describe()} |" in table
    g = Genotype.load(folder / "sst2-seed0-2026-11-22.json")
    m = FixedStudent(g, kind="single", num_labels=2, vocab_size=30522, max_positions=512, width=64)
    total, emb = count_parameters(m)
    assert total - emb == 683010
