"""RenderParams: valid defaults, one-line ParamErrors for bad or inconsistent options."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from impasto.engine import render
from impasto.engine.features import check_layers
from impasto.engine.params import RenderParams
from impasto.errors import ParamError

# `impasto.engine.scale` the attribute is the function (re-exported by the package), so
# `from impasto.engine import render` cannot reach the module; import_module can.
render_module = importlib.import_module("impasto.engine.scale")


def _one_line_param_error(**options) -> str:
    with pytest.raises(ParamError) as info:
        RenderParams.build(**options)
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def test_defaults_are_valid_and_consistent():
    params = RenderParams.build()
    assert params == RenderParams()
    check_layers(params.model, [*params.content_layers, *params.style_layers])
    assert params.layer_weights() == [1.0] * len(params.style_layers)
    assert params.blend_weights(1) == [1.0]
    assert params.blend_weights(4) == [0.25] * 4


@pytest.mark.parametrize("option, value", [
    ("content_weight", -1.0),
    ("style_weight", -0.001),
    ("tv_weight", -5),
    ("content_weight", math.nan),
    ("style_weight", math.inf),
    ("tv_weight", math.nan),
    ("learning_rate", 0.0),
    ("image_size", 8),
    ("num_iterations", 0),
    ("style_scale", 0),
    ("device", "tpu"),
    ("init", "zeros"),
    ("optimizer", "sgd"),
    ("pooling", "min"),
])
def test_out_of_range_option_names_the_flag(option, value):
    message = _one_line_param_error(**{option: value})
    assert message.startswith(option.replace("_", "-") + ":"), message


@pytest.mark.parametrize("weights", [[1.0, -1.0], [1.0, math.nan], [math.inf], [0.0, 0.0], []])
@pytest.mark.parametrize("option", ["style_blend_weights", "style_layer_weights"])
def test_bad_weight_lists(option, weights):
    extra = {"style_layers": ["relu1_1", "relu2_1"][: max(1, len(weights))]} \
        if option == "style_layer_weights" else {}
    message = _one_line_param_error(**{option: weights}, **extra)
    assert option.replace("_", "-") in message


def test_style_layer_weights_count_must_match_layers():
    message = _one_line_param_error(style_layer_weights=[1.0, 2.0, 3.0])   # 5 default layers
    assert "3 style layer weights for 5 style layers" in message
    ok = RenderParams.build(style_layers=["relu1_1", "relu3_1"], style_layer_weights=[1.0, 3.0])
    assert ok.layer_weights() == [1.0, 3.0]


def test_blend_weights_are_normalised_and_counted():
    params = RenderParams.build(style_blend_weights=[1.0, 3.0])
    assert params.blend_weights(2) == pytest.approx([0.25, 0.75])
    for n in (1, 3):
        with pytest.raises(ParamError) as info:
            params.blend_weights(n)
        assert str(info.value) == f"2 style blend weights for {n} style images"


def test_unknown_model_and_unknown_option():
    assert _one_line_param_error(model="vgg99").startswith("model:")
    assert "colour_boost" in _one_line_param_error(colour_boost=True).replace("-", "_")


def test_layer_names_are_stripped_and_must_not_be_empty():
    assert RenderParams.build(style_layers=[" relu1_1", "relu2_1 "]).style_layers == ["relu1_1", "relu2_1"]
    assert _one_line_param_error(content_layers=[]).startswith("content-layers:")
    assert _one_line_param_error(style_layers=["relu1_1", "  "]).startswith("style-layers:")


def test_assignment_is_validated():
    params = RenderParams()
    with pytest.raises(ValueError):
        params.content_weight = -1.0
    assert params.content_weight == RenderParams().content_weight


def _no_extractor(*args, **kwargs):
    raise AssertionError("weights were loaded before the options were checked")


def test_render_checks_blend_count_before_loading_weights(monkeypatch):
    monkeypatch.setattr(render_module, "build_extractor", _no_extractor)
    params = RenderParams.build(style_blend_weights=[1.0, 1.0], image_size=32)
    with pytest.raises(ParamError, match="2 style blend weights for 1 style images"):
        render(torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], params)
    with pytest.raises(ParamError, match="at least one style"):
        render(torch.rand(1, 3, 32, 32), [], params)


def test_render_rejects_unknown_layer_before_loading_weights(monkeypatch):
    from impasto.engine import features

    monkeypatch.setattr(features, "load_weights", _no_extractor)
    params = RenderParams.build(style_layers=["relu1_1", "relu7_1"], image_size=32, device="cpu")
    with pytest.raises(ParamError, match="relu7_1"):
        render(torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_param_error(monkeypatch):
    monkeypatch.setattr(render_module, "build_extractor", _no_extractor)
    params = RenderParams.build(device="cuda", image_size=32)
    with pytest.raises(ParamError, match="CUDA"):
        render(torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], params)
