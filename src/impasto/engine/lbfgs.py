"""A memory-lean L-BFGS for print-size images: torch's steps, fewer full-size buffers.

``minimize`` takes the same steps as ``torch.optim.LBFGS(lr, max_iter=n, max_eval=n,
tolerance_grad=-1, tolerance_change=-1, history_size=m)`` without a line search — the
way ``render`` runs it, as neural-style does — but for one image-sized tensor and a
function that returns its gradient directly (``TiledObjective.loss_and_grad``), so:

- no autograd ``.grad``, no flattened copy of it, no ``prev_flat_grad`` clone beside the
  new gradient, no separate ``d``: while the function runs only the image, the previous
  gradient and the stored history are alive (torch's optimiser holds about five more
  image-sized vectors there at print size);
- the history pairs (s, y) may be stored in a smaller dtype. ``float16`` stores each
  vector scaled by its own largest magnitude (no overflow; 11 significant bits), half of
  float32's memory, so a 4 GB budget keeps twice the history. Dot products and updates
  upcast one chunk at a time, so no full-size float32 copy of a stored vector is made.
  With ``history_dtype`` equal to the image's dtype the arithmetic is torch's, operation
  for operation (tests compare the two in float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LossAndGrad = Callable[[torch.Tensor], tuple[float, dict[str, float], torch.Tensor]]
OnEval = Callable[[int, dict[str, float]], None]
CHUNK = 1 << 20          # elements per chunk when upcasting stored vectors
FP16_RANGE = 1024.0      # a stored vector's largest magnitude maps here (fp16 max: 65504)
CURVATURE_EPS = 1e-10    # as torch: pairs with y·s at or below this are not stored


@dataclass
class _Stored:
    """One history vector, as given (same dtype as the image) or scaled in a smaller dtype."""

    data: torch.Tensor
    scale: float = 1.0    # the vector is data · scale

    @classmethod
    def of(cls, vector: torch.Tensor, dtype: torch.dtype) -> _Stored:
        if dtype == vector.dtype:
            return cls(vector)
        flat = vector.reshape(-1)
        largest = max(float(flat[start:start + CHUNK].abs().max()) for start in range(0, flat.numel(), CHUNK))
        scale = largest / FP16_RANGE if largest > 0 else 1.0
        data = torch.empty(vector.shape, dtype=dtype, device=vector.device)
        out = data.view(-1)
        for start in range(0, flat.numel(), CHUNK):
            out[start:start + CHUNK] = flat[start:start + CHUNK] / scale
        return cls(data, scale)

    def dot(self, other: torch.Tensor) -> torch.Tensor | float:
        if self.data.dtype == other.dtype:
            return self.data.dot(other) if self.data.dim() == 1 else self.data.reshape(-1).dot(other.reshape(-1))
        flat, mine = other.reshape(-1), self.data.reshape(-1)
        total = 0.0
        for start in range(0, flat.numel(), CHUNK):
            total += float(mine[start:start + CHUNK].to(other.dtype).dot(flat[start:start + CHUNK]))
        return total * self.scale

    def add_to(self, target: torch.Tensor, alpha) -> None:
        """target += alpha · self, in place."""
        if self.data.dtype == target.dtype:
            target.add_(self.data, alpha=alpha)
            return
        flat, mine, alpha = target.reshape(-1), self.data.reshape(-1), float(alpha) * self.scale
        for start in range(0, flat.numel(), CHUNK):
            flat[start:start + CHUNK].add_(mine[start:start + CHUNK].to(target.dtype), alpha=alpha)


def history_bytes(numel: int, dtype: torch.dtype) -> int:
    """Bytes one stored (s, y) pair of an ``numel``-value image takes."""
    return 2 * numel * torch.empty((), dtype=dtype).element_size()


def minimize(fn: LossAndGrad, x: torch.Tensor, *, iterations: int, history_size: int,
             history_dtype: torch.dtype | None = None, lr: float = 1.0,
             on_eval: OnEval | None = None) -> torch.Tensor:
    """Run ``iterations`` evaluations of L-BFGS on ``x`` (updated in place, and returned).

    ``fn(x)`` returns (loss, parts, gradient); ``on_eval(count, parts)`` follows every
    evaluation. As torch without a line search: the first step has length
    ``min(1, 1/‖g‖₁)·lr``, later ones ``lr``; the last evaluation's gradient is not used.
    """
    dtype = history_dtype or x.dtype
    x = x.detach()
    dirs: list[_Stored] = []    # y: gradient changes
    steps: list[_Stored] = []   # s: steps taken
    ro: list = []
    h_diag = 1
    _, parts, grad = fn(x)
    evals = 1
    if on_eval is not None:
        on_eval(evals, parts)
    prev_grad = None
    pending: _Stored | None = None   # the last step, s, until its y is known
    for n_iter in range(1, iterations + 1):
        if n_iter == 1:
            direction = grad.neg()
        else:
            y = prev_grad.neg_().add_(grad)   # g − g_prev, in the old gradient's memory
            prev_grad = None
            y_stored = _Stored.of(y, dtype)
            del y
            s_stored, pending = pending, None
            ys = s_stored.dot(y_stored.data) if dtype == x.dtype else _dot(y_stored, s_stored)
            if ys > CURVATURE_EPS:
                if len(dirs) == history_size:
                    dirs.pop(0), steps.pop(0), ro.pop(0)
                dirs.append(y_stored)
                steps.append(s_stored)
                ro.append(1.0 / ys)
                h_diag = ys / (y_stored.dot(y_stored.data) if dtype == x.dtype else _dot(y_stored, y_stored))
            del y_stored, s_stored
            direction = _two_loop(grad, dirs, steps, ro, h_diag)
        prev_grad = grad
        # torch: 1/Σ|g|; the same-dtype path keeps its temporary, for identical rounding
        t = min(1.0, 1.0 / (grad.abs().sum() if dtype == x.dtype else torch.linalg.vector_norm(grad, 1))) * lr \
            if n_iter == 1 else lr
        gtd = grad.dot(direction) if grad.dim() == 1 else grad.reshape(-1).dot(direction.reshape(-1))
        if gtd > 1:   # torch: gtd > −tolerance_change, with tolerance_change = −1
            break
        x.add_(direction, alpha=t)
        more = n_iter != iterations and evals + 1 < iterations
        pending = _Stored.of(direction.mul_(t), dtype) if more else None
        del direction
        if n_iter == iterations:
            break
        grad = None
        _, parts, grad = fn(x)
        evals += 1
        if on_eval is not None:
            on_eval(evals, parts)
        if evals >= iterations:
            break
    return x


def _dot(a: _Stored, b: _Stored) -> float:
    """a · b for two stored vectors, upcast chunk by chunk to float32."""
    first, second = a.data.reshape(-1), b.data.reshape(-1)
    total = 0.0
    for start in range(0, first.numel(), CHUNK):
        total += float(first[start:start + CHUNK].float().dot(second[start:start + CHUNK].float()))
    return total * a.scale * b.scale


def _two_loop(grad: torch.Tensor, dirs: list[_Stored], steps: list[_Stored], ro: list, h_diag
              ) -> torch.Tensor:
    """−H·g by the two-loop recursion, in one new buffer (torch's order of operations)."""
    al = [None] * len(dirs)
    q = grad.neg()
    for i in range(len(dirs) - 1, -1, -1):
        al[i] = steps[i].dot(q) * ro[i]
        dirs[i].add_to(q, -al[i])
    r = q.mul_(h_diag)
    for i in range(len(dirs)):
        be_i = dirs[i].dot(r) * ro[i]
        steps[i].add_to(r, al[i] - be_i)
    return r
