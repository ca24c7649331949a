"""impasto sweep: grids, labels, bad ranges, real tiny sweeps, resume and scores.

Real renders use the real engine and VGG-16 at 32 px with 2 iterations a cell; tests of
the bookkeeping (resume, scores, presets) replace ``sweep.render`` with a counting wrapper
or a stand-in that returns a known image.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impasto import cli, imaging, sweep
from impasto.engine.params import RenderParams
from impasto.errors import ParamError

TINY = ["--image-size", "32", "--num-iterations", "2", "--start-size", "0"]


def noise_image(path: Path, size=(48, 40), seed=0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    return noise_image(tmp_path / "photo.png"), noise_image(tmp_path / "starry.png", (40, 40), 1)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def render_calls(monkeypatch):
    """The labels of the cells ``sweep.render`` is called for (the real engine still runs)."""
    calls, real = [], sweep.render

    def counting(content, styles, params, callback=None, **options):
        calls.append((params.content_weight, params.style_weight))
        return real(content, styles, params, callback, **options)

    monkeypatch.setattr(sweep, "render", counting)
    return calls


def styles_of(*seeds) -> list[sweep.StyleChoice]:
    return [sweep.StyleChoice(f"s{seed}", f"s{seed}.png",
                              torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(seed)))
            for seed in seeds]


# --- the grid ---------------------------------------------------------------------------

def test_grid_expands_every_combination_with_labels_and_stable_ids():
    options = sweep.parse_options({"style_weight": "50,100", "content_weight": "1,5,10", "image_size": "32"})
    assert options.fixed == {"image_size": 32}
    assert [(a.name, a.values) for a in options.axes] == [("content_weight", (1.0, 5.0, 10.0)),
                                                          ("style_weight", (50.0, 100.0))]
    photo = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    grid = sweep.build_grid(options, photo, styles_of(1, 2))
    assert len(grid.cells) == 12 and grid.columns == 2
    assert [a.name for a in grid.axes] == ["style", "content_weight", "style_weight"]
    assert [c.label for c in grid.cells[:3]] == ["s1 cw=1 sw=50", "s1 cw=1 sw=100", "s1 cw=5 sw=50"]
    assert grid.cells[-1].label == "s2 cw=10 sw=100"
    assert grid.cells[3].params.content_weight == 5 and grid.cells[3].params.style_weight == 100
    assert grid.cells[3].params.image_size == 32 and grid.cells[3].params.num_iterations == 400
    assert len({c.id for c in grid.cells}) == 12
    again = sweep.build_grid(options, photo, styles_of(1, 2))
    assert [c.id for c in again.cells] == [c.id for c in grid.cells]
    other_photo = sweep.build_grid(options, photo.flip(-1), styles_of(1, 2))
    assert not {c.id for c in other_photo.cells} & {c.id for c in grid.cells}


def test_the_style_loss_is_an_axis_like_any_choice():
    options = sweep.parse_options({"style_loss": "gram,sw,nnst", "image_size": "32"})
    assert [(a.name, a.values) for a in options.axes] == [("style_loss", ("gram", "sw", "nnst"))]
    grid = sweep.build_grid(options, torch.rand(1, 3, 40, 40), styles_of(1))
    assert [c.params.style_loss for c in grid.cells] == ["gram", "sw", "nnst"]
    assert len({c.id for c in grid.cells}) == 3


def test_one_style_and_no_axes_is_one_cell_named_by_its_style():
    grid = sweep.build_grid(sweep.parse_options({"image_size": "32"}), torch.rand(1, 3, 40, 40), styles_of(3))
    assert [c.label for c in grid.cells] == ["cell"] and grid.axes == () and grid.columns == 1
    two = sweep.build_grid(sweep.parse_options({}), torch.rand(1, 3, 40, 40), styles_of(3, 3))
    assert [c.label for c in two.cells] == ["s3", "s3-2"]


def test_any_field_sweeps_lists_with_semicolons_and_booleans_with_on_off():
    options = sweep.parse_options({"style_layers": "relu1_1,relu2_1;relu3_1", "original_colors": "on,off",
                                   "init": "image,random", "image_size": "256,384"})
    values = {a.name: a.values for a in options.axes}
    assert values == {"image_size": (256, 384), "init": ("image", "random"),
                      "style_layers": (["relu1_1", "relu2_1"], ["relu3_1"]), "original_colors": (True, False)}
    label = sweep.cell_label(None, {"style_layers": ["relu1_1", "relu2_1"], "original_colors": False,
                                    "image_size": 256})
    assert label == "style-layers=relu1_1,relu2_1 original-colors=off px=256"


BAD_RANGES = {
    "empty item": ({"content_weight": "1,,x"}, "--content-weight 1,,x: an empty value"),
    "trailing comma": ({"style_weight": "50,"}, "--style-weight 50,: an empty value"),
    "negative": ({"style_weight": "-5"}, "--style-weight -5: Input should be greater than or equal to 0"),
    "negative in a list": ({"style_weight": "50,-5"}, "--style-weight -5: "),
    "not a number": ({"content_weight": "1,x"}, "--content-weight x: Input should be a valid number"),
    "nan": ({"tv_weight": "nan,1"}, "--tv-weight nan: Input should be a finite number"),
    "not an int": ({"num_iterations": "10,2.5"}, "--num-iterations 2.5: Input should be a valid integer"),
    "too small": ({"image_size": "16,64"}, "--image-size 16: Input should be greater than or equal to 32"),
    "unknown choice": ({"init": "image,foo"}, "--init foo: Input should be 'random', 'image' or 'quick'"),
    "twice": ({"content_weight": "1,1.0"}, "--content-weight: the value 1 is given twice"),
    "empty list": ({"style_layers": "relu1_1;"}, "--style-layers relu1_1;: an empty value"),
    "not sweepable": ({"save_iter": "1,2"}, "--save-iter: not an option a sweep takes"),
    "unknown style loss": ({"style_loss": "gram,sinkhorn"},
                           "--style-loss sinkhorn: Input should be 'gram', 'sw' or 'nnst'"),
}


@pytest.mark.parametrize("case", list(BAD_RANGES))
def test_bad_ranges_are_one_line_param_errors_naming_flag_and_value(case):
    raw, message = BAD_RANGES[case]
    with pytest.raises(ParamError) as error:
        sweep.parse_options(raw)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_bad_combinations_name_the_cell_and_big_grids_are_refused():
    options = sweep.parse_options({"scales": "32,64", "image_size": "64,96"})
    with pytest.raises(ParamError, match=r"^cell px=96: the last of --scales must be --image-size"):
        sweep.build_grid(options, torch.rand(1, 3, 40, 40), styles_of(1))
    big = sweep.parse_options({"content_weight": ",".join(map(str, range(1, 11))), "seed": "1,2,3,4,5,6,7"})
    with pytest.raises(ParamError, match=r"140 cells \(2 × 10 × 7\) is more than --max-cells 100"):
        sweep.check_count(big, 2, 100)
    assert sweep.check_count(big, 2, 140) == 140
    with pytest.raises(ParamError, match="at least one style"):
        sweep.check_count(big, 0)


# --- the command line: bad input -----------------------------------------------------------

def _file(path: Path) -> Path:
    path.write_text("not a folder\n")
    return path


BAD_COMMANDS = {
    "bad range": (lambda t: ["--content-weight", "1,,x"], "--content-weight 1,,x: an empty value"),
    "negative weight": (lambda t: ["--style-weight", "-5"], "--style-weight -5:"),
    "too many cells": (lambda t: ["--seed", ",".join(map(str, range(30))), "--max-cells", "20"],
                       "30 cells"),
    "no style": (lambda t: ["--no-style"], "--style"),
    "missing photo": (lambda t: ["--photo", t / "nope.png"], "not found"),
    "missing style": (lambda t: ["--style", t / "nope.png"], "not found"),
    "unknown preset": (lambda t: ["--preset", "nope"], "no style 'nope'"),
    "output parent missing": (lambda t: ["-o", t / "no" / "dir"], "does not exist"),
    "output is a file": (lambda t: ["-o", _file(t / "file.txt")], "not a folder"),
    "tile too small": (lambda t: ["--tile", "8"], "--tile 8"),
    "scales mismatch": (lambda t: ["--scales", "32,48", "--image-size", "48,64"], "cell px=64"),
    "unknown option": (lambda t: ["--style-wieght", "3"], "unrecognized"),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_sweeps_exit_2_with_one_line_and_no_files(case, images, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "catalog"))
    photo, style = images
    extra = [str(a) for a in BAD_COMMANDS[case][0](tmp_path)]
    argv = ["sweep", photo, "-o", tmp_path / "out", *TINY]
    if "--photo" in extra:
        argv[1] = extra[1]
        extra = []
    if "--no-style" in extra:
        extra = []
    elif not any(flag in extra for flag in ("--style", "--preset")):
        argv += ["--style", style]
    before = set(tmp_path.rglob("*"))
    code, stdout, stderr = run(capsys, *argv, *extra)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("impasto: error: "), stderr
    assert BAD_COMMANDS[case][1] in stderr and stdout == ""
    assert set(tmp_path.rglob("*")) == before


def test_sweep_help_has_an_example_and_every_sweepable_option(capsys):
    assert cli.main(["sweep", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "--content-weight 1,5,10" in out and "--max-cells" in out
    for name in RenderParams.model_fields:
        assert (f"--{name.replace('_', '-')} " in out) == (name not in sweep.NOT_SWEPT), name


# --- real sweeps --------------------------------------------------------------------------

def _index(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


def test_a_tiny_sweep_writes_cells_sheet_and_index(images, tmp_path, capsys, render_calls):
    photo, style = images
    out = tmp_path / "sweep"
    code, stdout, stderr = run(capsys, "sweep", photo, "-s", style, "-o", out, *TINY,
                               "--content-weight", "1,10", "--style-weight", "50,500", "--tile", "64")
    assert code == 0, stderr
    assert len(render_calls) == 4
    assert sorted(p.name for p in out.iterdir()) == ["cells", "index.csv", "index.json", "sheet.png"]
    assert len(list((out / "cells").glob("*.png"))) == 4
    index = _index(out)
    assert [c["label"] for c in index["cells"]] == ["cw=1 sw=50", "cw=1 sw=500", "cw=10 sw=50",
                                                    "cw=10 sw=500"]
    for cell in index["cells"]:
        assert cell["status"] == "done" and (out / cell["image"]).is_file()
        assert cell["params"]["image_size"] == 32 and cell["style"] == "starry"
        assert cell["params"]["content_weight"] == cell["values"]["content_weight"]
        # noise photo and noise style: the style score is ill-conditioned, only finite here
        assert math.isfinite(cell["scores"]["style"]) and 0 < cell["scores"]["content"] <= 1
        with Image.open(out / cell["image"]) as image:
            assert image.size == (32, 27)
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert [(r["content_weight"], r["style_weight"]) for r in rows] == [("1", "50"), ("1", "500"),
                                                                        ("10", "50"), ("10", "500")]
    assert all(r["style_score"] and r["content_score"] for r in rows)
    with Image.open(out / "sheet.png") as sheet:   # 2 columns of 64 px tiles, header + 2 rows
        assert sheet.width >= 2 * 64 and sheet.height > 2 * 64 + 32
    assert f"sheet: {out / 'sheet.png'}" in stdout and "best by style + content: cw=" in stdout
    assert "cell 4/4" in stderr and "Traceback" not in stderr


def test_resume_skips_done_cells_and_renders_only_what_is_missing(images, tmp_path, capsys, render_calls):
    photo, style = images
    base = ["sweep", photo, "-s", style, "-o", tmp_path / "sweep", *TINY, "-q"]
    argv = [*base, "--content-weight", "1,10", "--style-weight", "50,500"]
    assert run(capsys, *argv)[0] == 0 and len(render_calls) == 4
    first = _index(tmp_path / "sweep")
    render_calls.clear()
    assert run(capsys, *argv)[0] == 0
    assert render_calls == []                                   # nothing left to do
    assert _index(tmp_path / "sweep")["cells"] == first["cells"]
    (tmp_path / "sweep" / first["cells"][2]["image"]).unlink()  # cw=10 sw=50
    assert run(capsys, *argv)[0] == 0
    assert render_calls == [(10.0, 50.0)]
    render_calls.clear()
    assert run(capsys, *base, "--content-weight", "1,10,20", "--style-weight", "500")[0] == 0
    assert render_calls == [(20.0, 500.0)]                      # cw=1 and 10 at sw=500 were done
    index = _index(tmp_path / "sweep")
    assert [c["label"] for c in index["cells"]] == ["cw=1", "cw=10", "cw=20"]
    assert sorted(c["label"] for c in index["earlier"]) == ["cw=1 sw=50", "cw=10 sw=50"]


def test_progress_is_one_count_over_the_cells_to_render(images, tmp_path):
    photo, style = [imaging.load(p) for p in images]
    options = sweep.parse_options({"image_size": "32", "start_size": "0", "num_iterations": "2,3"})
    grid = sweep.build_grid(options, photo, [sweep.StyleChoice("starry", "starry.png", style)])
    seen = []
    sweep.Sweep(grid, photo, tmp_path / "s").run(seen.append)
    assert {p.total for p in seen} == {5} and [p.iteration for p in seen] == [1, 2, 3, 4, 5]
    assert [(p.cell, p.cells) for p in seen] == [(1, 2)] * 2 + [(2, 2)] * 3
    (tmp_path / "s" / "cells" / f"{grid.cells[1].id}.png").unlink()
    seen.clear()
    sweep.Sweep(grid, photo, tmp_path / "s").run(seen.append)
    assert [(p.iteration, p.total, p.cell, p.cells, p.label) for p in seen][-1] == (3, 3, 1, 1, "it=3")


def test_an_interrupted_sweep_keeps_finished_cells(images, tmp_path, capsys, monkeypatch, render_calls):
    def interrupt_second_cell(self, progress):
        if progress.cell == 2:
            raise KeyboardInterrupt

    original = cli.SweepBar.__call__
    monkeypatch.setattr(cli.SweepBar, "__call__", interrupt_second_cell)
    photo, style = images
    argv = ["sweep", photo, "-s", style, "-o", tmp_path / "sweep", *TINY, "--content-weight", "1,10"]
    code, _, stderr = run(capsys, *argv)
    assert code == 130 and "1 of 2 cells are done" in stderr and len(stderr.splitlines()) == 1
    assert [c["status"] for c in _index(tmp_path / "sweep")["cells"]] == ["done", "pending"]
    assert not list((tmp_path / "sweep" / "cells").glob(".*"))  # no temporary file left
    monkeypatch.setattr(cli.SweepBar, "__call__", original)
    render_calls.clear()
    assert run(capsys, *argv, "-q")[0] == 0
    assert render_calls == [(10.0, 100.0)]


# --- scores and presets (a stand-in render returns a known image) --------------------------------

@pytest.fixture
def known_render(monkeypatch):
    """style-weight 0 → the photo itself; otherwise the style image (in the photo's shape)."""
    def fake(content, styles, params, callback=None, **options):
        return content if params.style_weight == 0 else styles[0]

    monkeypatch.setattr(sweep, "render", fake)


def test_scores_in_the_index_are_those_of_each_cells_image(tmp_path, known_render):
    photo = imaging.load("sample:astronaut")[..., ::4, ::4].contiguous()
    style = imaging.load("sample:immunohistochemistry")[..., ::4, ::4].contiguous()
    grid = sweep.build_grid(sweep.parse_options({"style_weight": "0,100"}), photo,
                            [sweep.StyleChoice("ihc", "ihc.png", style)])
    records = sweep.Sweep(grid, photo, tmp_path / "s").run()
    unstyled, styled = (r["scores"] for r in records)
    assert unstyled == {"style": 0.0, "content": 1.0}             # the photo scores 0 by definition
    assert styled["style"] == pytest.approx(1.0, abs=1e-4) and styled["content"] < 0.5
    assert sweep.best(records)["label"] in ("sw=0", "sw=100")


def test_catalog_presets_join_the_style_axis_with_their_options(images, tmp_path, capsys, monkeypatch,
                                                                 known_render):
    monkeypatch.setenv("IMPASTO_CATALOG_DIR", str(tmp_path / "catalog"))
    photo, style = images
    assert run(capsys, "styles", "add", "bold", style, "--style-weight", "300", "--tv-weight", "0")[0] == 0
    code, _, stderr = run(capsys, "sweep", photo, "-s", style, "--preset", "bold", "-o", tmp_path / "s",
                          "-q", "--tv-weight", "0.5,1")
    assert code == 0, stderr
    cells = _index(tmp_path / "s")["cells"]
    assert [c["label"] for c in cells] == ["starry tv=0.5", "starry tv=1", "bold tv=0.5", "bold tv=1"]
    assert [c["params"]["style_weight"] for c in cells] == [100.0, 100.0, 300.0, 300.0]
    assert cells[2]["style_source"] == "catalog:bold"


def test_print_sizes_sweep_at_their_pixel_sizes(images, tmp_path, capsys):
    photo, style = images
    code, _, stderr = run(capsys, "sweep", photo, "-s", style, "-o", tmp_path / "s", "-q", "--start-size", "0",
                          "--num-iterations", "2", "--print-size", "1x0.5in", "--dpi", "50,64")
    assert code == 0, stderr
    cells = _index(tmp_path / "s")["cells"]
    assert [c["label"] for c in cells] == ["dpi=50", "dpi=64"]
    sizes = []
    for cell in cells:
        with Image.open(tmp_path / "s" / cell["image"]) as image:
            sizes.append(image.size)
        assert 0 < cell["scores"]["content"] <= 1
    assert sizes == [(50, 25), (64, 32)]
