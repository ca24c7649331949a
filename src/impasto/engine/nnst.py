"""Neural Neighbor Style Transfer's loss (Kolkin et al. 2022): not built yet."""

from __future__ import annotations

from impasto.errors import ParamError


def _missing(*_args, **_kwargs):
    raise ParamError("--style-loss nnst is not implemented yet: use gram or sw")


build_nnst_term = build_tiled_nnst_term = _missing


def nnst_bytes(*_args, **_kwargs):
    return 0, 0, 0
