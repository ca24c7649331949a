"""The style catalog: round trip, bad presets, and the CLI around it."""

from __future__ import annotations

import json

import pytest
import torch

from impasto import cli, imaging
from impasto.catalog import Catalog, CatalogError
from impasto.errors import ImageError, ParamError


@pytest.fixture
def painting(tmp_path):
    return imaging.save(torch.rand(1, 3, 48, 64), tmp_path / "painting.png")


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "catalog"))
    return Catalog()


def test_round_trip(catalog, painting):
    catalog.add("starry", painting, {"style_weight": 250.0, "content_layers": ["relu4_2"]}, title="Starry")
    style = Catalog().get("starry")
    assert (style.title, style.preset["style_weight"]) == ("Starry", 250.0)
    assert style.params().style_weight == 250.0
    assert style.params(style_weight=10.0).style_weight == 10.0       # flags override the preset
    assert (style.image() - imaging.load(painting)).abs().max() < 1 / 255 + 1e-6
    assert catalog.names() == ["starry"]
    assert json.loads((catalog.root / "starry" / "preset.json").read_text())["params"]["style_weight"] == 250.0


@pytest.mark.parametrize("preset, words", [({"styel_weight": 1.0}, "styel"),
                                           ({"style_weight": "lots"}, "style-weight")])
def test_bad_presets_are_refused_naming_the_field(catalog, painting, preset, words):
    with pytest.raises(ParamError, match=words):
        catalog.add("bad", painting, preset)
    assert catalog.names() == []


def test_a_hand_edited_preset_fails_on_use(catalog, painting):
    catalog.add("edited", painting, {})
    record = catalog.root / "edited" / "preset.json"
    data = json.loads(record.read_text())
    data["params"] = {"tv_weight": -1}
    record.write_text(json.dumps(data))
    with pytest.raises(ParamError, match="tv-weight"):
        catalog.get("edited")


def test_missing_image_and_missing_style(catalog, painting):
    with pytest.raises(ImageError):
        catalog.add("none", painting.parent / "nope.png", {})
    catalog.add("gone", painting, {})
    (catalog.root / "gone" / "style.png").unlink()
    with pytest.raises(ImageError, match="missing"):
        catalog.get("gone")
    with pytest.raises(CatalogError, match="no style"):
        catalog.get("unknown")
    with pytest.raises(CatalogError):
        catalog.remove("unknown")


def test_duplicates_need_replace_and_names_are_checked(catalog, painting):
    catalog.add("one", painting, {"seed": 1})
    with pytest.raises(CatalogError, match="already exists"):
        catalog.add("one", painting, {"seed": 2})
    assert catalog.add("one", painting, {"seed": 2}, replace=True).preset == {"seed": 2}
    for name in ("Upper", "../escape", "", "a b"):
        with pytest.raises(ParamError):
            catalog.add(name, painting, {})


def test_cli_styles_and_render_with_a_preset(catalog, painting, tmp_path, capsys):
    assert cli.main(["styles", "add", "mine", str(painting), "--num-iterations", "3", "--image-size", "48"]) == 0
    assert cli.main(["styles", "list"]) == 0
    assert "mine" in capsys.readouterr().out
    out = tmp_path / "out.png"
    assert cli.main(["render", "sample:astronaut", "--preset", "mine", "-o", str(out), "-q"]) == 0
    with imaging.Image.open(out) as image:
        assert image.size == (48, 48)                                 # the preset's image size
    assert cli.main(["styles", "remove", "mine"]) == 0
    assert cli.main(["render", "sample:astronaut", "--preset", "mine", "-o", str(out)]) == 2
    assert cli.main(["render", "sample:astronaut", "-o", str(tmp_path / "x.png")]) == 2
