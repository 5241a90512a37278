"""The bilevel architecture step (DARTS, Liu et al. 2019).

First order (``order=1``): alpha <- alpha - lr_a * grad_alpha L_val(w, alpha).

Second order (``order=2``): the gradient of L_val(w', alpha) at the unrolled weights
w' = w - xi * grad_w L_train(w, alpha):

    grad_alpha L_val(w', alpha) - xi * grad^2_{alpha,w} L_train(w, alpha) . grad_w' L_val(w', alpha)

with the Hessian-vector product by a central finite difference: for v = grad_w' L_val(w', alpha) and
eps = 0.01 / ||v||, (grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps). (The divisor
is 2*eps; some public implementations get it wrong.) Both evaluations of the difference replay the
dropout masks of the first L_train evaluation, on every device (the CPU generator and each CUDA device's),
otherwise the difference would measure dropout noise, not curvature.
"""
from __future__ import annotations

from typing import Callable

import torch


def rng_snapshot() -> dict:
    """The CPU generator's state and, where CUDA is initialised, every CUDA device's: what draws dropout masks."""
    snap = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        snap["cuda"] = torch.cuda.get_rng_state_all()
    return snap


def rng_restore(snap: dict) -> None:
    torch.set_rng_state(snap["cpu"])
    if "cuda" in snap:
        torch.cuda.set_rng_state_all(snap["cuda"])


def _grads(loss: torch.Tensor, params: list, **kw) -> list[torch.Tensor]:
    gs = torch.autograd.grad(loss, params, allow_unused=True, **kw)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


class Architect:
    def __init__(self, loss_fn: Callable[[dict], torch.Tensor], weights: list, alphas: list,
                 optimizer: torch.optim.Optimizer, *, order: int = 1, xi: float = 1e-3,
                 weight_decay: float = 0.0, fd_eps: float = 0.01):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.loss_fn, self.weights, self.alphas = loss_fn, list(weights), list(alphas)
        self.optimizer, self.order, self.xi = optimizer, order, xi
        self.weight_decay, self.fd_eps = weight_decay, fd_eps

    def step(self, train_batch: dict, val_batch: dict) -> float:
        """One architecture update; returns L_val (at w for order 1, at w' for order 2)."""
        if self.order == 1:
            loss = self.loss_fn(val_batch)
            grads = _grads(loss, self.alphas)
        else:
            grads, loss = self.unrolled_gradient(train_batch, val_batch)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.alphas, grads):
            p.grad = g.detach()
        self.optimizer.step()
        return float(loss.detach())

    def unrolled_gradient(self, train_batch: dict, val_batch: dict):
        rng = rng_snapshot()
        g_train = _grads(self.loss_fn(train_batch), self.weights)
        backup = [w.detach().clone() for w in self.weights]
        with torch.no_grad():                                  # virtual step to w'
            for w, g in zip(self.weights, g_train):
                w.sub_(self.xi * (g + self.weight_decay * w))
        val_loss = self.loss_fn(val_batch)
        gs = _grads(val_loss, self.alphas + self.weights)
        d_alpha, v = gs[: len(self.alphas)], gs[len(self.alphas):]
        with torch.no_grad():
            for w, b in zip(self.weights, backup):
                w.copy_(b)
        hvp = self.hessian_vector_product(v, train_batch, rng, backup)
        return [da - self.xi * h for da, h in zip(d_alpha, hvp)], val_loss

    def hessian_vector_product(self, v: list, batch: dict, rng: dict, backup: list) -> list:
        norm = torch.sqrt(sum((x.double() ** 2).sum() for x in v))
        eps = self.fd_eps / float(norm) if float(norm) > 0 else self.fd_eps
        with torch.no_grad():
            for w, x in zip(self.weights, v):
                w.add_(eps * x)
        rng_restore(rng)
        g_plus = _grads(self.loss_fn(batch), self.alphas)
        with torch.no_grad():
            for w, x in zip(self.weights, v):
                w.sub_(2 * eps * x)
        rng_restore(rng)
        g_minus = _grads(self.loss_fn(batch), self.alphas)
        with torch.no_grad():
            for w, b in zip(self.weights, backup):
                w.copy_(b)
        return [(p - m) / (2 * eps) for p, m in zip(g_plus, g_minus)]
