"""The units the engine counts in: pixel values and bytes.

Its own module, importing nothing of the engine, so that every other module may use it:
``params`` checks a ``--memory-budget`` with ``parse_bytes`` and ``memory`` plans in it,
``scale`` and ``tiling`` both scale images by ``PIXEL_SCALE``.
"""

from __future__ import annotations

import re

from impasto.errors import ParamError

PIXEL_SCALE = 255.0   # images are optimised in 0..255 units, as neural-style's are

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"4GB"``, ``"512 MiB"``, ``"2g"`` → bytes (binary units: a GB here is 2³⁰ bytes)."""
    match = _SIZE.match(text)
    if not match or match[2].lower() not in _UNITS:
        raise ParamError(f"memory budget {text!r}: use a number with B, KB, MB, GB or TB, e.g. 4GB")
    value = float(match[1]) * _UNITS[match[2].lower()]
    if value <= 0:
        raise ParamError(f"memory budget {text!r} must be positive")
    return int(value)
