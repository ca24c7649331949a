"""``--memory-budget``: how a render fits in a given amount of memory.

A scale needs (a) the VGG activations for forward and backward, (b) full-image buffers:
pixels, gradient, content targets, and (c) the L-BFGS history, two image-sized vectors
per remembered step. (a) is bounded by tiling (``tiling.py``); (c) grows with the print,
so above some size the history is shortened to fit — L-BFGS works with a few steps of
history, only less well. These are estimates from layer shapes, not measurements.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

from impasto.engine.params import RenderParams
from impasto.engine.tiling import estimate_tile_bytes, model_geometry, tile_size_for_budget
from impasto.errors import ParamError

log = logging.getLogger(__name__)
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
WEIGHTS_BYTES = 80 * 2**20      # VGG conv weights in float32, with slack
MIN_HISTORY = 5                 # below this L-BFGS is hardly better than gradient descent
HISTORY_SHARE = 0.5             # at most this part of the budget goes to the L-BFGS history


def parse_bytes(text: str) -> int:
    """``"4GB"``, ``"512 MiB"``, ``"2g"`` → bytes (binary units: a GB here is 2³⁰ bytes)."""
    match = _SIZE.match(text)
    if not match or match[2].lower() not in _UNITS:
        raise ParamError(f"memory budget {text!r}: use a number with B, KB, MB, GB or TB, e.g. 4GB")
    value = float(match[1]) * _UNITS[match[2].lower()]
    if value <= 0:
        raise ParamError(f"memory budget {text!r} must be positive")
    return int(value)


@dataclass(frozen=True)
class MemoryPlan:
    tile_size: int          # 0: the whole image at once
    lbfgs_history: int


def plan_memory(params: RenderParams, height: int, width: int) -> MemoryPlan:
    """Tile size and L-BFGS history for an ``height``×``width`` scale within the budget."""
    if not params.memory_budget:
        return MemoryPlan(params.tile_size, params.lbfgs_num_correction)
    budget = parse_bytes(params.memory_budget)
    layers = [*params.content_layers, *params.style_layers]
    pixels = 3 * height * width * 4
    content_targets = sum(_layer_bytes(params, name, height, width) for name in params.content_layers)
    fixed = WEIGHTS_BYTES + 4 * pixels + content_targets    # pixels, grad, optimiser temporaries
    history = params.lbfgs_num_correction if params.optimizer == "lbfgs" else 0
    affordable = int((budget * HISTORY_SHARE) // (2 * pixels)) if history else 0
    if history and affordable < history:
        history = affordable
        if history < MIN_HISTORY:
            raise ParamError(f"a {width}×{height} render needs more than the {params.memory_budget} "
                             f"memory budget (L-BFGS alone: {_mib(2 * MIN_HISTORY * pixels)}); "
                             "raise --memory-budget or use --optimizer adam")
        log.info("L-BFGS history shortened to %d steps to fit %s", history, params.memory_budget)
    left = budget - fixed - 2 * history * pixels - (2 * pixels if params.optimizer == "adam" else 0)
    whole = estimate_tile_bytes(math.ceil(math.sqrt(height * width)), layers, model=params.model)
    if whole <= left:
        return MemoryPlan(params.tile_size, max(history, 1))
    if left <= 0:
        raise ParamError(f"a {width}×{height} render needs more than the {params.memory_budget} "
                         f"memory budget for its buffers alone; raise --memory-budget")
    return MemoryPlan(tile_size_for_budget(left, layers, model=params.model), max(history, 1))


def _layer_bytes(params: RenderParams, layer: str, height: int, width: int) -> int:
    geometry = model_geometry(params.model, [layer])
    info = next(i for i in geometry.layers if i.name == layer)
    return info.channels * (height // info.stride) * (width // info.stride) * 4


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"
