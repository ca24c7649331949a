"""VGG feature extractors, truncated at the deepest layer any loss needs.

Input is an RGB tensor in **0..255 units** (the render loop's optimisation space, as in
neural-style, so learning rates and TV weights mean what they meant there); each model
converts to its own convention here (Keras VGG-16: BGR minus the ImageNet mean;
torchvision VGG-19: 0..1, mean/std normalised).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn

from impasto.engine.weights import POOL, ModelSpec, load_weights, model_spec
from impasto.errors import ParamError

POOLING = ("max", "avg")
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware: a CUDA GPU that supports
    it, or a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe() for probe in probes if probe is not None)


def layer_names(model: str) -> list[str]:
    """All addressable layers of ``model`` in order: conv1_1, relu1_1, …, pool5."""
    names, block, index = [], 1, 1
    for item in model_spec(model).layout:
        if item == POOL:
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


def check_layers(model: str, layers: Iterable[str]) -> None:
    known = layer_names(model)
    for layer in layers:
        if layer not in known:
            raise ParamError(f"unknown layer {layer!r} for {model}; "
                             f"layers are {known[0]} … {known[-1]} (conv/relu/pool)")


class VGGFeatures(nn.Module):
    """Runs VGG up to the deepest requested layer and returns the requested activations."""

    def __init__(self, spec: ModelSpec, state: dict[str, torch.Tensor], layers: Iterable[str],
                 pooling: str = "max", precision: str = "float32"):
        super().__init__()
        if pooling not in POOLING:
            raise ParamError(f"pooling must be one of {POOLING}, got {pooling!r}")
        if precision not in PRECISIONS:
            raise ParamError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        # mixed precision: the convolutions autocast to this dtype; what leaves is float32
        self.compute_dtype = PRECISIONS[precision]
        self.wanted = list(dict.fromkeys(layers))
        check_layers(spec.name, self.wanted)
        order = layer_names(spec.name)
        last = max(order.index(layer) for layer in self.wanted)
        self.names = order[: last + 1]
        self.ops = nn.ModuleList(self._make_op(name, state, pooling, in_place=self._conv_of(name) not in
                                               self.wanted) for name in self.names)
        self.bgr = spec.bgr
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * (255.0 / spec.scale))
        self.register_buffer("inv_std", 1.0 / (torch.tensor(spec.std).view(1, 3, 1, 1) * (255.0 / spec.scale)))
        self.requires_grad_(False)
        self.eval()
        # NHWC: oneDNN and cuDNN run VGG's 3×3 convs faster in this layout (bench/engine.py).
        self.to(memory_format=torch.channels_last)

    @staticmethod
    def _conv_of(name: str) -> str:
        return name.replace("relu", "conv")

    @staticmethod
    def _make_op(name: str, state: dict[str, torch.Tensor], pooling: str, in_place: bool) -> nn.Module:
        if name.startswith("conv"):
            weight = state[f"{name}.weight"]
            conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(state[f"{name}.bias"])
            return conv
        if name.startswith("relu"):
            # In place unless the conv output itself is asked for: conv backward needs
            # only its input, so this halves the activations kept for backward.
            return nn.ReLU(inplace=in_place)
        return nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)

    @contextlib.contextmanager
    def in_float32(self):
        """Within: the convolutions in float32 whatever the extractor's precision (the weights
        are float32 either way; only the autocast is lifted)."""
        saved, self.compute_dtype = self.compute_dtype, None
        try:
            yield self
        finally:
            self.compute_dtype = saved

    def to_model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..255 RGB → the model's own convention."""
        if self.bgr:
            pixels = pixels.flip(1)
        return (pixels - self.mean) * self.inv_std

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_raw(self.to_model_input(pixels))

    def forward_raw(self, model_input: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like ``forward`` but on input already in the model's convention (for checks)."""
        x, out = model_input.contiguous(memory_format=torch.channels_last), {}
        mixed = self.compute_dtype is not None
        with torch.autocast(x.device.type, dtype=self.compute_dtype) if mixed else contextlib.nullcontext():
            for name, op in zip(self.names, self.ops):
                x = op(x)
                if name in self.wanted:
                    # Grams sum over every position: in half precision they would lose
                    # digits (float16 could overflow), so the losses see float32
                    out[name] = x.float() if mixed else x
        return out


def build_extractor(model: str, layers: Iterable[str], *, pooling: str = "max",
                    weights=None, allow_download: bool = False,
                    device: torch.device | str = "cpu", precision: str = "float32") -> VGGFeatures:
    """A truncated VGG extractor for ``layers``, on ``device``, ready for inference."""
    layers = list(layers)
    check_layers(model, layers)  # before loading weights: a typo should fail fast
    spec = model_spec(model)
    state = load_weights(model, weights, allow_download=allow_download)
    return VGGFeatures(spec, state, layers, pooling, precision).to(device)
