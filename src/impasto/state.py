"""Resumable render state: the options and the image of every finished scale, in one file.

A preview saved with its state can be continued to a print (``impasto render --resume``):
the print starts from the preview's image instead of from scratch, with the same options
and seed, so it is the preview refined. Format: safetensors, tensors ``scale_<px>``
(1×3×H×W float32, 0..1) and metadata ``format`` and ``params`` (RenderParams as JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from impasto.engine.params import RenderParams
from impasto.errors import OutputError, StateError
from impasto.files import atomic_path

FORMAT = "impasto-state-1"


@dataclass
class RenderState:
    params: RenderParams
    scales: dict[int, torch.Tensor] = field(default_factory=dict)   # longest side → image

    def latest(self) -> torch.Tensor:
        return self.scales[max(self.scales)]

    def save(self, path: Path | str) -> Path:
        """Write atomically, so a crash mid-render leaves the previous state readable."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {f"scale_{size}": image.contiguous() for size, image in self.scales.items()}
        metadata = {"format": FORMAT, "params": self.params.model_dump_json()}
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, tmp, metadata=metadata)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the render state ({exc})") from None
        return path


def load_state(path: Path | str) -> RenderState:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StateError(f"render state not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise StateError(f"{path} is not an impasto render state")
            scales = {int(key.removeprefix("scale_")): handle.get_tensor(key)
                      for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
        params = RenderParams.model_validate(json.loads(metadata["params"]))
    except StateError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/json/pydantic each raise their own
        raise StateError(f"{path} is not a readable impasto render state ({exc})") from None
    if not scales:
        raise StateError(f"{path} holds no finished scale")
    return RenderState(params, scales)
