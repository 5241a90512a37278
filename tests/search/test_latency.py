"""Latency-aware search: the op table, the estimate of a derived student, its expectation under the
alphas, the penalty's pull, and `naskd search --latency-*` end to end on the tiny teacher."""
import json

import numpy as np
import pytest
import torch

from naskd.cli import main
from naskd.errors import ConfigError
from naskd.genotype import Genotype, parse
from naskd.search.architect import Architect
from naskd.search.latency import (LatencyTable, expected_latency, genotype_latency, latency_penalty,
                                  profile_latency)
from naskd.space.spec import load_space
from naskd.supernet import Supernet

from .test_search import SPACE_YAML, argv, space  # noqa: F401  (fixture)

OPS_MS = {"conv3": 1.0, "identity": 0.25, "attn4": 40.0, "lstm": 100.0, "none": 0.0}
AGG_MS = {"max_pool": 0.5, "dynamic_routing": 3.0}


def table(**kw) -> LatencyTable:
    d = dict(ops=dict(OPS_MS), aggregators=dict(AGG_MS), skeleton_ms=2.0, cell_skeleton_ms=0.75,
             skeleton_aggregator="max_pool", length=12, width=16)
    d.update(kw)
    return LatencyTable(**d)


def tiny_space(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(SPACE_YAML)
    return load_space(str(f))


def test_genotype_latency_by_hand(tmp_path):
    sp = tiny_space(tmp_path)
    # node 0 reads (x0, x1) with lstm and conv3; node 1 reads x0 and node 0 with identity and attn4
    cell = ((("lstm", 0), ("conv3", 1)), (("identity", 0), ("attn4", 2)))
    g = Genotype(sp.name, tuple(sp.ops), tuple(sp.aggregators), sp.nodes, 3, 16, (cell,), "dynamic_routing")
    per_cell = 0.75 + (100 + 1 - 2 * 0.25) + (0.25 + 40 - 2 * 0.25)
    assert genotype_latency(g, table()) == pytest.approx(2.0 + 3 * per_cell + (3.0 - 0.5), abs=1e-12)


@pytest.mark.parametrize("per_cell", [False, True])
def test_expectation_equals_the_estimate_when_alphas_are_decided(tmp_path, per_cell):
    """Each node's incoming edges all prefer one parametric op, so any top-2 choice gives that op: the
    expectation must equal the estimate of the genotype parse() derives (an independent computation)."""
    sp = tiny_space(tmp_path)
    rng = np.random.default_rng(0)
    names = list(sp.ops)
    layers = 3
    edges = [(i, j) for i in range(sp.nodes) for j in range(i + 2)]
    alphas = torch.full((layers if per_cell else 1, len(edges), len(names)), -30.0, dtype=torch.float64)
    for c in range(alphas.shape[0]):
        for i in range(sp.nodes):
            op = names.index(str(rng.choice(["conv3", "attn4", "lstm"])))
            for e, (node, _) in enumerate(edges):
                if node == i:
                    alphas[c, e, op] = 30.0 + rng.random()       # decided, with distinct edge strengths
                    alphas[c, e, names.index("none")] = 29.0     # `none` is ignored by both
    a = alphas if per_cell else alphas[0]
    agg = torch.tensor([-30.0, 30.0], dtype=torch.float64)
    g = parse(a, agg, sp, layers=layers, width=16, k=2)
    exp = expected_latency(a, torch.softmax(agg, -1), sp, table(), layers=layers, k=2)
    assert exp.dtype == torch.float64
    assert float(exp) == pytest.approx(genotype_latency(g, table()), rel=1e-9)


def test_identity_is_outside_the_expectation(tmp_path):
    """A node decided on identity: the expectation prices its edges at their parametric ops (an upper
    bound on the derived student, which keeps the identities), and identity's alpha gets no gradient."""
    sp = tiny_space(tmp_path)
    names = list(sp.ops)
    alphas = torch.zeros(5, len(names), dtype=torch.float64)
    alphas[:, names.index("identity")] = 30.0
    alphas[:, names.index("conv3")] = 5.0                       # the best parametric op on every edge
    alphas.requires_grad_(True)
    agg = torch.tensor([0.0, 0.0], dtype=torch.float64)
    g = parse(alphas.detach(), agg, sp, layers=2, width=16, k=2)
    assert {op for node in g.cell(0) for op, _ in node} == {"identity"}
    exp = expected_latency(alphas, torch.softmax(agg, -1), sp, table(), layers=2)
    assert float(exp.detach()) > genotype_latency(g, table())
    exp.backward()
    assert torch.all(alphas.grad[:, names.index("identity")] == 0) and torch.all(alphas.grad[:, names.index("none")] == 0)
    assert torch.all(alphas.grad[:, names.index("lstm")] > 0)          # slower parametric ops cost more


def test_expectation_is_a_mixture_of_edge_costs(tmp_path):
    """Uniform alphas: every edge costs the mean of the parametric op times; a node keeps 2 edges."""
    sp = tiny_space(tmp_path)
    n_edges = 5
    w = torch.zeros(n_edges, 5, dtype=torch.float64)                # equal logits
    mean_op = (1.0 + 40.0 + 100.0) / 3
    per_cell = 0.75 + 2 * (2 * mean_op - 2 * 0.25)
    exp = expected_latency(w, torch.tensor([0.5, 0.5], dtype=torch.float64), sp, table(), layers=2)
    assert float(exp) == pytest.approx(2.0 + 2 * per_cell + (0.5 * 0.5 + 0.5 * 3.0 - 0.5), rel=1e-12)


def test_penalty_is_zero_within_target_and_pulls_toward_fast_ops(tmp_path):
    sp = tiny_space(tmp_path)
    model = Supernet(sp, layers=2, width=16, kind="classification", num_labels=2, vocab_size=50)
    t = table()
    expected = expected_latency(model.arch["ops"], model.agg_weights(), sp, t, layers=2)
    expected = expected.detach()
    assert float(latency_penalty(expected, float(expected) * 1.01, 1.0)) == 0.0
    assert float(latency_penalty(expected, float(expected) / 2, 3.0)) == pytest.approx(3.0, rel=1e-6)

    def no_task_loss(batch):
        return 0.0 * sum(p.sum() for p in model.alphas())

    opt = torch.optim.Adam(model.alphas(), lr=0.05)
    before = model.op_weights().detach().clone()
    alphas_before = model.arch["ops"].detach().clone()
    arch = Architect(no_task_loss, model.weights(), model.alphas(), opt,
                     penalty=lambda: latency_penalty(expected_latency(model.arch["ops"], model.agg_weights(), sp,
                                                                      t, layers=2), 1.0, 1.0))
    for _ in range(20):
        arch.step({}, {})
    after = model.op_weights().detach()
    names = list(sp.ops)
    assert arch.last_penalty > 0
    assert (after[:, names.index("lstm")] < before[:, names.index("lstm")]).all()
    assert (after[:, names.index("conv3")] > before[:, names.index("conv3")]).all()
    # the penalty never moves a parameter-free op's alpha (it may only change its softmax share)
    a = model.arch["ops"].detach()
    for free in ("identity", "none"):
        torch.testing.assert_close(a[:, names.index(free)], alphas_before[:, names.index(free)], rtol=0, atol=0)
    assert float(model.agg_weights().detach()[1]) < 0.5                         # dynamic routing is the slower one
    # within the target: no gradient, the alphas stay put
    arch.penalty = lambda: latency_penalty(expected_latency(model.arch["ops"], model.agg_weights(), sp, t,
                                                            layers=2), 1e6, 1.0)
    opt = torch.optim.SGD(model.alphas(), lr=1.0)
    arch.optimizer = opt
    frozen = [p.detach().clone() for p in model.alphas()]
    arch.step({}, {})
    for p, q in zip(model.alphas(), frozen):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)


