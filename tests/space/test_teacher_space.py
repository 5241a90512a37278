"""The teacher space: the fine-tuned teacher's first k layers. Its genotypes, the early exits of the
whole teacher and the truncated students that inherit their weights, membership, latency parts."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from naskd.data.tasks import TAGGING, get_task
from naskd.errors import ConfigError, NaskdError
from naskd.space.oneshot import BuildContext, load_genotype, load_oneshot_space
from naskd.space.teacher_space import TeacherGenotype, TeacherSpace, TeacherSupernet
from naskd.students.baselines import TruncatedTeacher, truncated_teacher
from naskd.teachers.model import load_teacher, read_teacher_info


def ctx_of(teacher, **kw):
    info = read_teacher_info(teacher)
    _, tok, _ = load_teacher(teacher)
    return BuildContext.for_task(get_task("sst2"), len(tok), teacher_dir=teacher, teacher_info=info, **kw)


def dev_batch(teacher):
    _, tok, _ = load_teacher(teacher)
    enc = tok(["a gripping , funny film .", "dull", "not at all what i hoped for , sadly"], padding=True,
              return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"].bool(),
            "token_type_ids": enc["token_type_ids"]}


def space_file(tmp_path, text, name="t.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_the_packaged_space_is_every_depth_of_the_teacher(tiny_teacher):
    teacher, _ = tiny_teacher
    ctx = ctx_of(teacher)
    space = load_oneshot_space("teacher", ctx=ctx)
    assert isinstance(space, TeacherSpace) and space.name == "teacher" and space.description
    assert space.dimensions() == {"k": (1, 2)} and space.size() == 2 and space.teacher_layers == 2
    assert space.fixed_shape() is None
    assert space.fixed_shape(space.from_choices({"k": 1})) == (1, 128)
    assert space.to_dict() == {"kind": "teacher", "name": "teacher", "description": space.description,
                               "layers": [1, 2]}


def test_from_yaml_checks_depths_against_the_teacher(tmp_path):
    ctx = BuildContext(kind="single", num_labels=2, vocab_size=50, teacher_layers=6)
    s = load_oneshot_space(space_file(tmp_path, "kind: teacher\nname: shallow\nlayers: [3, 1, 2]\n"), ctx=ctx)
    assert s.dimensions() == {"k": (1, 2, 3)} and s.name == "shallow" and s.fixed_shape(s.sample(
        np.random.default_rng(0))) is None                          # no teacher run: width unknown
    assert load_oneshot_space(space_file(tmp_path, "kind: teacher\n"), ctx=ctx).dimensions()["k"] == tuple(range(1, 7))
    for text, problem in [
        ("kind: teacher\nlayers: [1, 7]\n", "depths [7] are outside 1..6 of the 6-layer teacher"),
        ("kind: teacher\nlayers: [0]\n", "depths [0] are outside 1..6"),
        ("kind: teacher\nlayers: [2, 2]\n", "repeats a depth"),
        ("kind: teacher\nlayers: []\n", "'layers' must be 'auto' or a non-empty list"),
        ("kind: teacher\nlayers: all\n", "'layers' must be 'auto' or a non-empty list"),
        ("kind: teacher\nlayers: [1.5]\n", "'layers' must be 'auto' or a non-empty list"),
        ("kind: teacher\nwidth: 64\n", "unknown keys ['width']"),
    ]:
        path = space_file(tmp_path, text, "bad.yaml")
        with pytest.raises(ConfigError, match="bad.yaml") as e:
            load_oneshot_space(path, ctx=ctx)
        assert problem in str(e.value)
    with pytest.raises(ConfigError, match="depends on the teacher's depth"):
        load_oneshot_space("teacher")


def test_choices_contains_and_uniform_sample():
    space = TeacherSpace(6, [1, 2, 4, 6])
    assert space.size() == 4
    for k in (1, 2, 4, 6):
        g = space.from_choices({"k": k})
        assert g == TeacherGenotype("teacher", k, 6) and space.contains(g) and space.choices_of(g) == {"k": k}
    assert not space.contains(TeacherGenotype("teacher", 3, 6))       # a depth the space leaves out
    assert not space.contains(TeacherGenotype("teacher", 2, 4))       # another teacher's
    assert not space.contains({"kind": "teacher", "k": 2})
    with pytest.raises(ConfigError, match="'k' cannot be 3"):
        space.from_choices({"k": 3})
    with pytest.raises(ConfigError, match="'k' cannot be True"):
        space.from_choices({"k": True})
    with pytest.raises(ConfigError, match="no choice for 'k'"):
        space.from_choices({})
    with pytest.raises(ConfigError, match="not in search space"):
        space.choices_of(TeacherGenotype("teacher", 3, 6))
    rng = np.random.default_rng(0)
    counts = Counter(space.sample(rng).k for _ in range(4000))
    assert set(counts) == {1, 2, 4, 6}
    assert sum((c - 1000) ** 2 / 1000 for c in counts.values()) < 30    # 3 degrees of freedom: p < 1e-5


def test_genotypes_round_trip_through_json_and_load_genotype(tmp_path):
    space = TeacherSpace(6)
    for k in range(1, 7):
        g = space.from_choices({"k": k})
        g.save(tmp_path / f"g{k}.json")
        assert load_genotype(tmp_path / f"g{k}.json") == g == TeacherGenotype.load(tmp_path / f"g{k}.json")
        d = json.loads((tmp_path / f"g{k}.json").read_text())
        assert d == {"format": 1, "kind": "teacher", "space": "teacher", "k": k, "teacher_layers": 6}
        assert space.genotype_from_dict(d) == g
    assert TeacherGenotype("teacher", 3, 6).describe() == "teacher layers 1-3 of 6"
    assert TeacherGenotype("teacher", 1, 6).describe() == "teacher layer 1 of 6"
    (tmp_path / "wrapped.json").write_text(json.dumps({"genotype": g.to_dict()}))
    assert load_genotype(tmp_path / "wrapped.json") == g


GOOD = {"format": 1, "kind": "teacher", "space": "teacher", "k": 2, "teacher_layers": 6}


@pytest.mark.parametrize("d,problem", [
    ([GOOD], "JSON list"),
    ({**GOOD, "kind": "macro"}, "kind is 'macro', not 'teacher'"),
    ({k: v for k, v in GOOD.items() if k != "kind"}, "kind is 'cell (absent)'"),
    ({**GOOD, "format": 2}, "format 2"),
    ({k: v for k, v in GOOD.items() if k != "k"}, "missing 'k'"),
    ({**GOOD, "heads": 4}, "unknown keys ['heads']"),
    ({**GOOD, "space": 3}, "'space' must be a name"),
    ({**GOOD, "k": 0}, "'k' must be an integer >= 1, got 0"),
    ({**GOOD, "k": 2.0}, "'k' must be an integer >= 1, got 2.0"),
    ({**GOOD, "k": True}, "'k' must be an integer >= 1, got True"),
    ({**GOOD, "teacher_layers": "6"}, "'teacher_layers' must be an integer >= 1"),
    ({**GOOD, "k": 7}, "k 7 is more than the teacher's 6 layers"),
])
def test_malformed_genotypes_raise_one_error_naming_source_and_problem(d, problem, tmp_path):
    with pytest.raises(NaskdError, match="bad.json is not a valid teacher genotype") as e:
        TeacherGenotype.from_dict(d, "bad.json")
    assert problem in str(e.value)
    if isinstance(d, dict) and d.get("kind") == "teacher":      # through the generic reader too
        (tmp_path / "bad.json").write_text(json.dumps(d))
        with pytest.raises(NaskdError, match="bad.json is not a valid teacher genotype"):
            load_genotype(tmp_path / "bad.json")


def test_truncated_teacher_of_every_depth_is_the_space_s_student(tiny_teacher):
    teacher, _ = tiny_teacher
    ctx = ctx_of(teacher)
    space = load_oneshot_space("teacher", ctx=ctx)
    for k in range(1, 3):
        g = TeacherGenotype("teacher", k, 2)
        assert space.contains(g)
        ours = space.build_student(g, ctx).state_dict()
        theirs = truncated_teacher(teacher, k).state_dict()        # `naskd retrain --truncate-k k`
        assert list(ours) == list(theirs)
        assert all(ours[n].shape == theirs[n].shape and torch.equal(ours[n], theirs[n]) for n in ours)
        assert sum(".layer." in n and n.endswith("attention.self.query.weight") for n in ours) == k
    with pytest.raises(NaskdError, match="of a 6-layer teacher, this one has 2 layers"):
        space.build_student(TeacherGenotype("teacher", 2, 6), ctx)


def test_a_student_in_eval_mode_equals_its_early_exit(tiny_teacher):
    teacher, _ = tiny_teacher
    ctx = ctx_of(teacher)
    space = load_oneshot_space("teacher", ctx=ctx)
    net = space.supernet(ctx)
    assert isinstance(net, TeacherSupernet) and net.num_layers == 2
    full, _, _ = load_teacher(teacher)
    b = dev_batch(teacher)
    with torch.no_grad():
        for p in net.parameters():                       # weights that are not the saved ones: copied, not re-read
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    with torch.no_grad():
        whole = net(**b)
        assert len(whole["states"]) == 3
        for k in (1, 2):
            g = space.from_choices({"k": k})
            student = net.student(g)
            assert isinstance(student, TruncatedTeacher) and student.num_layers == k and student.training
            student.eval()
            got, want = student(**b), net(**b, path=g)
            assert torch.equal(got["logits"], want["logits"])
            assert len(got["states"]) == len(want["states"]) == k + 1
            assert all(torch.equal(s, t) for s, t in zip(got["states"], want["states"]))
            assert torch.equal(want["states"][k], whole["states"][k])   # the exit is the full run's layer k
        assert torch.equal(want["logits"], whole["logits"])          # k = L: the whole teacher
        assert len(net.encoder.encoder.layer) == 2                  # the layer list is put back
        one = net(**b, path=space.from_choices({"k": 1}))["logits"]
        assert not torch.equal(one, whole["logits"])
        assert not torch.equal(full(**b)["logits"], whole["logits"])  # (the perturbation took)
    with pytest.raises(ValueError, match="not a path of a 2-layer teacher"):
        net(**b, path=TeacherGenotype("teacher", 3, 6))


def test_early_exit_of_a_tagging_teacher_with_its_crf():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    encoder = BertModel(config, add_pooling_layer=False)
    net = TeacherSupernet(encoder, TAGGING, 5).eval()
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3]).bool()
    starts = torch.tensor([[0, 2, 4], [0, 1, 2]])
    wmask = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    for k in (1, 2, 3):
        g = TeacherGenotype("teacher", k, 3)
        student = net.student(g).eval()
        with torch.no_grad():
            got = student(ids, mask, word_starts=starts, word_mask=wmask)
            want = net(ids, mask, word_starts=starts, word_mask=wmask, path=g)
        assert got["logits"].shape == (2, 3, 5) and torch.equal(got["logits"], want["logits"])
        tags = torch.zeros(2, 3, dtype=torch.long)
        assert torch.equal(got["crf"].nll(got["logits"], tags, wmask), want["crf"].nll(want["logits"], tags, wmask))
        assert torch.equal(got["word_mask"], wmask) and len(got["states"]) == k + 1


def test_a_training_step_on_an_early_exit_leaves_the_later_layers(tiny_teacher):
    teacher, _ = tiny_teacher
    ctx = ctx_of(teacher)
    space = load_oneshot_space("teacher", ctx=ctx)
    net = space.supernet(ctx).train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    b = dev_batch(teacher)
    out = net(**b, path=space.from_choices({"k": 1}))
    torch.nn.functional.cross_entropy(out["logits"], torch.tensor([1, 0, 0])).backward()
    opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert any(".layer.0." in n for n in changed) and "head.weight" in changed
    assert not any(".layer.1." in n for n in changed)


def test_latency_parts_cover_the_whole_student(tiny_teacher):
    teacher, _ = tiny_teacher
    ctx = ctx_of(teacher)
    space = load_oneshot_space("teacher", ctx=ctx)
    b = dev_batch(teacher)
    for k in (1, 2):
        g = space.from_choices({"k": k})
        parts = space.latency_parts(g, ctx)
        assert [(p.key, p.count) for p in parts] == [("teacher:embed:bert:128:2:512", 1),
                                                     ("teacher:layer:bert:128:2:512", k),
                                                     ("teacher:head:bert:128:2:512:single:mean:2", 1)]
        student = space.build_student(g, ctx).eval()
        want = sum(p.numel() for p in student.parameters())
        got = 0
        modules = {}
        for p in parts:
            module, width = space.part_module(p.key, ctx)
            assert not module.training and width == (0 if ":embed:" in p.key else 128)
            got += p.count * sum(q.numel() for q in module.parameters())
            modules[p.key.split(":")[1]] = module
        assert got == want
    # chained, the parts compute the whole student (k = 2 here: layer 0's weights stand for both layers)
    with torch.no_grad():
        x = modules["embed"](b["input_ids"], b["attention_mask"])
        x = modules["layer"](modules["layer"](x, b["attention_mask"]), b["attention_mask"])
        y = modules["head"](x, b["attention_mask"])
        one = truncated_teacher(teacher, 2).eval()
        one.encoder.encoder.layer[1].load_state_dict(one.encoder.encoder.layer[0].state_dict())
        torch.testing.assert_close(y, one(b["input_ids"], b["attention_mask"])["logits"])
    for key in ("teacher:layer:bert:64:2:512", "teacher:embed", "cell:embed:8"):
        with pytest.raises(ConfigError, match="not a latency part of the teacher"):
            space.part_module(key, ctx)


def test_the_teacher_space_needs_a_teacher_run_to_build(tmp_path):
    space = TeacherSpace(2)
    ctx = BuildContext(kind="single", num_labels=2, vocab_size=50, teacher_layers=2)
    g = space.from_choices({"k": 1})
    for build in (lambda: space.supernet(ctx), lambda: space.build_student(g, ctx),
                  lambda: space.latency_parts(g, ctx)):
        with pytest.raises(ConfigError, match="give a teacher run"):
            build()
    with pytest.raises(NaskdError, match="does not exist"):
        space.build_student(g, BuildContext(kind="single", num_labels=2, vocab_size=50,
                                            teacher_dir=Path(tmp_path / "none")))
