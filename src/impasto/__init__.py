"""impasto: neural style transfer portraits, from instant preview to print.

Nothing heavy happens at import: no model, network or device is touched until a
function that needs it is called.
"""

from impasto.errors import (
    ImageError,
    ImpastoError,
    OutputError,
    ParamError,
    RenderCancelled,
    RenderDiverged,
    WeightsError,
)

__all__ = [
    "ImageError",
    "ImpastoError",
    "OutputError",
    "ParamError",
    "RenderCancelled",
    "RenderDiverged",
    "WeightsError",
    "__version__",
]
__version__ = "0.1.0"