def test_profile_and_table_round_trip(tmp_path, tiny_teacher):
    from naskd.teachers.model import load_teacher

    sp = tiny_space(tmp_path)
    teacher = load_teacher(tiny_teacher[0])[0]
    t = profile_latency(sp, width=16, length=10, kind="classification", num_labels=2, vocab_size=30522,
                        repeat=3, teacher=teacher)
    assert t.ops["none"] == 0.0 and all(t.ops[o] > 0 for o in ("conv3", "identity", "attn4", "lstm"))
    assert set(t.aggregators) == set(sp.aggregators) and all(v > 0 for v in t.aggregators.values())
    assert t.skeleton_ms >= 0 and t.cell_skeleton_ms >= 0   # differences of timings: clamped, never negative and t.teacher_ms > 0 and t.length == 10
    t.check(sp)
    back = LatencyTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t
    del back.ops["lstm"]
    with pytest.raises(ConfigError, match="no time for lstm"):
        back.check(sp)
    with pytest.raises(ConfigError, match="not a latency table"):
        LatencyTable.from_dict({"ops": {}})


def test_search_under_a_latency_target_avoids_slow_ops(tiny_teacher, space, tmp_path):  # noqa: F811
    teacher, _ = tiny_teacher
    tfile = tmp_path / "table.json"
    tfile.write_text(json.dumps(table().to_dict()))
    out = tmp_path / "fast"
    # on the CPU: 8 steps reach the target there; under a GPU's bf16 autocast they stop just above it
    assert main(argv(teacher, space, out, "--latency-table", str(tfile), "--latency-ms", "8",
                     "--latency-weight", "10", "--arch-lr", "0.05", "--device", "cpu")) == 0
    g = Genotype.load(out / "genotype.json")
    ops = {op for node in g.cell(0) for op, _ in node}
    assert ops <= {"conv3", "identity"} and g.aggregator == "max_pool"
    m = json.loads((out / "metrics.json").read_text())
    assert m["latency"]["genotype_ms"] == pytest.approx(genotype_latency(g, table()))
    assert m["latency"]["target_ms"] == 8.0 and m["latency"]["table"] == str(tfile)
    assert m["latency"]["within_target"] and "latency_warning" not in m
    assert LatencyTable.load(out / "latency.json") == table()
    assert all("latency_penalty" in json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
               if '"step"' in line)


