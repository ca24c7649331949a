from pathlib import Path

import pytest

from impasto.config import Settings, get_settings


def test_settings_read_prefixed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IMPASTO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IMPASTO_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("IMPASTO_PRINTS", '[{"size": "A3", "price_cents": 3900}]')
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.max_attempts == 5
        assert [(p.size, p.price_cents) for p in settings.prints] == [("A3", 3900)]
        assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'impasto.db'}"
        assert settings.resolved_storage_url() == (tmp_path / "files").as_uri()
    finally:
        get_settings.cache_clear()


def test_explicit_urls_win(tmp_path):
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://db/x", storage_url="s3://b/p")
    assert settings.resolved_database_url() == "postgresql+psycopg://db/x"
    assert settings.resolved_storage_url() == "s3://b/p"


def test_locations_read_only_their_own_variables(monkeypatch, tmp_path):
    from impasto.catalog import catalog_dir
    from impasto.config import Locations

    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "styles"))
    monkeypatch.setenv("IMPASTO_MAX_ATTEMPTS", "not a number")      # a shop variable: not read here
    assert catalog_dir() == tmp_path / "styles"
    assert Locations().resolved_catalog_dir() == tmp_path / "styles"
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", "")
    assert catalog_dir().name == "styles" and catalog_dir() != Path("styles")


def test_a_bad_variable_is_one_config_error_naming_it(monkeypatch):
    from impasto.config import load_settings
    from impasto.errors import ConfigError

    monkeypatch.setenv("IMPASTO_MAX_ATTEMPTS", "many")
    with pytest.raises(ConfigError, match=r"^configuration: IMPASTO_MAX_ATTEMPTS: "):
        load_settings()
    monkeypatch.setenv("IMPASTO_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("IMPASTO_PRINTS", "[not json")
    with pytest.raises(ConfigError, match="IMPASTO_"):
        load_settings()
