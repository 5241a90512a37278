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

Under torchrun each rank holds a slice of the step's batches (:func:`naskd.utils.dist.split_rows`); the
gradients taken with ``autograd.grad`` (which DistributedDataParallel does not reduce) are averaged over the
ranks, weighted by their rows (:func:`naskd.utils.dist.mean_over_ranks`), wherever one process would use the
whole batch: the alpha gradient (order 1); grad_w L_train before the virtual step, (grad_alpha, grad_w')
L_val(w') and the finite-difference product (order 2). A rank whose slice is empty (``None``) contributes
zeros and still joins every reduction.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..utils import dist


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
                 weight_decay: float = 0.0, fd_eps: float = 0.01, rows_of: Callable[[dict], int] | None = None):
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.loss_fn, self.weights, self.alphas = loss_fn, list(weights), list(alphas)
        self.optimizer, self.order, self.xi = optimizer, order, xi
        self.weight_decay, self.fd_eps = weight_decay, fd_eps
        self.rows_of = rows_of or (lambda b: int(b["input_ids"].shape[0]))

    def _mean_grads(self, batch: dict | None, params: list) -> tuple[list, torch.Tensor]:
        """(grad of the loss on ``batch`` over ``params``, averaged over ranks by rows; the local loss)."""
        if batch is None:
            return dist.mean_over_ranks([torch.zeros_like(p) for p in params], 0), torch.zeros(())
        loss = self.loss_fn(batch)
        return dist.mean_over_ranks(_grads(loss, params), self.rows_of(batch)), loss

    def step(self, train_batch: dict | None, val_batch: dict | None) -> float:
        """One architecture update; returns L_val (at w for order 1, at w' for order 2; this rank's)."""
        if self.order == 1:
            grads, loss = self._mean_grads(val_batch, self.alphas)
        else:
            grads, loss = self.unrolled_gradient(train_batch, val_batch)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.alphas, grads):
            p.grad = g.detach()
        self.optimizer.step()
        return float(loss.detach())

    def unrolled_gradient(self, train_batch: dict | None, val_batch: dict | None):
        rng = rng_snapshot()
        g_train, _ = self._mean_grads(train_batch, self.weights)
        backup = [w.detach().clone() for w in self.weights]
        with torch.no_grad():                                  # virtual step to w'
            for w, g in zip(self.weights, g_train):
                w.sub_(self.xi * (g + self.weight_decay * w))
        gs, val_loss = self._mean_grads(val_batch, self.alphas + self.weights)
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
        g_plus, _ = self._mean_grads(batch, self.alphas)
        with torch.no_grad():
            for w, x in zip(self.weights, v):
                w.sub_(2 * eps * x)
        rng_restore(rng)
        g_minus, _ = self._mean_grads(batch, self.alphas)
        with torch.no_grad():
            for w, b in zip(self.weights, backup):
                w.copy_(b)
        return [(p - m) / (2 * eps) for p, m in zip(g_plus, g_minus)]
