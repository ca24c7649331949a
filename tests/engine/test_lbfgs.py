"""engine/lbfgs.py: torch's L-BFGS steps with fewer buffers; a float16 history stays close."""

from __future__ import annotations

import pytest
import torch

from impasto.engine.lbfgs import history_bytes, minimize


def _problem(dtype):
    """A smooth non-convex function of a 1×3×H×W "image" (a stand-in for the style loss)."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(1, 3, 20, 24, generator=generator, dtype=dtype)
    mix = torch.randn(3, 3, generator=generator, dtype=dtype)

    def loss_of(x):
        mixed = torch.einsum("ij,njhw->nihw", mix, x)
        return ((mixed.tanh() - target.tanh()) ** 2).sum() + 0.1 * (x[..., 1:] - x[..., :-1]).pow(2).sum()

    def fn(x):
        leaf = x.detach().clone().requires_grad_(True)
        loss = loss_of(leaf)
        loss.backward()
        value = float(loss.detach())
        return value, {"total": value}, leaf.grad

    start = torch.randn(1, 3, 20, 24, generator=generator, dtype=dtype) * 2
    return fn, loss_of, start


def _torch_lbfgs(fn, start, iterations, history):
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=iterations, max_eval=iterations,
                                  tolerance_grad=-1, tolerance_change=-1, history_size=history)
    evals = []

    def closure():
        x.grad = None
        loss, _, grad = fn(x)
        x.grad = grad
        evals.append(loss)
        return torch.tensor(loss)

    optimizer.step(closure)
    return x.detach(), evals


@pytest.mark.parametrize("iterations, history", [(1, 5), (2, 5), (3, 5), (25, 4), (40, 100)])
def test_same_steps_as_torch_lbfgs_in_float64(iterations, history):
    fn, _, start = _problem(torch.float64)
    expected, torch_evals = _torch_lbfgs(fn, start, iterations, history)
    evals = []
    got = minimize(fn, start.clone(), iterations=iterations, history_size=history,
                   on_eval=lambda count, parts: evals.append(parts["total"]))
    assert evals == torch_evals  # the same losses, in the same number of evaluations
    assert torch.equal(got, expected)


def test_a_float16_history_follows_the_full_precision_run():
    fn, loss_of, start = _problem(torch.float32)
    full = minimize(fn, start.clone(), iterations=30, history_size=10)
    half = minimize(fn, start.clone(), iterations=30, history_size=10, history_dtype=torch.float16)
    first, full_loss, half_loss = float(loss_of(start)), float(loss_of(full)), float(loss_of(half))
    assert half_loss < 0.2 * first
    assert abs(half_loss - full_loss) < 0.05 * (first - full_loss)


def test_history_bytes():
    assert history_bytes(1000, torch.float16) == 4000
    assert history_bytes(1000, torch.float32) == 8000
