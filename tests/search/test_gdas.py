"""GDAS' pieces checked against independent references: the straight-through gate's value and gradient
(central differences in float64 times the softmax Jacobian), the log-probability of a genotype (brute
force over its used dimensions), and the dimensions a macro genotype uses."""
import math

import numpy as np
import pytest
import torch

from naskd.search.strategy.gdas import ArchParameters, used_dimensions
from naskd.space.macro import MacroGenotype, MacroSpace

SPACE = MacroSpace(name="tiny", embed=[8, 16], depth=[1, 2], ops=["lstm", "conv3", "attn2"], widths=[8, 16],
                   pooling=["ends", "max", "mean"], classifier=[8, 16])


def tiny_net():
    from naskd.supernet.macro import MacroSupernet

    torch.manual_seed(0)
    return MacroSupernet(SPACE, vocab_size=50, kind="single", num_labels=2, pair=False, dropout=0.0).double().eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 50, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


@pytest.mark.parametrize("dim", ["embed", "op_1", "width_0", "depth", "pooling", "classifier"])
def test_straight_through_gate_value_and_gradient(dim):
    net, b = tiny_net(), batch()
    arch = ArchParameters(SPACE.dimensions()).double()
    with torch.no_grad():
        for a in arch.alpha.values():
            a.copy_(torch.linspace(-0.5, 0.7, a.numel(), dtype=torch.float64))
    tau = 2.5
    choices, gates = arch.sample(np.random.default_rng(7), tau)
    choices.update(depth=2)                     # both layers in the path, so op_1 is used
    g = SPACE.from_choices(choices)
    plain = net(path=g, **b)["logits"]
    gated = net(path=g, gates={dim: gates[dim]}, **b)["logits"]
    torch.testing.assert_close(gated, plain, rtol=0, atol=1e-12)        # the gate's value is 1
    w = torch.linspace(-1, 1, plain.numel(), dtype=torch.float64).view_as(plain)
    (grad,) = torch.autograd.grad((gated * w).sum(), arch.alpha[dim])

    def f(c):
        with torch.no_grad():
            return float((net(path=g, gates={dim: torch.tensor(c, dtype=torch.float64)}, **b)["logits"] * w).sum())

    h = 1e-5
    dloss_dgate = (f(1 + h) - f(1 - h)) / (2 * h)
    noise = np.random.default_rng(7)            # the same draws, in the same order of dimensions
    for name, a in arch.alpha.items():
        z = noise.gumbel(size=a.numel())
        if name == dim:
            break
    logits = arch.alpha[dim].detach().numpy() + z
    j = int(np.argmax(logits))
    s = np.exp(logits / tau - (logits / tau).max())
    s /= s.sum()
    want = dloss_dgate * s[j] * ((np.arange(len(s)) == j) - s) / tau     # d s_j / d alpha_k = s_j (delta_jk - s_k) / tau
    np.testing.assert_allclose(grad.numpy(), want, rtol=1e-6, atol=1e-9)


def test_log_prob_is_the_sum_over_used_dimensions():
    arch = ArchParameters(SPACE.dimensions())
    with torch.no_grad():
        for i, a in enumerate(arch.alpha.values()):
            a.copy_(torch.arange(a.numel(), dtype=torch.float32) * (0.3 + 0.1 * i))
    g = MacroGenotype("tiny", 16, (("conv3", 8),), "max", 8)
    used = used_dimensions(SPACE, g)
    assert sorted(used) == sorted(["embed", "depth", "op_0", "width_0", "pooling", "classifier"])
    choices = SPACE.choices_of(g)
    want = 0.0
    for name in used:
        a = arch.alpha[name].detach().double()
        want += float(a[arch.options[name].index(choices[name])] - torch.logsumexp(a, 0))
    assert arch.log_prob(choices, used) == pytest.approx(want, rel=1e-9)
    # a deeper genotype uses its second layer's dimensions too
    g2 = MacroGenotype("tiny", 16, (("conv3", 8), ("lstm", 16)), "max", 8)
    assert {"op_1", "width_1"} <= set(used_dimensions(SPACE, g2))
    # uniform alpha: every used dimension contributes -log(options)
    flat = ArchParameters(SPACE.dimensions())
    assert flat.log_prob(choices, used) == pytest.approx(-sum(math.log(len(SPACE.dimensions()[n])) for n in used))
    assert flat.entropy() == pytest.approx(np.mean([math.log(len(v)) for v in SPACE.dimensions().values()]))


def test_draws_follow_the_distribution():
    arch = ArchParameters({"x": (1, 2, 3)})
    with torch.no_grad():
        arch.alpha["x"].copy_(torch.tensor([0.0, 1.0, 2.0]))
    rng = np.random.default_rng(0)
    counts = np.zeros(3)
    for _ in range(6000):
        counts[arch.draw(rng)["x"] - 1] += 1
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    np.testing.assert_allclose(counts / 6000, p, atol=0.02)
    # Gumbel-max sampling picks option j with probability softmax(alpha)_j as well
    counts[:] = 0
    for _ in range(6000):
        counts[arch.sample(rng, 1.0, gates=False)[0]["x"] - 1] += 1
    np.testing.assert_allclose(counts / 6000, p, atol=0.02)
    assert arch.argmax() == {"x": 3}
