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
