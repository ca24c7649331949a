"""Errors impasto raises on purpose.

Every failure a user can cause (a bad file, a bad option, missing weights) is an
``ImpastoError``; the CLI turns one into a single line on stderr and exit code 2, the
web service into a 4xx response. Anything else is a bug.

    ImpastoError
    ├── ImageError        unreadable, truncated, too small or too large image
    ├── ParamError        an option out of range or inconsistent with another
    ├── WeightsError      perceptual-net weights missing, of the wrong shape, not downloadable
    ├── OutputError       the result cannot be written where asked
    ├── RenderDiverged    the loss became NaN or infinite (e.g. float16 overflow)
    └── RenderCancelled   the caller asked the render loop to stop
"""

from __future__ import annotations


class ImpastoError(Exception):
    """Base of every error caused by input rather than by a bug."""


class ImageError(ImpastoError):
    """An image that cannot be used: missing, not an image, truncated, too small/large."""


class ParamError(ImpastoError, ValueError):
    """A render option that is out of range or inconsistent with the others."""


class WeightsError(ImpastoError):
    """Perceptual-network weights that are missing, malformed or not obtainable."""


class OutputError(ImpastoError):
    """An output path that cannot be written."""


class RenderDiverged(ImpastoError):
    """The loss stopped being a finite number: the options (precision, step size) do not work."""


class RenderCancelled(ImpastoError):
    """Raised from a progress callback to stop a render early."""
