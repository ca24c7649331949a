"""The style targets a render aims at: the style images' Grams, blended or one per region.

One helper for the whole-image objective (``scale.build_objective``) and its tiled twin
(``tiling.build_tiled_objective``), which take the Grams differently but must aim at the
same targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from impasto.engine.params import RenderParams


def style_targets(per_style: Sequence[dict[str, torch.Tensor]], params: RenderParams, *,
                  regions: bool) -> dict[str, torch.Tensor]:
    """Per style layer: the Grams of ``per_style`` (one dict per style image) blended by
    ``params.blend_weights`` into one C×C target, or with ``regions`` stacked R×C×C —
    style k is region k's target (masks.Guide.regions)."""
    if regions:
        return {name: torch.stack([grams[name] for grams in per_style]) for name in params.style_layers}
    blend = params.blend_weights(len(per_style))
    return {name: sum(w * grams[name] for w, grams in zip(blend, per_style)) for name in params.style_layers}


def gram_share(params: RenderParams) -> float:
    """The Gram term's share of ``style_weight``: all of it for ``gram``, ``style_gram`` else."""
    return 1.0 if params.style_loss == "gram" else params.style_gram
