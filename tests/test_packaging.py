"""The container files, read as text (no container daemon runs here): secrets come from the
environment, the image runs as a non-root user, every long-running service has a healthcheck."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_dockerfile_runs_as_a_user_with_no_secret_and_probes_readyz():
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "/readyz" in re.search(r"^HEALTHCHECK.*(?:\n\s+.*)*", text, flags=re.MULTILINE).group(0)
    for line in re.findall(r"^(?:ENV|ARG)\s.*(?:\\\n.*)*", text, flags=re.MULTILINE):
        assert not re.search(r"SECRET|PASSWORD|TOKEN", line), line
    assert 'pip install ".[shop,farm]"' in text


def test_compose_takes_every_secret_from_the_environment_and_checks_every_service():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"shop", "worker", "postgres", "rabbitmq", "minio"} <= set(services)
    for name, service in services.items():
        if name != "bucket":                    # a one-shot job: it exits
            assert "healthcheck" in service or name == "shop", name   # the shop's is the image's
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|TOKEN|_URL", key) and value:
                literal = re.sub(r"\$\{[^}]+\}", "", str(value))
                assert not re.search(r"(?<=:)[^/@:]+(?=@)", literal), (name, key, value)   # no inline password
                if re.search(r"SECRET|PASSWORD", key):
                    assert str(value).startswith("${"), (name, key, value)
    assert services["worker"]["depends_on"]["shop"]["condition"] == "service_healthy"   # the shop migrates
