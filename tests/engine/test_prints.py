"""Print sizes: arithmetic, orientation, crop policy and a render at an exact print size."""

from __future__ import annotations

import pytest
import torch

from impasto.engine import RenderParams, render
from impasto.engine.prints import crop_to_aspect, parse_print_size, print_pixels
from impasto.errors import ParamError


@pytest.mark.parametrize("text, expected", [
    ("8x10in", (8.0, 10.0)), ("10x8in", (8.0, 10.0)), ("20 x 25 cm", (20 / 2.54, 25 / 2.54)),
    ("24×36IN", (24.0, 36.0)), ("8.5x11in", (8.5, 11.0)),
])
def test_parse_print_size_gives_short_and_long_sides_in_inches(text, expected):
    assert parse_print_size(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["8x10", "8x10mm", "axbin", "0x10in", "", "8x10x12in"])
def test_bad_print_sizes_are_one_line_param_errors(text):
    with pytest.raises(ParamError) as info:
        RenderParams.build(print_size=text)
    assert "\n" not in str(info.value)


def test_print_pixels_follow_the_dpi_and_the_photo_orientation():
    assert print_pixels("8x10in", 300, 600, 400) == (3000, 2400)     # portrait photo
    assert print_pixels("8x10in", 300, 400, 600) == (2400, 3000)     # landscape photo
    assert print_pixels("20x25cm", 254, 500, 400) == (2500, 2000)    # 254 dpi = 100 px/cm


@pytest.mark.parametrize("shape, target", [((60, 100), (30, 40)), ((100, 60), (40, 30)), ((50, 50), (10, 20))])
def test_crop_to_aspect_is_centred_and_keeps_the_ratio(shape, target):
    image = torch.arange(shape[0] * shape[1], dtype=torch.float32).view(1, 1, *shape)
    crop = crop_to_aspect(image, *target)
    h, w = crop.shape[-2:]
    assert abs(w / h - target[1] / target[0]) < 0.03
    assert h == shape[0] or w == shape[1]                      # only one dimension is trimmed
    top = int(crop[0, 0, 0, 0]) // shape[1]
    left = int(crop[0, 0, 0, 0]) % shape[1]
    assert abs(top - (shape[0] - h - top)) <= 1 and abs(left - (shape[1] - w - left)) <= 1


def test_render_at_a_print_size_has_its_exact_pixels():
    content, style = torch.rand(1, 3, 50, 80), torch.rand(1, 3, 48, 48)
    params = RenderParams(print_size="1x1.5in", dpi=64, num_iterations=2)  # 64×96 px, landscape
    out = render(content, [style], params)
    assert out.shape == (1, 3, 64, 96)


def test_a_print_over_the_size_limit_is_refused_before_rendering():
    with pytest.raises(ParamError, match="over the"):
        render(torch.rand(1, 3, 40, 60), [torch.rand(1, 3, 40, 40)],
               RenderParams(print_size="60x90in", dpi=2400))
