"""One shared suite for every registered op and aggregator, plus hand-worked cases."""
import math

import pytest
import torch

from naskd.errors import ConfigError
from naskd.space import AGGREGATORS, OPS, build_aggregator, build_op, load_space
from naskd.space.aggregators import DynamicRouting, squash
from naskd.space.ops import Tokens

D = 16


def _names(table):
    return sorted(table.exact) + [ex for _, ex, _ in table.families]


OP_NAMES = _names(OPS) + ["conv5", "dwconv7", "dilconv5", "attn4", "max_pool5"]
AGG_NAMES = _names(AGGREGATORS)


def _inputs(B=3, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g)
    lengths = torch.tensor([L, max(1, L - 3), 1][:B])
    mask = torch.arange(L)[None, :] < lengths[:, None]
    return x, mask


def _pad_more(x, mask, extra=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    garbage = 100 * torch.randn(x.size(0), extra, x.size(2), generator=g)
    x2 = torch.cat([x, garbage], 1)
    # garbage also where the old padding was: padding values must not matter
    x2[:, : x.size(1)][~mask] = 50 * torch.randn(int((~mask).sum()), x.size(2), generator=g)
    return x2, torch.cat([mask, torch.zeros(x.size(0), extra, dtype=torch.bool)], 1)


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_contract(name):
    torch.manual_seed(0)
    op = build_op(name, D).eval()
    x, mask = _inputs()
    y = op(x, mask)
    assert y.shape == x.shape
    assert torch.all(y[~mask] == 0), "outputs at padding must be zero"
    x2, mask2 = _pad_more(x, mask)
    y2 = op(x2, mask2)
    torch.testing.assert_close(y2[:, : x.size(1)][mask], y[mask], atol=1e-5, rtol=1e-5)
    # batch 1 and length 1
    assert op(x[:1, :1], mask[:1, :1]).shape == (1, 1, D)


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    op = build_op(name, D).train()
    x, mask = _inputs()
    x.requires_grad_(True)
    y = op(x, mask)
    if name == "none":
        assert not list(op.parameters()) and torch.all(y == 0)
        return
    (y ** 2).sum().backward()
    for pname, p in op.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    assert x.grad is not None and x.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", AGG_NAMES)
def test_aggregator_contract(name):
    torch.manual_seed(0)
    agg = build_aggregator(name, D).eval()
    x, mask = _inputs()
    y = agg(x, mask)
    assert y.shape == (3, D) and torch.isfinite(y).all()
    x2, mask2 = _pad_more(x, mask)
    torch.testing.assert_close(agg(x2, mask2), y, atol=1e-5, rtol=1e-5)
    assert agg(x[:1, :1], mask[:1, :1]).shape == (1, D)
    agg.train()
    x.requires_grad_(True)
    (agg(x, mask) ** 2).sum().backward()
    for pname, p in agg.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad[mask].abs().sum() > 0


def test_one_shared_tokens_object_gives_what_the_bare_mask_gives():
    """A network builds one Tokens per forward and every op and aggregator reads its cached mask tensors:
    with float32 and float64 inputs and 2- and 4-head attention sharing it, each output is exactly what the
    op computes from the bare bool mask, and the cache holds one tensor per (kind, heads, dtype)."""
    torch.manual_seed(0)
    x, mask = _inputs()
    shared = Tokens(mask)
    for dtype in (torch.float32, torch.float64):
        for name in OP_NAMES:
            op = build_op(name, D).eval().to(dtype)
            assert torch.equal(op(x.to(dtype), shared), op(x.to(dtype), mask)), (name, dtype)
        for name in AGG_NAMES:
            agg = build_aggregator(name, D).eval().to(dtype)
            assert torch.equal(agg(x.to(dtype), shared), agg(x.to(dtype), mask)), (name, dtype)
    keys = set(shared._cache)
    assert {("multiplier", torch.float32), ("multiplier", torch.float64), ("key_bias", 4, torch.float32),
            ("key_bias", 8, torch.float64), "reverse"} <= keys
    bias = shared.key_bias(2, torch.float32)               # (B*h, 1, L): head-major within each sentence
    assert bias.shape == (6, 1, 7)
    for b in range(3):
        for h in range(2):
            assert torch.equal(torch.isinf(bias[2 * b + h, 0]), ~mask[b])


def test_masked_pools_by_hand():
    x = torch.tensor([[[1.0], [5.0], [-100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert build_aggregator("max_pool", 1)(x, mask).item() == 5.0
    assert build_aggregator("avg_pool", 1)(x, mask).item() == 3.0


def test_dynamic_routing_two_tokens_by_hand():
    """Two tokens, two capsules of dim 2, W = I, three iterations, worked with scalar arithmetic."""
    h = [[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 1.0]]
    u = [[h[i][0:2], h[i][2:4]] for i in range(2)]            # u[i][j] = message of token i to capsule j

    def sq(s):
        n2 = s[0] ** 2 + s[1] ** 2
        return [n2 / (1 + n2) * c / math.sqrt(n2) for c in s]

    b = [[0.0, 0.0], [0.0, 0.0]]
    for it in range(3):
        c = [[math.exp(b[i][j]) / sum(math.exp(t) for t in b[i]) for j in range(2)] for i in range(2)]
        s = [[sum(c[i][j] * u[i][j][k] for i in range(2)) for k in range(2)] for j in range(2)]
        v = [sq(s[j]) for j in range(2)]
        b = [[b[i][j] + sum(u[i][j][k] * v[j][k] for k in range(2)) for j in range(2)] for i in range(2)]
    expected = torch.tensor([v[0] + v[1]])

    dr = DynamicRouting(4, capsules=2, iterations=3)
    with torch.no_grad():
        dr.W.weight.copy_(torch.eye(4))
    x = torch.tensor([h + [[9.0, 9.0, 9.0, 9.0]]])              # a padded third token
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(dr(x, mask), expected, atol=1e-6, rtol=1e-6)
    # routing changes the answer: one iteration (uniform coupling) differs from three
    one = DynamicRouting(4, capsules=2, iterations=1)
    one.load_state_dict(dr.state_dict())
    assert not torch.allclose(one(x, mask), expected, atol=1e-4)


def test_squash_norm():
    s = torch.tensor([[3.0, 4.0]])
    assert squash(s).norm().item() == pytest.approx(25 / 26, rel=1e-6)


def test_bad_names_and_widths():
    with pytest.raises(ConfigError, match=r"unknown op 'conv'.*known: .*identity"):
        build_op("conv", D)
    with pytest.raises(ConfigError, match="not divisible by 8 heads"):
        build_op("attn8", 20)
    with pytest.raises(ConfigError, match="kernels must be odd"):
        build_op("conv4", D)
    with pytest.raises(ConfigError, match="even width"):
        build_op("lstm", 15)
    with pytest.raises(ConfigError, match="unknown aggregator"):
        build_aggregator("mean", D)


def test_registering_a_new_op_needs_no_other_change(tmp_path):
    from naskd.space import register_op

    class Double(torch.nn.Module):
        def forward(self, x, mask):
            return 2 * x * mask.unsqueeze(-1)

    register_op("double_test_op", lambda dim: Double())
    try:
        f = tmp_path / "s.yaml"
        f.write_text("name: t\nops: [double_test_op, none]\naggregators: [max_pool]\nnodes: 1\nwidth: 8\n")
        space = load_space(str(f))
        assert space.ops == ("double_test_op", "none")
    finally:
        OPS.exact.pop("double_test_op")


def test_shipped_spaces_and_bad_space_files(tmp_path):
    assert "dynamic_routing" in load_space("nas_kd").aggregators
    assert "dilconv7" in load_space("adabert").ops
    f = tmp_path / "bad.yaml"
    f.write_text("name: t\nops: [conv3, warp]\naggregators: [max_pool]\n")
    with pytest.raises(ConfigError, match="unknown op 'warp'"):
        load_space(str(f))
    f.write_text("name: t\nops: [conv3]\naggregators: [max_pool]\nnodes: 0\n")
    with pytest.raises(ConfigError, match="nodes must be at least 1"):
        load_space(str(f))
    f.write_text("name: t\nops: [attn8]\naggregators: [max_pool]\nwidth: 12\n")
    with pytest.raises(ConfigError, match="not divisible by 8 heads"):
        load_space(str(f))
    with pytest.raises(Exception, match="known: adabert, macro, nas_kd, teacher"):
        load_space("darts")


def test_lstm_equals_packed_bidirectional_lstm():
    """Independent reference: torch's packed bidirectional LSTM with the same weights."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    op = build_op("lstm", D).eval()
    ref = torch.nn.LSTM(D, D // 2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(op.fwd, name))
            getattr(ref, name + "_reverse").copy_(getattr(op.bwd, name))
    x, mask = _inputs()
    packed = pack_padded_sequence(x, mask.sum(1), batch_first=True, enforce_sorted=False)
    want, _ = pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=x.size(1))
    torch.testing.assert_close(op(x, mask)[mask], want[mask], atol=1e-6, rtol=1e-5)
    # inference on a small batch takes the fused block-diagonal path: the same numbers
    with torch.no_grad():
        torch.testing.assert_close(op(x, mask)[mask], want[mask], atol=1e-6, rtol=1e-5)
    assert op._fused is not None and not any("fused" in k for k in op.state_dict())


def test_fused_lstm_follows_weight_changes_and_large_batches_take_two_calls():
    torch.manual_seed(0)
    op = build_op("lstm", D).eval()
    x, mask = _inputs()
    with torch.no_grad():
        first = op(x, mask)
        with torch.enable_grad():
            two_calls = op(x, mask)
        torch.testing.assert_close(first, two_calls, atol=1e-6, rtol=1e-5)
        op.bwd.weight_hh_l0.mul_(-2.0)                     # an in-place update (an optimiser step, a load)
        with torch.enable_grad():
            want = op(x, mask)
        assert (want - first).abs().max() > 1e-3
        torch.testing.assert_close(op(x, mask), want, atol=1e-6, rtol=1e-5)
        op.load_state_dict({k: torch.randn_like(v) for k, v in op.state_dict().items()})
        with torch.enable_grad():
            want = op(x, mask)
        torch.testing.assert_close(op(x, mask), want, atol=1e-6, rtol=1e-5)
        op.double()
        with torch.enable_grad():
            want = op(x.double(), mask)
        torch.testing.assert_close(op(x.double(), mask), want)
        assert op._fused[1].weight_ih_l0.dtype == torch.float64          # rebuilt in the new dtype
        big_x, big_mask = x.double().repeat(4, 1, 1), mask.repeat(4, 1)   # 12 > FUSE_MAX_BATCH: two calls
        assert big_x.size(0) > op.FUSE_MAX_BATCH
        torch.testing.assert_close(op(big_x, big_mask)[:3], want)


def test_self_attention_equals_per_head_loop_in_float64():
    """attn4 against a brute-force reference: each head, each query, a softmax over the real keys only."""
    torch.manual_seed(0)
    op = build_op("attn4", D).double().eval()
    x, mask = _inputs()
    x = x.double()
    with torch.no_grad():
        got = op(x, mask)
        q, k, v = op.qkv(x).chunk(3, dim=-1)
        ref = torch.zeros_like(x)
        h, d = 4, D // 4
        for b in range(x.size(0)):
            keys = [j for j in range(x.size(1)) if mask[b, j]]
            for i in keys:
                heads = []
                for hh in range(h):
                    sl = slice(hh * d, (hh + 1) * d)
                    s = torch.stack([q[b, i, sl] @ k[b, j, sl] for j in keys]) / math.sqrt(d)
                    w = torch.exp(s - s.max())
                    w = w / w.sum()
                    heads.append(sum(wj * v[b, j, sl] for wj, j in zip(w, keys)))
                ref[b, i] = op.norm(op.proj(torch.cat(heads)))
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_traced_lstm_keeps_two_calls_for_every_batch_size():
    """A graph traced on a small batch must not bake in the small-batch fused path (its weights would
    become constants and large batches would run it too)."""
    torch.manual_seed(0)
    op = build_op("lstm", D).eval()
    x, mask = _inputs()
    with torch.no_grad():
        traced = torch.jit.trace(op, (x, mask), check_trace=False)
    assert op._fused is None
    assert sum(1 for n in traced.inlined_graph.nodes() if n.kind() == "aten::lstm") == 2
    big_x, big_mask = x.repeat(4, 1, 1), mask.repeat(4, 1)
    with torch.no_grad():
        torch.testing.assert_close(traced(big_x, big_mask), op(big_x, big_mask), atol=1e-6, rtol=1e-5)
