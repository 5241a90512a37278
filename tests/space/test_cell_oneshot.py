"""The DARTS cell space made one-shot: its discrete space, genotypes, single paths of the supernet and the
students that inherit their weights, latency parts."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch

from naskd.data.tasks import PAIR, REGRESSION, SINGLE, TAGGING
from naskd.errors import ConfigError, NaskdError
from naskd.genotype import Genotype, sample_genotype
from naskd.network import teacher_embedding_tables
from naskd.space.cell_oneshot import CellSpace
from naskd.space.oneshot import BuildContext, load_genotype, load_oneshot_space
from naskd.space.spec import SearchSpace
from naskd.students.fixed import FixedStudent

TINY = SearchSpace("tiny", ops=("conv3", "identity", "attn4", "lstm", "dwconv3", "none"),
                   aggregators=("max_pool", "avg_pool", "dynamic_routing", "self_attn_pool"), nodes=2, width=8)
SMALL = SearchSpace("small", ops=("identity", "conv3", "none"), aggregators=("max_pool",), nodes=2, width=8)


def ctx_for(kind, **kw):
    num_labels = {REGRESSION: 1, TAGGING: 5}.get(kind, 3)
    return BuildContext(kind=kind, num_labels=num_labels, vocab_size=50, pair=kind == PAIR, max_positions=16,
                        dropout=0.1, **kw)


def batch(kind, seed=0, B=4, L=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, 3, 1, 5][:B])
    mask = torch.arange(L)[None] < lengths[:, None]
    ids = torch.randint(1, 50, (B, L), generator=g) * mask
    b = {"input_ids": ids, "attention_mask": mask}
    if kind == PAIR:
        b["token_type_ids"] = ((torch.arange(L)[None] >= (lengths[:, None] + 1) // 2) & mask).long()
    if kind == TAGGING:
        b["word_starts"] = torch.tensor([[0, 2, 4, 6], [0, 1, 2, 2], [0, 0, 0, 0], [0, 2, 3, 4]])
        b["word_mask"] = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]).bool()
    return b


def all_genotypes(space: CellSpace):
    dims = space.dimensions()
    return [space.from_choices(dict(zip(dims, vals))) for vals in itertools.product(*dims.values())]


def test_dimensions_size_and_choices_round_trip():
    space = CellSpace(TINY, layers=2)
    dims = space.dimensions()
    ops = ("conv3", "identity", "attn4", "lstm", "dwconv3")
    assert dims == {"n0_inputs": ("0,1",), "n0_op0": ops, "n0_op1": ops,
                    "n1_inputs": ("0,1", "0,2", "1,2"), "n1_op0": ops, "n1_op1": ops,
                    "aggregator": TINY.aggregators}
    every = all_genotypes(space)
    assert len(set(every)) == len(every) == space.size() == 1 * 25 * 3 * 25 * 4
    for g in every[::37]:
        assert space.contains(g) and g.layers == 2 and g.width == 8 and len(g.cells) == 1
        assert space.from_choices(space.choices_of(g)) == g
        assert all(j0 < j1 for (_, j0), (_, j1) in g.cells[0])    # sorted by input, as parse() writes
    assert space.fixed_shape() == space.fixed_shape(every[0]) == (2, 8)
    assert CellSpace(TINY).layers == 6 and space.with_layers(3).fixed_shape() == (3, 8)
    with pytest.raises(ConfigError, match="layers"):
        space.with_layers(0)


def test_a_parsed_genotype_with_unsorted_edges_is_contained_and_keeps_its_choices():
    space = CellSpace(TINY, layers=2)
    g = Genotype("other", TINY.ops, TINY.aggregators, 2, 2, 8,
                 (((("conv3", 1), ("lstm", 0)), (("identity", 2), ("attn4", 0))),), "avg_pool")
    assert space.contains(g)
    assert space.choices_of(g) == {"n0_inputs": "0,1", "n0_op0": "lstm", "n0_op1": "conv3",
                                   "n1_inputs": "0,2", "n1_op0": "attn4", "n1_op1": "identity",
                                   "aggregator": "avg_pool"}


def test_sample_is_uniform_over_what_sample_genotype_draws():
    space = CellSpace(SMALL, layers=3)
    every = set(all_genotypes(space))
    n = space.size()
    assert n == len(every) == (1 * 4) * (3 * 4) * 1
    rng = np.random.default_rng(0)
    draws = 200 * n
    counts = Counter(space.sample(rng) for _ in range(draws))
    assert set(counts) == every
    chi2 = sum((c - 200) ** 2 / 200 for c in counts.values())
    assert chi2 < 100, chi2                                          # 47 degrees of freedom: p < 1e-6
    rng = np.random.default_rng(1)
    theirs = Counter(sample_genotype(SMALL, layers=3, width=8, rng=rng) for _ in range(draws))
    assert set(theirs) == every                                       # the same set, every member drawn
    assert sum((c - 200) ** 2 / 200 for c in theirs.values()) < 100


def test_from_choices_names_a_missing_or_unknown_choice():
    space = CellSpace(TINY, layers=2)
    good = space.choices_of(space.sample(np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="no choice for 'n1_op0'"):
        space.from_choices({k: v for k, v in good.items() if k != "n1_op0"})
    with pytest.raises(ConfigError, match="'n0_op1' cannot be 'none'"):
        space.from_choices({**good, "n0_op1": "none"})
    with pytest.raises(ConfigError, match="'n1_inputs' cannot be '2,1'"):
        space.from_choices({**good, "n1_inputs": "2,1"})
    with pytest.raises(ConfigError, match="'aggregator' cannot be 'mean'"):
        space.from_choices({**good, "aggregator": "mean"})


def test_contains_refuses_genotypes_of_other_shapes():
    space = CellSpace(TINY, layers=2)
    g = space.from_choices({"n0_inputs": "0,1", "n0_op0": "conv3", "n0_op1": "lstm", "n1_inputs": "1,2",
                            "n1_op0": "identity", "n1_op1": "attn4", "aggregator": "max_pool"})
    cell = g.cells[0]
    variants = {
        "layers": Genotype(g.space, g.ops, g.aggregators, 2, 3, 8, g.cells, "max_pool"),
        "width": Genotype(g.space, g.ops, g.aggregators, 2, 2, 16, g.cells, "max_pool"),
        "per-cell": Genotype(g.space, g.ops, g.aggregators, 2, 2, 8, (cell, cell), "max_pool"),
        "one edge": Genotype(g.space, g.ops, g.aggregators, 2, 2, 8, ((cell[0][:1], cell[1]),), "max_pool"),
        "same input twice": Genotype(g.space, g.ops, g.aggregators, 2, 2, 8,
                                     ((cell[0], (("conv3", 2), ("lstm", 2))),), "max_pool"),
        "op outside": Genotype(g.space, g.ops, g.aggregators, 2, 2, 8,
                               ((cell[0], (("conv5", 1), ("lstm", 2))),), "max_pool"),
        "aggregator outside": Genotype(g.space, g.ops, g.aggregators, 2, 2, 8, g.cells, None),
    }
    assert space.contains(g)
    for what, v in variants.items():
        assert not space.contains(v), what
        with pytest.raises(ConfigError, match="not in search space tiny"):
            space.choices_of(v)
    assert not space.contains({"kind": "cell"})


def test_genotypes_round_trip_through_json_and_load_genotype(tmp_path):
    space = CellSpace(TINY, layers=2)
    rng = np.random.default_rng(3)
    for n in range(10):
        g = space.sample(rng)
        g.save(tmp_path / f"g{n}.json")
        assert load_genotype(tmp_path / f"g{n}.json") == g
        d = json.loads(json.dumps(g.to_dict()))
        assert space.genotype_from_dict(d) == g == space.genotype_from_dict({**d, "kind": "cell"})
    (tmp_path / "wrapped.json").write_text(json.dumps({"genotype": g.to_dict(), "score": 0.5}))
    assert load_genotype(tmp_path / "wrapped.json") == g


@pytest.mark.parametrize("change,problem", [
    (lambda d: {**d, "kind": "teacher"}, "of kind 'teacher'"),
    (lambda d: {k: v for k, v in d.items() if k != "cells"}, "missing 'cells'"),
    (lambda d: {**d, "layers": 0}, "'layers' must be an integer >= 1"),
    (lambda d: {**d, "cells": [[[["conv3", 0], ["lstm", 1]], [["conv3", 5]]]]}, "cannot read input 5"),
    (lambda d: {**d, "cells": [[[["conv3", 0]], [["none", 1]]]]}, "'none' cannot be a chosen op"),
    (lambda d: {**d, "aggregator": 3}, "'aggregator' must be a name or null"),
    (lambda d: [d], "JSON array"),
])
def test_malformed_genotypes_raise_one_error_naming_source_and_problem(change, problem):
    space = CellSpace(TINY, layers=2)
    d = space.sample(np.random.default_rng(0)).to_dict()
    with pytest.raises(NaskdError, match="bad.json") as e:
        space.genotype_from_dict(change(d), "bad.json")
    assert problem in str(e.value)


def test_from_yaml_reads_a_cell_file_and_names_its_problems(tmp_path):
    good = tmp_path / "tiny.yaml"
    good.write_text("name: tiny\nops: [conv3, identity, none]\naggregators: [max_pool]\nnodes: 2\nwidth: 8\n")
    space = load_oneshot_space(str(good))
    assert isinstance(space, CellSpace) and space.layers == 6 and space.size() == 1 * 4 * 3 * 4 * 1
    assert space.source == str(good) and space.name == "tiny"
    (tmp_path / "three.yaml").write_text(good.read_text() + "layers: 3\nkind: cell\n")
    assert load_oneshot_space(str(tmp_path / "three.yaml")).layers == 3
    for name, text, problem in [
        ("badop.yaml", "ops: [conv4, none]\naggregators: [max_pool]\nwidth: 8\n", "convolution kernels"),
        ("heads.yaml", "ops: [attn3]\naggregators: [max_pool]\nwidth: 8\n", "not divisible by 3 heads"),
        ("layers.yaml", "ops: [conv3]\naggregators: [max_pool]\nwidth: 8\nlayers: 0\n", "'layers' must be"),
        ("unknown.yaml", "ops: [conv3]\naggregators: [max_pool]\ndepth: 3\n", "unknown keys ['depth']"),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=name) as e:
            load_oneshot_space(str(tmp_path / name))
        assert problem in str(e.value)
    real = load_oneshot_space("nas_kd")
    assert real.size() == 1 * 64 * 3 * 64 * 6 * 64 * 4


@pytest.mark.parametrize("kind", [SINGLE, PAIR, REGRESSION, TAGGING])
def test_a_student_in_eval_mode_equals_its_path_in_the_supernet(kind):
    space = CellSpace(TINY, layers=2)
    net = space.supernet(ctx_for(kind))
    assert not any(p.requires_grad for p in net.alphas())
    with torch.no_grad():                                # weights away from their initial values
        for p in net.weights():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    b = batch(kind)
    rng = np.random.default_rng(7)
    for _ in range(12):
        g = space.sample(rng)
        student = net.student(g)
        assert isinstance(student, FixedStudent) and student.training
        student.eval()
        with torch.no_grad():
            got, want = student(**b), net(**b, path=g)
        assert torch.equal(got["logits"], want["logits"]), g.describe()
        assert len(got["states"]) == len(want["states"]) == 3
        assert all(torch.equal(s, t) for s, t in zip(got["states"], want["states"]))
        if kind == TAGGING:
            assert got["logits"].shape == (4, 4, 5)
            assert torch.equal(got["word_mask"], want["word_mask"])
            tags = torch.zeros(4, 4, dtype=torch.long)
            assert torch.equal(got["crf"].nll(got["logits"], tags, b["word_mask"]),
                               want["crf"].nll(want["logits"], tags, b["word_mask"]))
            assert got["crf"] is not want["crf"]
    with torch.no_grad():                                # the copy shares nothing with the supernet
        for p in student.parameters():
            p.zero_()
        assert torch.equal(net(**b, path=g)["logits"], want["logits"])


def test_a_path_runs_only_its_chosen_ops_and_aggregator():
    space = CellSpace(TINY, layers=2)
    net = space.supernet(ctx_for(SINGLE)).eval()
    ran = []
    for name, module in net.named_modules():
        if ".mixed." in name and name.count(".") == 5 or name.startswith("aggregate.ops.") and name.count(".") == 2:
            module.register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    g = space.from_choices({"n0_inputs": "0,1", "n0_op0": "conv3", "n0_op1": "lstm", "n1_inputs": "0,2",
                            "n1_op0": "identity", "n1_op1": "attn4", "aggregator": "self_attn_pool"})
    with torch.no_grad():
        net(**batch(SINGLE), path=g)
    # edges of node 0: (0,0)->0, (0,1)->1; node 1: (1,0)->2, (1,1)->3, (1,2)->4; ops indexed as in TINY
    want = [f"cells.{c}.mixed.{e}.ops.{o}" for c in (0, 1) for e, o in ((0, 0), (1, 3), (2, 1), (4, 2))]
    assert ran == want + ["aggregate.ops.3"]
    ran.clear()
    with torch.no_grad():
        net(**batch(SINGLE))                            # without a path: the DARTS mixture runs every op
    assert len(ran) == 2 * 5 * 5 + 4


def test_a_path_refuses_a_genotype_of_another_shape():
    space = CellSpace(TINY, layers=2)
    net = space.supernet(ctx_for(SINGLE))
    g = space.sample(np.random.default_rng(0))
    three = CellSpace(TINY, layers=3).sample(np.random.default_rng(0))
    with pytest.raises(ValueError, match="3 layers"):
        net(**batch(SINGLE), path=three)
    other = Genotype(g.space, g.ops, g.aggregators, 2, 2, 8, g.cells, "dynamic_routing")
    assert net.student(other).aggregate is not None
    bad = Genotype(g.space, g.ops, g.aggregators, 2, 2, 8, ((g.cells[0][0], (("conv5", 0),)),), g.aggregator)
    with pytest.raises(ValueError, match="op 'conv5'"):
        net.student(bad)


def test_a_training_step_on_a_path_changes_only_the_used_weights():
    space = CellSpace(TINY, layers=2)
    net = space.supernet(ctx_for(SINGLE))
    g = space.from_choices({"n0_inputs": "0,1", "n0_op0": "conv3", "n0_op1": "lstm", "n1_inputs": "1,2",
                            "n1_op0": "dwconv3", "n1_op1": "attn4", "aggregator": "dynamic_routing"})
    used = {f"cells.{c}.mixed.{e}.ops.{o}." for c in (0, 1) for e, o in ((0, 0), (1, 3), (3, 4), (4, 2))}
    used |= {"aggregate.ops.2."}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    b = batch(SINGLE)
    loss = torch.nn.functional.cross_entropy(net(**b, path=g)["logits"], torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    ops_changed = {n for n in changed if ".mixed." in n or n.startswith("aggregate.")}
    assert ops_changed and all(any(n.startswith(u) for u in used) for n in ops_changed)
    for u in used:                                     # every used op with weights moved
        assert any(n.startswith(u) for n in ops_changed), u
    assert not any(n.startswith("arch.") for n in changed)
    shared = {n for n in before if ".mixed." not in n and not n.startswith(("aggregate.", "arch."))}
    assert shared - {"embeddings.segment.weight"} <= changed     # no token_type_ids: segments unused


def test_latency_parts_cover_the_whole_student():
    space = CellSpace(TINY, layers=2)
    rng = np.random.default_rng(2)
    for kind in (SINGLE, PAIR, TAGGING):
        ctx = ctx_for(kind)
        g = space.sample(rng)
        parts = space.latency_parts(g, ctx)
        keys = [p.key for p in parts]
        assert len(set(keys)) == len(keys)
        assert keys[0] == ("cell:embed:8:pair" if kind == PAIR else "cell:embed:8")
        assert sum(p.count for p in parts if p.key.startswith("cell:edge:")) == 2 * 2 * 2
        assert {p.key: p.count for p in parts}["cell:cell:8:2"] == 2
        assert any(k.startswith("cell:agg:") for k in keys) == (kind != TAGGING)
        student = space.build_student(g, ctx)
        # every weight the forward uses is in exactly one part (the CRF is run by the loss, not the forward)
        want = sum(p.numel() for n, p in student.named_parameters() if not n.startswith("crf."))
        got = 0
        x = torch.randn(4, 7, 8)
        b = batch(kind)
        for p in parts:
            module, width = space.part_module(p.key, ctx)
            assert not module.training
            with torch.no_grad():
                y = module(b["input_ids"], b["attention_mask"]) if width == 0 else module(x, b["attention_mask"])
            assert torch.isfinite(y).all()
            got += p.count * sum(q.numel() for q in module.parameters())
        assert got == want
    for key in ("cell:edge:conv3", "cell:head:single:8", "macro:embed:8", "cell", "cell:embed:8:triple"):
        with pytest.raises(ConfigError, match="not a latency part"):
            space.part_module(key, ctx_for(SINGLE))
    with pytest.raises(ConfigError, match="convolution kernels must be odd"):
        space.part_module("cell:edge:conv4:8", ctx_for(SINGLE))


def test_students_and_supernet_take_their_embeddings_from_the_teacher(tiny_teacher):
    teacher, _ = tiny_teacher
    vocab = teacher_embedding_tables(teacher)["word"].size(0)
    ctx = BuildContext(kind=SINGLE, num_labels=2, vocab_size=vocab, teacher_dir=teacher, max_positions=32)
    space = CellSpace(TINY, layers=2)
    g = space.sample(np.random.default_rng(0))
    student = space.build_student(g, ctx)
    again = space.build_student(g, ctx)
    ref = FixedStudent(g, kind=SINGLE, num_labels=2, vocab_size=vocab, max_positions=32)
    ref.embeddings.init_from_teacher(teacher_embedding_tables(teacher))
    assert torch.equal(student.embeddings.word.weight, ref.embeddings.word.weight)
    assert all(torch.equal(p, q) for p, q in zip(student.parameters(), again.parameters()))   # seeded
    net = space.supernet(ctx)
    assert torch.equal(net.embeddings.word.weight, ref.embeddings.word.weight)
    assert torch.equal(net.student(g).embeddings.position.weight, ref.embeddings.position.weight)
