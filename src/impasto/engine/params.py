"""RenderParams: the one record of render options, their types and defaults.

The CLI flags (``impasto render --help``), the web API schema and style presets are all
derived from this model; add an option here and it appears everywhere. Names follow
neural-style's flags (``-content_weight`` → ``content_weight``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from impasto.engine.prints import parse_print_size
from impasto.engine.units import parse_bytes
from impasto.errors import ParamError

DEFAULT_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
DEFAULT_CONTENT_LAYERS = ["relu4_2"]
MAX_IMAGE_SIZE = 32768


class RenderParams(BaseModel):
    """Every option of a render. Defaults give a good first portrait at 512 px."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    image_size: int = Field(512, ge=32, le=MAX_IMAGE_SIZE,
                            description="longest side of the output, in pixels")
    print_size: str | None = Field(
        None, json_schema_extra={"metavar": "WxH(in|cm)"},
        description="print size, e.g. 8x10in or 20x25cm: sets the pixel size from --dpi and "
                    "centre-crops the photo to the print's shape (overrides --image-size)")
    dpi: int = Field(300, ge=50, le=2400, description="print resolution, dots per inch (with --print-size)")
    style_blend_weights: list[float] | None = Field(
        None, description="one weight per style image (comma-separated); default: equal")
    content_weight: float = Field(5.0, ge=0, allow_inf_nan=False,
                                  description="how much the output keeps the photo's structure")
    style_weight: float = Field(100.0, ge=0, allow_inf_nan=False,
                                description="how much the output takes on the style's textures")
    tv_weight: float = Field(1e-3, ge=0, allow_inf_nan=False,
                             description="total-variation smoothing (0 turns it off)")
    num_iterations: int = Field(400, ge=1, le=100_000,
                                description="optimiser iterations, in total over all scales")
    init: Literal["random", "image", "quick"] = Field(
        "image", description="start from noise, from the photo, or from the photo painted by the "
                             "feed-forward network in the style (quick: one style; --init-image overrides)")
    init_image: Path | None = Field(None, description="start from this image instead")
    optimizer: Literal["lbfgs", "adam"] = Field("lbfgs", description="L-BFGS or Adam")
    learning_rate: float = Field(10.0, gt=0, allow_inf_nan=False,
                                 description="Adam's step size, in 0..255 pixel units")
    lbfgs_num_correction: int = Field(100, ge=1, le=1000,
                                      description="L-BFGS history size")
    normalize_gradients: bool = Field(False, description="L1-normalise each loss's gradient")
    print_iter: int = Field(50, ge=0, description="log the losses every N iterations (0: never)")
    save_iter: int = Field(0, ge=0, description="save an intermediate image every N iterations (0: never)")
    content_layers: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTENT_LAYERS),
                                      description="layers for the content loss (comma-separated)")
    style_layers: list[str] = Field(default_factory=lambda: list(DEFAULT_STYLE_LAYERS),
                                    description="layers for the style loss (comma-separated)")
    style_layer_weights: list[float] | None = Field(
        None, description="one weight per style layer (comma-separated); default: equal")
    style_loss: Literal["gram", "sw", "nnst"] = Field(
        "gram", description="style statistics: Gram matrices (Gatys), sliced Wasserstein (sw: the "
                            "features' full distribution along random directions, Heitz et al. 2021) "
                            "or neural neighbours (nnst: each position matched to its nearest style "
                            "feature, Kolkin et al. 2022)")
    sw_projections: int = Field(0, ge=0, le=4096,
                                description="with --style-loss sw: random directions per layer (0: as "
                                            "many as the layer has channels)")
    style_gram: float = Field(0.0, ge=0, allow_inf_nan=False,
                              description="with --style-loss sw or nnst: add the Gram term too, at this "
                                          "share of --style-weight (0: off)")
    style_scale: float = Field(1.0, gt=0, le=8, allow_inf_nan=False,
                               description="style image size relative to the output")
    start_size: int = Field(256, ge=0, le=MAX_IMAGE_SIZE,
                            description="coarse-to-fine: first scale's size (0: one scale only)")
    scale_step: float = Field(2 ** 0.5, gt=1, le=4, allow_inf_nan=False,
                              description="coarse-to-fine: size ratio between scales")
    coarse_content: float = Field(
        3.0, ge=0, le=4, allow_inf_nan=False,
        description="coarse-to-fine: a scale k times smaller than 512 px (or than the render, if "
                    "smaller) keeps the photo k^this times more firmly (content weight × k^this), so "
                    "the large strokes laid at low resolution do not wash out its structure (0: the "
                    "same weight at every scale)")
    scales: list[int] | None = Field(None, description="explicit scale sizes, ending at --image-size")
    scale_iterations: list[int] | None = Field(None, description="iterations per scale (with --scales)")
    keep_preview: float = Field(
        3000.0, ge=0, allow_inf_nan=False,
        description="with --resume: how firmly the larger scales keep the preview's picture at the "
                    "preview's size (the weight of a pixel term; detail finer than a preview pixel "
                    "stays free; 0: off)")
    tile_size: int = Field(0, ge=0, le=MAX_IMAGE_SIZE,
                           description="process scales larger than this in tiles of at most this side, "
                                       "px, with the exact whole-image loss (0: never tile; with "
                                       "--memory-budget, the largest side the planned tiles may have)")
    memory_budget: str | None = Field(
        None, json_schema_extra={"metavar": "BYTES"},
        description="fit each scale in this much memory, e.g. 4GB: picks the tile size "
                    "(and shortens the L-BFGS history if it must)")
    original_colors: bool = Field(False, description="keep the photo's colours (luminance-only transfer)")
    color_match: bool = Field(False, description="recolour the style images with the photo's colour "
                                                 "mean and covariance before transfer")
    portrait: Literal["auto", "off"] = Field(
        "auto", description="portrait mode: find faces, paint them in the style and keep the "
                            "likeness by their features' lines (auto), or paint them like the rest (off)")
    portrait_strength: float = Field(0.5, ge=0, le=1, allow_inf_nan=False,
                                     description="portrait mode: how firmly a face keeps the photo (0: "
                                                 "painted like the rest; up to 0.5 its features' "
                                                 "structure, above that its look too; 1: unpainted)")
    portrait_face_size: int = Field(
        256, ge=0, le=4096,
        description="portrait mode: a face narrower than this many px in the output is painted again "
                    "on a canvas of its own where it is this wide — the painting's strokes finer on "
                    "the face, as a painter takes a finer brush — then set back (0: never)")
    portrait_face_iterations: int | None = Field(
        None, ge=1, le=100000,
        description="portrait mode: the face pass's L-BFGS iterations (default: two thirds of "
                    "--num-iterations, at least 10; the shop's previews use fewer)")
    face_mask: Path | None = Field(None, json_schema_extra={"metavar": "PNG"},
                                   description="your own face mask (white = face), instead of detection")
    mask: Path | None = Field(None, json_schema_extra={"metavar": "PNG"},
                              description="region styles: a grey-level mask, black = first --style, "
                                          "white = last, greys between")
    pooling: Literal["max", "avg"] = Field("max", description="VGG pooling")
    model: Literal["vgg16", "vgg19"] = Field("vgg16", description="perceptual network")
    weights: Path | None = Field(None, description="weights file (.safetensors, .onnx, .pth)")
    download: bool = Field(False, description="allow downloading vgg19 weights if not cached")
    seed: int = Field(0, ge=0, description="random seed: same seed and options, same image")
    device: str = Field("auto", json_schema_extra={"metavar": "DEVICE"},
                        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto, cpu, cuda or cuda:N")
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="VGG's convolutions in this precision (mixed precision: features, "
                               "Grams, losses and the image stay float32); bfloat16 or float16 "
                               "are faster on recent GPUs")

    @field_validator("style_blend_weights", "style_layer_weights")
    @classmethod
    def _weights_finite_non_negative(cls, value):
        if value is not None:
            if not value:
                raise ValueError("needs at least one value")
            if any(not math.isfinite(w) or w < 0 for w in value):
                raise ValueError("weights must be finite and non-negative")
            if sum(value) <= 0:
                raise ValueError("weights must not all be zero")
        return value

    @field_validator("memory_budget", "print_size")
    @classmethod
    def _sizes_parse(cls, value, info):
        if value is not None:
            (parse_bytes if info.field_name == "memory_budget" else parse_print_size)(value)
        return value

    @field_validator("scales", "scale_iterations")
    @classmethod
    def _positive_increasing(cls, value, info):
        if value is not None:
            if not value or any(v < 1 for v in value):
                raise ValueError("needs positive values")
            if info.field_name == "scales" and (value != sorted(set(value)) or value[0] < 32):
                raise ValueError("scales must increase, each at least 32 px")
        return value

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _layers_named(cls, value):
        if not value or any(not layer.strip() for layer in value):
            raise ValueError("needs at least one layer name")
        return [layer.strip() for layer in value]

    @model_validator(mode="after")
    def _layer_weights_match(self):
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise ValueError(f"{len(self.style_layer_weights)} style layer weights for "
                             f"{len(self.style_layers)} style layers")
        return self

    @classmethod
    def build(cls, **options) -> RenderParams:
        """Validate ``options`` into a RenderParams, or raise a one-line ParamError."""
        try:
            return cls(**options)
        except ValidationError as exc:
            raise ParamError(describe(exc)) from None

    def blend_weights(self, n_styles: int) -> list[float]:
        """Normalised per-style weights; a ParamError if their count is not ``n_styles``."""
        weights = self.style_blend_weights or [1.0] * n_styles
        if len(weights) != n_styles:
            raise ParamError(f"{len(weights)} style blend weights for {n_styles} style images")
        total = sum(weights)
        return [w / total for w in weights]

    def layer_weights(self) -> list[float]:
        return list(self.style_layer_weights or [1.0] * len(self.style_layers))


def describe(exc: ValidationError) -> str:
    """The first problem of a ValidationError as one line: ``content_weight: …``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "options"
    message = err["msg"].removeprefix("Value error, ")
    return f"{where.replace('_', '-')}: {message}"
