"""impasto: neural style transfer portraits, from instant preview to print.

Nothing heavy happens at import: no model, network or device is touched until a
function that needs it is called.
"""

from impasto import _version
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
__version__ = _version.version()   # pyproject.toml's, from the package metadata