def test_search_over_its_target_says_so(tiny_teacher, space, tmp_path):  # noqa: F811
    """A target no genotype of the space can meet: the run finishes, flags its student as over the target
    and says what to do."""
    teacher, _ = tiny_teacher
    tfile = tmp_path / "table.json"
    tfile.write_text(json.dumps(table().to_dict()))
    out = tmp_path / "over"
    assert main(argv(teacher, space, out, "--latency-table", str(tfile), "--latency-ms", "0.5", "--epochs", "1")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["latency"]["within_target"] is False and m["latency"]["genotype_ms"] > 0.5
    assert "over the target 0.50 ms" in m["latency_warning"] and "--latency-weight" in m["latency_warning"]


def test_search_profiles_when_no_table_is_given(tiny_teacher, space, tmp_path):  # noqa: F811
    teacher, _ = tiny_teacher
    out = tmp_path / "prof"
    assert main(argv(teacher, space, out, "--latency-speedup", "2", "--epochs", "1")) == 0
    t = LatencyTable.load(out / "latency.json")
    lat = json.loads((out / "metrics.json").read_text())["latency"]
    assert t.teacher_ms > 0 and lat["target_ms"] == pytest.approx(t.teacher_ms / 2)
    assert lat["estimated_speedup"] == pytest.approx(t.teacher_ms / lat["genotype_ms"])


@pytest.mark.parametrize("extra,message", [
    (["--latency-ms", "0"], "setting 'latency_ms' must be a finite number > 0, got 0.0"),
    (["--latency-ms", "3", "--latency-speedup", "2"], "not both"),
    (["--latency-ms", "3", "--latency-weight", "-1"], "'latency_weight' must be a finite number >= 0, got -1.0"),
    (["--latency-table", "nowhere.json"], "nowhere.json does not exist"),
])
def test_bad_latency_settings(tiny_teacher, space, tmp_path, capsys, extra, message):  # noqa: F811
    teacher, _ = tiny_teacher
    assert main(argv(teacher, space, tmp_path / "bad") + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_table_without_an_op_or_the_teacher(tiny_teacher, space, tmp_path, capsys):  # noqa: F811
    teacher, _ = tiny_teacher
    d = table().to_dict()
    del d["ops"]["attn4"]
    f = tmp_path / "t.json"
    f.write_text(json.dumps(d))
    assert main(argv(teacher, space, tmp_path / "a", "--latency-table", str(f))) == 2
    assert "no time for attn4" in capsys.readouterr().err
    f.write_text(json.dumps(table().to_dict()))
    assert main(argv(teacher, space, tmp_path / "b", "--latency-table", str(f), "--latency-speedup", "2")) == 2
    assert "no teacher_ms" in capsys.readouterr().err


def test_profiling_leaves_the_search_unchanged(tiny_teacher, space, tmp_path):  # noqa: F811
    """Weight 0: the search with a profiled table must be the plain search, bit for bit (profiling draws
    no random numbers from the search's streams)."""
    from .test_search import final_alphas

    teacher, _ = tiny_teacher
    plain, timed = tmp_path / "plain", tmp_path / "timed"
    assert main(argv(teacher, space, plain, "--epochs", "1")) == 0
    assert main(argv(teacher, space, timed, "--epochs", "1", "--latency-ms", "1000", "--latency-weight", "0")) == 0
    assert (timed / "latency.json").is_file() and not (plain / "latency.json").exists()
    for a, b in zip(final_alphas(plain), final_alphas(timed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_penalty_acts_only_while_the_derived_student_is_over_the_target(tmp_path):
    """The derived student ships: once its estimate is within the target the penalty is off, however far
    the mixture's expectation still is; over the target it is on and pulls."""
    from naskd.search.run import _Latency

    sp = tiny_space(tmp_path)
    model = Supernet(sp, layers=2, width=16, kind="classification", num_labels=2, vocab_size=50)
    names = list(sp.ops)
    t = table()
    lat = _Latency(t, 10.0, 1.0, sp, model, 2, 2, "test", 16)
    with torch.no_grad():
        model.arch["ops"].zero_()
        model.arch["ops"][:, names.index("conv3")] = 0.1          # derived: every edge conv3, barely
        model.arch["agg"].copy_(torch.tensor([0.1, 0.0]))         # max_pool
    fast = lat.derived_ms()
    assert fast < 10.0 < float(lat.expected())                    # the mixture still prices lstm and attn4
    assert lat.penalty() is None
    with torch.no_grad():
        model.arch["ops"][:, names.index("lstm")] = 0.2           # derived: every edge lstm
    assert lat.derived_ms() > 10.0
    pen = lat.penalty()
    assert pen is not None and float(pen) > 0
    lat.target_ms = None                                          # estimates only: never a penalty
    assert lat.penalty() is None
