"""Instant previews: the feed-forward network moves the photo towards the style."""

from __future__ import annotations

import pytest
import torch

from impasto import cli, imaging
from impasto.engine.quick import QuickStylizer, contact_sheet
from impasto.errors import ParamError


def _colour_stats(image: torch.Tensor) -> torch.Tensor:
    flat = image[0].reshape(3, -1)
    return torch.cat([flat.mean(1), flat.std(1)])


@pytest.fixture(scope="module")
def stylizer():
    return QuickStylizer()


def test_preview_moves_colour_statistics_towards_the_style(stylizer):
    photo = imaging.load("sample:astronaut")
    style = torch.zeros(1, 3, 128, 128)
    style[:, 2] = 0.7                                    # a blue painting with stripes
    style[..., ::8, :] = 1.0
    out = stylizer.stylize(photo, style, size=256)
    assert max(out.shape[-2:]) == 256
    target = _colour_stats(style)
    assert (_colour_stats(out) - target).norm() < 0.7 * (_colour_stats(photo) - target).norm()


def test_preview_size_is_checked(stylizer):
    with pytest.raises(ParamError):
        stylizer.stylize(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), size=8)


def test_contact_sheet_lays_out_every_tile():
    tiles = [(str(i), torch.full((1, 3, 40, 60), i / 5)) for i in range(5)]
    sheet = contact_sheet(tiles, tile=60, columns=3)
    assert sheet.size == (3 * 66 + 6, 2 * (60 + 18 + 6) + 6)
    with pytest.raises(ParamError):
        contact_sheet([])


def test_cli_preview_writes_a_sheet(tmp_path, capsys):
    imaging.save(torch.rand(1, 3, 64, 64), tmp_path / "style.png")
    code = cli.main(["preview", "sample:astronaut", "--style", str(tmp_path / "style.png"),
                     "--style", "sample:coffee", "-o", str(tmp_path / "sheet.png"), "--tile", "96"])
    assert code == 0
    with imaging.Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width == 3 * 102 + 6


def test_cli_preview_with_a_missing_style_is_one_line_exit_2(tmp_path, capsys):
    code = cli.main(["preview", "sample:astronaut", "--style", str(tmp_path / "none.jpg"),
                     "-o", str(tmp_path / "sheet.png")])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "sheet.png").exists()


# --- --init quick: the Gatys render starts from the feed-forward picture ------------------

def test_quick_start_keeps_the_face_as_the_photo():
    from impasto.engine import RenderParams
    from impasto.engine.quick import quick_start

    photo = imaging.load("sample:astronaut")
    style = torch.zeros(1, 3, 64, 64)
    style[:, 2] = 0.8
    likeness = torch.zeros(1, 1, 96, 96)
    likeness[..., 24:72, 24:72] = 2.0                       # eyes weigh up to 2: clamped to 1
    start = quick_start(photo, [style], RenderParams(), likeness=likeness)
    assert start.is_contiguous() and 0 <= start.min() and start.max() <= 1
    plain = quick_start(photo, [style], RenderParams())
    photo_small = torch.nn.functional.interpolate(photo, size=start.shape[-2:], mode="area")
    h, w = start.shape[-2:]
    face = (slice(None), slice(None), slice(h // 3, 2 * h // 3), slice(w // 3, 2 * w // 3))
    assert (start[face] - photo_small[face]).abs().max() < 1e-5     # the photo inside the face
    corner = (slice(None), slice(None), slice(0, h // 8), slice(0, w // 8))
    assert torch.equal(start[corner], plain[corner])                 # the sketch outside it
    assert (plain - photo_small).abs().mean() > 0.05


def test_quick_start_takes_one_style():
    from impasto.engine import RenderParams
    from impasto.engine.quick import quick_start

    with pytest.raises(ParamError, match="one style"):
        quick_start(torch.rand(1, 3, 64, 64), [torch.rand(1, 3, 32, 32)] * 2, RenderParams())


def test_a_render_from_the_quick_start_reports_its_pixel_work(vgg16_state):
    from impasto.engine import RenderParams
    from impasto.engine.features import VGGFeatures
    from impasto.engine.multiscale import render
    from impasto.engine.params import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
    from impasto.engine.weights import model_spec

    photo, style = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 48, 48)
    params = RenderParams(image_size=64, start_size=32, num_iterations=6, init="quick", portrait="off")
    seen = []
    out = render(photo, [style], params, seen.append, extractor=VGGFeatures(model_spec("vgg16"), vgg16_state,
                                                                      [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS]))
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    first_scale = [p for p in seen if p.scale_index == 0]
    # a 32 px iteration costs a quarter of a 64 px one: the coarse scale's share of the work is
    # smaller than its share of the iterations
    assert first_scale[-1].fraction < first_scale[-1].iteration / first_scale[-1].total
