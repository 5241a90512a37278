"""The macro space: its file, genotypes, students (Tang et al.'s BiLSTM among them), the width-sliced
supernet and the latency parts."""
import itertools
import json

import numpy as np
import pytest
import torch
import yaml

from naskd.errors import ConfigError, NaskdError
from naskd.space.macro import MacroGenotype, MacroSpace
from naskd.space.oneshot import BuildContext, Part, load_genotype, load_oneshot_space
from naskd.students.baselines import BiLSTMStudent
from naskd.students.macro import MacroStudent
from naskd.supernet.macro import MacroSupernet

V = 50
TINY = {"kind": "macro", "name": "tiny", "description": "small widths for tests", "embed": [6, 8],
        "depth": [1, 2, 3], "ops": ["lstm", "conv3", "dwconv5", "attn2", "attn4"], "widths": [4, 8],
        "pooling": ["ends", "max", "mean"], "classifier": [3, 5]}
TANG = {"kind": "macro", "format": 1, "space": "macro", "embed": 300, "layers": [["lstm", 300]],
        "pooling": "ends", "classifier": 200}


def tiny_space(tmp_path, **changes):
    data = {**TINY, **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_oneshot_space(str(path))


def ctx_for(kind, pair=None, **kw):
    pair = kind == "pair" if pair is None else pair
    return BuildContext(kind=kind, num_labels=1 if kind == "regression" else 2, vocab_size=V, pair=pair, **kw)


def batch(pair: bool, seed=0, B=4, L=11):
    """Ids with rows of several lengths (one unpadded); for pairs segment ids of two sentences per row."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([L, 7, 4, 2][:B])
    mask = (torch.arange(L)[None] < lengths[:, None]).long()
    ids = torch.randint(1, V, (B, L), generator=g) * mask
    tt = torch.zeros_like(ids)
    if pair:
        for r, n in enumerate(lengths.tolist()):
            tt[r, max(1, n // 2):n] = 1                       # sentence a: the first half (at least one token)
    return ids, mask, tt


# --- the space file ------------------------------------------------------------------------------

def test_the_macro_file_loads_with_its_dimensions_and_exact_size():
    space = load_oneshot_space("macro")
    assert isinstance(space, MacroSpace) and space.kind == "macro" and space.name == "macro" and space.description
    assert space.embed == (64, 128, 300) and space.depth == (1, 2, 3, 4, 5, 6)
    assert space.widths == (64, 128, 200, 300) and space.pooling == ("ends", "max", "mean")
    assert space.classifier == (200, 400) and space.fixed_shape() is None
    dims = space.dimensions()
    assert list(dims) == (["embed", "depth"] + [f"op_{i}" for i in range(6)] + [f"width_{i}" for i in range(6)]
                          + ["pooling", "classifier"])
    per_layer = len(space.ops) * 4
    assert space.size() == sum(per_layer ** d for d in range(1, 7)) * 3 * 3 * 2
    assert space.contains(MacroGenotype.from_dict(TANG))
    assert MacroSpace.from_yaml(space.to_dict(), "again").dimensions() == dims


def test_size_counts_the_distinct_genotypes(tmp_path):
    space = tiny_space(tmp_path, embed=[6, 8], depth=[1, 2], ops=["lstm", "attn2"], widths=[4, 8],
                       pooling=["ends", "max"], classifier=[3])
    dims = space.dimensions()
    every = {space.from_choices(dict(zip(dims, values))) for values in itertools.product(*dims.values())}
    assert len(every) == space.size() == (4 + 16) * 2 * 2 < np.prod([len(v) for v in dims.values()])
    assert all(space.contains(g) for g in every)


@pytest.mark.parametrize("change, words", [
    ({"layers": [1]}, ["unknown keys", "layers"]),
    ({"ops": []}, ["'ops'", "non-empty"]),
    ({"widths": [4, 7]}, ["widths", "7", "odd"]),
    ({"widths": [4, 6]}, ["attn4", "6", "not divisible by 4 heads"]),
    ({"depth": [0, 1]}, ["depth", "0", ">= 1"]),
    ({"embed": [0]}, ["embed", "0"]),
    ({"classifier": [3, "many"]}, ["classifier", "many"]),
    ({"ops": ["lstm", "gru"]}, ["ops", "gru"]),
    ({"ops": ["conv4"]}, ["conv4", "odd"]),
    ({"pooling": ["ends", "first"]}, ["pooling", "first"]),
    ({"widths": [4, 4]}, ["widths", "repeats"]),
    ({"depth": 3}, ["'depth'", "list"]),
    ({"kind": "cell_like"}, []),                       # another kind: not read as macro
])
def test_bad_space_files_name_the_file_and_the_choice(tmp_path, change, words):
    with pytest.raises((ConfigError, NaskdError)) as e:
        tiny_space(tmp_path, **change)
    msg = str(e.value)
    if change.get("kind") != "cell_like":
        assert str(tmp_path / "tiny.yaml") in msg
    for w in words:
        assert w in msg, msg


def test_tagging_is_refused_everywhere(tmp_path):
    space = tiny_space(tmp_path)
    tag = ctx_for("tagging", pair=False)
    with pytest.raises(ConfigError, match="sentence tasks .*use nas_kd or teacher"):
        load_oneshot_space(str(tmp_path / "tiny.yaml"), ctx=tag)
    g = space.sample(np.random.default_rng(0))
    for call in (lambda: space.supernet(tag), lambda: space.build_student(g, tag),
                 lambda: space.latency_parts(g, tag)):
        with pytest.raises(ConfigError, match="sentence tasks"):
            call()


# --- genotypes ----------------------------------------------------------------------------------

def test_genotype_round_trips_through_json_and_describes_itself(tmp_path):
    g = MacroGenotype.from_dict(TANG, "t")
    assert g.describe() == "emb300 | lstm300 | ends | relu200" and g.depth == 1 and g.width == 300
    assert g.to_dict() == TANG
    deep = MacroGenotype("macro", 64, (("conv3", 128), ("attn4", 200), ("lstm", 64)), "max", 400)
    assert deep.describe() == "emb64 | conv3-128 | attn4-200 | lstm64 | max | relu400"
    deep.save(tmp_path / "g.json")
    assert json.loads((tmp_path / "g.json").read_text())["kind"] == "macro"
    assert load_genotype(tmp_path / "g.json") == deep
    (tmp_path / "wrapped.json").write_text(json.dumps({"genotype": deep.to_dict(), "score": 1}))
    assert load_genotype(tmp_path / "wrapped.json") == deep
    assert load_oneshot_space("macro").genotype_from_dict(TANG) == g


def test_descriptions_read_back_as_the_genotypes_they_describe():
    ops = ("lstm", "conv3", "dwconv5", "attn4", "attn8")
    rng = np.random.default_rng(0)
    for _ in range(200):
        layers = tuple((str(rng.choice(ops)), int(rng.choice([64, 128, 200, 296]))) for _ in range(rng.integers(1, 7)))
        layers = tuple((op, w) for op, w in layers if not (op == "attn8" and w % 8))
        if not layers:
            continue
        g = MacroGenotype("macro", int(rng.choice([64, 300])), layers, str(rng.choice(["ends", "max", "mean"])),
                          int(rng.choice([200, 400])))
        assert MacroGenotype.from_description(g.describe()) == g
    assert MacroGenotype.from_description(" emb300|lstm300 | ends|relu200 ") == MacroGenotype.from_dict(TANG)
    assert MacroGenotype.from_description("emb300 \\| lstm300 \\| ends \\| relu200") == MacroGenotype.from_dict(TANG)


@pytest.mark.parametrize("text, words", [
    ("emb300 | ends | relu200", ["at least one layer"]),
    ("e300 | lstm300 | ends | relu200", ["'e300'", "emb<N>"]),
    ("emb300 | lstm300 | ends | 200", ["'200'", "relu<N>"]),
    ("emb300 | conv3_64 | max | relu200", ["layer 'conv3_64'"]),
    ("emb300 | gru64 | max | relu200", ["layer 'gru64'"]),
    ("emb300 | conv4-64 | max | relu200", ["odd"]),
    ("emb300 | lstm300 | first | relu200", ["'pooling'"]),
])
def test_bad_descriptions_name_the_part(text, words):
    with pytest.raises(NaskdError) as e:
        MacroGenotype.from_description(text)
    for w in words:
        assert w in str(e.value), str(e.value)


@pytest.mark.parametrize("bad, words", [
    ([1, 2], ["array"]),
    ({**TANG, "format": 2}, ["format 2"]),
    ({k: v for k, v in TANG.items() if k != "layers"}, ["missing 'layers'"]),
    ({**TANG, "extra": 1}, ["unknown keys", "extra"]),
    ({**TANG, "embed": 0}, ["'embed'"]),
    ({**TANG, "classifier": 2.5}, ["'classifier'"]),
    ({**TANG, "embed": True}, ["'embed'"]),
    ({**TANG, "pooling": "first"}, ["'pooling'", "first"]),
    ({**TANG, "layers": []}, ["'layers'", "non-empty"]),
    ({**TANG, "layers": [["lstm"]]}, ["layers[0]", "[op name, width]"]),
    ({**TANG, "layers": [["lstm", 300], ["gru", 64]]}, ["layers[1]", "gru"]),
    ({**TANG, "layers": [["lstm", 301]]}, ["layers[0]", "even"]),
    ({**TANG, "layers": [["attn8", 300]]}, ["layers[0]", "not divisible by 8 heads"]),
    ({**TANG, "space": 3}, ["'space'"]),
])
def test_malformed_genotypes_name_the_source_and_the_problem(tmp_path, bad, words):
    with pytest.raises(NaskdError) as e:
        MacroGenotype.from_dict(bad, "some/g.json")
    msg = str(e.value)
    assert msg.startswith("some/g.json is not a valid macro genotype"), msg
    for w in words:
        assert w in msg, msg
    (tmp_path / "g.json").write_text(json.dumps(bad))
    if isinstance(bad, dict):
        with pytest.raises(NaskdError, match="g.json"):
            load_genotype(tmp_path / "g.json")


def test_choices_round_trip_and_unknown_or_missing_choices_fail(tmp_path):
    space = tiny_space(tmp_path)
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(60):
        g = space.sample(rng)
        seen.add(g.depth)
        assert space.contains(g)
        c = space.choices_of(g)
        assert set(c) == set(space.dimensions())
        assert space.from_choices(c) == g
        for i in range(g.depth, space.max_depth):         # unused dimensions: their first option
            assert c[f"op_{i}"] == "lstm" and c[f"width_{i}"] == 4
    assert seen == {1, 2, 3}
    choices = space.choices_of(MacroGenotype("tiny", 6, (("lstm", 4),), "ends", 3))
    assert space.from_choices({k: v for k, v in choices.items() if not k.endswith(("_1", "_2"))}).depth == 1
    with pytest.raises(ConfigError, match="width_0 = 5"):
        space.from_choices({**choices, "width_0": 5})
    with pytest.raises(ConfigError, match="no choice for op_0"):
        space.from_choices({k: v for k, v in choices.items() if k != "op_0"})
    with pytest.raises(ConfigError, match="no choice for op_1, width_1"):
        space.from_choices({k: v for k, v in choices.items() if not k.endswith("_1")} | {"depth": 2})
    with pytest.raises(ConfigError, match="unknown dimensions"):
        space.from_choices({**choices, "op_7": "lstm"})
    assert not space.contains(MacroGenotype("tiny", 6, (("lstm", 16),), "ends", 3))
    assert not space.contains(MacroGenotype("tiny", 6, (("lstm", 4),) * 4, "ends", 3))
    with pytest.raises(ConfigError, match="not in the macro space"):
        space.choices_of(MacroGenotype("tiny", 6, (("lstm", 16),), "ends", 3))


# --- students -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["single", "pair"])
def test_tang_genotype_is_the_bilstm_student(kind):
    """emb300 | lstm300 | ends | relu200 of the real macro space is BiLSTMStudent(300, 150, 200): the same
    parameter count and, with its weights, the same outputs."""
    space = load_oneshot_space("macro")
    g = MacroGenotype.from_dict(TANG)
    assert space.contains(g)
    pair = kind == "pair"
    torch.manual_seed(0)
    ref = BiLSTMStudent(vocab_size=V, kind=kind, num_labels=2, pair=pair, embed=300, hidden=150, relu=200)
    mine = space.build_student(g, ctx_for(kind))
    assert isinstance(mine, MacroStudent) and mine.genotype == g
    assert sum(p.numel() for p in mine.parameters()) == sum(p.numel() for p in ref.parameters())
    mine.load_state_dict({k.replace("lstm.", "layers.0."): v for k, v in ref.state_dict().items()}, strict=True)
    ref, mine = ref.double().eval(), mine.double().eval()
    for seed, L in [(0, 11), (1, 5), (2, 16)]:
        ids, mask, tt = batch(pair, seed, L=L)
        with torch.no_grad():
            a, b = ref(ids, mask, tt), mine(ids, mask, tt)
        torch.testing.assert_close(b["logits"], a["logits"], rtol=0, atol=1e-12)
        torch.testing.assert_close(b["states"][0], a["states"][0], rtol=0, atol=0)
        assert len(b["states"]) == 2 and b["states"][1].shape == (4, L, 300)
        assert torch.equal(b["mask"], a["mask"])
    with torch.enable_grad():                              # the unfused training path too
        torch.testing.assert_close(mine(ids, mask, tt)["logits"], ref(ids, mask, tt)["logits"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("pooling", ["ends", "max", "mean"])
def test_students_ignore_padding_and_zero_their_states_there(pooling):
    """Every op, with appended padding holding garbage ids: logits unchanged, every state zero at padding."""
    torch.manual_seed(0)
    g = MacroGenotype("t", 6, (("conv3", 8), ("attn2", 4), ("dwconv5", 8), ("lstm", 4), ("attn4", 8)), pooling, 5)
    m = MacroStudent(g, vocab_size=V, kind="single", num_labels=3, pair=False).double().eval()
    ids, mask, _ = batch(False, L=7)
    out = m(ids, mask)
    more_ids = torch.cat([ids, torch.randint(1, V, (4, 5))], 1)
    more_ids[:, :7][mask == 0] = 9
    more_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.long)], 1)
    out2 = m(more_ids, more_mask)
    torch.testing.assert_close(out2["logits"], out["logits"], rtol=0, atol=1e-12)
    assert out["logits"].shape == (4, 3) and len(out["states"]) == 6
    for s, width in zip(out2["states"], [6, 8, 4, 8, 4, 8]):
        assert s.shape == (4, 12, width) and torch.all(s[more_mask == 0] == 0)


def test_pair_student_encodes_each_sentence_alone_and_places_states_back():
    torch.manual_seed(0)
    g = MacroGenotype("t", 6, (("attn2", 8), ("lstm", 4)), "max", 5)
    m = MacroStudent(g, vocab_size=V, kind="regression", num_labels=1, pair=True).double().eval()
    a, b = [2, 11, 12, 13, 3], [14, 15, 3]
    tt = torch.tensor([[0] * 5 + [1] * 3 + [0, 0]])
    out = m(torch.tensor([a + b + [0, 0]]), torch.tensor([[1] * 8 + [0, 0]]), tt)
    assert out["logits"].shape == (1,)
    alone_a = m(torch.tensor([a]), torch.ones(1, 5, dtype=torch.long))
    alone_b = m(torch.tensor([b]), torch.ones(1, 3, dtype=torch.long))
    for k in (1, 2):                                        # each layer's states of both sentences, in place
        torch.testing.assert_close(out["states"][k][0, :5], alone_a["states"][k][0], rtol=0, atol=1e-12)
        torch.testing.assert_close(out["states"][k][0, 5:8], alone_b["states"][k][0], rtol=0, atol=1e-12)
        assert torch.all(out["states"][k][0, 8:] == 0)


# --- the supernet ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["single", "pair", "regression"])
def test_supernet_paths_equal_their_students(tmp_path, kind):
    space = tiny_space(tmp_path)
    net = space.supernet(ctx_for(kind))
    assert isinstance(net, MacroSupernet)
    net = net.double().eval()
    rng = np.random.default_rng({"single": 0, "pair": 1, "regression": 2}[kind])
    ids, mask, tt = batch(kind != "single")
    seen = set()
    for _ in range(40):
        g = space.sample(rng)
        seen |= {("op", op) for op, _ in g.layers} | {("w", w) for _, w in g.layers}
        seen |= {("pool", g.pooling), ("depth", g.depth), ("embed", g.embed), ("c", g.classifier)}
        with torch.no_grad():
            want = net(ids, mask, tt, path=g)
            s = net.student(g)
            got = s(ids, mask, tt)
        assert isinstance(s, MacroStudent) and not s.training and s.word.weight.dtype == torch.float64
        torch.testing.assert_close(got["logits"], want["logits"], rtol=0, atol=1e-12)
        assert len(got["states"]) == len(want["states"]) == g.depth + 1
        for x, y in zip(got["states"], want["states"]):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-12)
    assert len(seen) == 5 + 2 + 3 + 3 + 2 + 2               # every op, width, pooling, depth, embed, classifier
    with pytest.raises(ConfigError, match="not a genotype of the macro space"):
        net(ids, mask, tt, path=MacroGenotype("x", 6, (("lstm", 16),), "ends", 3))


def test_a_training_step_moves_only_the_slices_a_path_reads(tmp_path):
    space = tiny_space(tmp_path)
    net = space.supernet(ctx_for("pair")).double().train()
    g = MacroGenotype("tiny", 6, (("lstm", 4), ("attn2", 4)), "ends", 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ids, mask, tt = batch(True)
    net(ids, mask, tt, path=g)["logits"].sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    # modules the path does not use: no gradient at all
    unused = ("layers.2.", "layers.0.attn2", "layers.1.lstm")
    assert all(grads[n] is None for n in grads if n.startswith(unused) or ".conv3." in n or ".attn4." in n)
    # the used modules: gradient only inside the slices
    assert grads["word.weight"][:, 6:].abs().sum() == 0 and grads["word.weight"][:, :6].abs().sum() > 0
    gih = grads["layers.0.lstm.fwd.weight_ih_l0"].view(4, 4, 8)       # 4 gates x 4 units (max) x 8 inputs
    assert gih[:, 2:].abs().sum() == 0 and gih[:, :, 6:].abs().sum() == 0 and gih[:, :2, :6].abs().sum() > 0
    qkv = grads["layers.1.attn2.qkv.weight"].view(3, 8, 8)
    assert qkv[:, 4:].abs().sum() == 0 and qkv[:, :, 4:].abs().sum() == 0 and qkv[:, :4, :4].abs().sum() > 0
    assert grads["layers.1.attn2.inp.weight"][4:].abs().sum() == 0
    assert grads["layers.1.attn2.inp.weight"][:, 4:].abs().sum() == 0
    w1 = grads["relu.0.weight"].view(5, 4, 8)                         # classifier 5 x 4 pair blocks x width 8
    assert w1[3:].abs().sum() == 0 and w1[:, :, 4:].abs().sum() == 0 and w1[:3, :, :4].abs().sum() > 0
    assert grads["out.weight"][:, 3:].abs().sum() == 0
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    after = net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("word", "layers.0.lstm", "layers.1.attn2", "relu", "out")) for k in moved)
    assert torch.equal(before["word.weight"][:, 6:], after["word.weight"][:, 6:])


def _fake_teacher(path, D=16, seed=0):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V, D, generator=g) @ torch.randn(D, D, generator=g)    # correlated columns
    path.mkdir()
    save_file({"bert.embeddings.word_embeddings.weight": table.contiguous()}, str(path / "model.safetensors"))
    return table


def test_embeddings_from_the_teacher_are_pca_projections_at_every_width(tmp_path):
    table = _fake_teacher(tmp_path / "teacher")
    space = tiny_space(tmp_path)
    ctx = ctx_for("single", teacher_dir=tmp_path / "teacher")
    net = space.supernet(ctx)
    for E in (6, 8):
        g = MacroGenotype("tiny", E, (("lstm", 4),), "ends", 3)
        fresh = space.build_student(g, ctx)
        torch.testing.assert_close(net.word.weight[:, :E], fresh.word.weight)
        torch.testing.assert_close(net.student(g).word.weight, fresh.word.weight)
        centred = fresh.word.weight - fresh.word.weight.mean(0)
        var = centred.pow(2).sum(0)
        assert torch.all(var[:-1] >= var[1:] - 1e-3)        # principal directions, in order of variance
    assert "6 -> 6" in space.build_student(MacroGenotype("tiny", 6, (("lstm", 4),), "ends", 3), ctx).embedding_note
    assert "first 8 principal directions" in net.embedding_note
    wide = tiny_space(tmp_path, embed=[6, 20])                # wider than the teacher: zero columns after 16
    net = wide.supernet(ctx)
    assert torch.all(net.word.weight[:, 16:] == 0)
    torch.testing.assert_close(net.word.weight[:, :16] @ net.word.weight[:, :16].T, table @ table.T,
                               rtol=1e-4, atol=1e-3)        # a rotation of the teacher's table


def test_builds_are_seeded_by_the_context_and_leave_the_global_rng_alone(tmp_path):
    space = tiny_space(tmp_path)
    g = MacroGenotype("tiny", 8, (("attn2", 8), ("lstm", 4)), "max", 5)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a, b = space.build_student(g, ctx_for("single", seed=1)), space.build_student(g, ctx_for("single", seed=1))
    c = space.build_student(g, ctx_for("single", seed=2))
    n1, n2 = space.supernet(ctx_for("pair", seed=1)), space.supernet(ctx_for("pair", seed=1))
    assert torch.equal(torch.get_rng_state(), state)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.layers[0].qkv.weight, c.layers[0].qkv.weight)
    assert all(torch.equal(v, n2.state_dict()[k]) for k, v in n1.state_dict().items())


# --- latency parts --------------------------------------------------------------------------------

def test_latency_parts_cover_the_forward():
    space = load_oneshot_space("macro")
    g = MacroGenotype.from_dict(TANG)
    assert space.latency_parts(g, ctx_for("single")) == [
        Part("macro:embed:300"), Part("macro:lstm:300:300"), Part("macro:pool:ends:300"),
        Part("macro:head:300:200:2:single")]
    deep = MacroGenotype("macro", 64, (("conv3", 128), ("conv3", 128), ("attn4", 200)), "mean", 400)
    assert space.latency_parts(deep, ctx_for("regression", pair=True)) == [
        Part("macro:embed:64"), Part("macro:split:64"), Part("macro:conv3:64:128", 2), Part("macro:merge:128", 2),
        Part("macro:conv3:128:128", 2), Part("macro:attn4:128:200", 2), Part("macro:merge:200"),
        Part("macro:pool:mean:200", 2), Part("macro:head:200:400:1:regression+pair")]


@pytest.mark.parametrize("kind", ["single", "pair"])
def test_part_modules_build_and_run(kind):
    space = load_oneshot_space("macro")
    ctx = ctx_for(kind)
    g = MacroGenotype("macro", 64, (("dwconv5", 128), ("attn2", 64), ("lstm", 200)), "max", 200)
    B, L = 3, 9
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 5:] = 0
    params = 0
    for part in space.latency_parts(g, ctx):
        module, width = space.part_module(part.key, ctx)
        assert not module.training
        params += sum(p.numel() for p in module.parameters()) * part.count
        with torch.no_grad():
            if width == 0:
                y = module(torch.randint(1, V, (B, L)) * mask, mask)
                assert y.shape == (B, L, 64)
            else:
                y = module(torch.randn(B, L, width), mask.bool())
        if part.key.startswith("macro:head"):
            assert y.shape == (B, 2)
        elif part.key.startswith("macro:pool"):
            assert y.shape == (B, 200)
    student = space.build_student(g, ctx)
    n = 2 if kind == "pair" else 1
    # every weight of the student is in some part (the encoder parts counted once per sentence)
    enc = sum(p.numel() for p in student.layers.parameters())
    assert params == sum(p.numel() for p in student.parameters()) + (n - 1) * enc
    for bad in ("macro:gru:64:64", "macro:embed", "cell:embed:64", "macro:pool:first:64"):
        with pytest.raises(ConfigError, match="macro"):
            space.part_module(bad, ctx)
