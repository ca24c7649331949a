"""impasto sweep over several photos or folders: inputs, names, sheets, the index, resume.

Real renders use the real engine and VGG-16 at 32 px with 2 iterations a cell, counted by
a spy on ``sweep.render`` that notes which photo (by its pixels' sum) each render is for.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impasto import batch, cli, imaging, sweep
from impasto.errors import ImageError

TINY = ["--image-size", "32", "--num-iterations", "2", "--start-size", "0"]


def noise_image(path: Path, size=(48, 40), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def index_of(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


@pytest.fixture
def renders(monkeypatch):
    """(photo, content weight) of every render: the photo by the rounded sum of its pixels."""
    calls, real = [], sweep.render

    def counting(content, styles, params, callback=None, **options):
        calls.append((round(float(content.sum()), 1), params.content_weight))
        return real(content, styles, params, callback, **options)

    monkeypatch.setattr(sweep, "render", counting)
    return calls


def photo_sum(path: Path) -> float:
    return round(float(imaging.load(path).sum()), 1)


# --- inputs and names ------------------------------------------------------------------------

def test_folders_give_their_images_sorted_and_skip_the_rest(tmp_path):
    folder = tmp_path / "photos"
    for name, seed in [("b.png", 1), ("A.JPG", 2), ("c.webp", 3), (".hidden.png", 4)]:
        noise_image(folder / name, seed=seed)
    (folder / "notes.txt").write_text("not a photo\n")
    (folder / "older").mkdir()
    single = noise_image(tmp_path / "single.png")
    found = batch.collect_photos([single, folder, folder / "b.png"])
    assert found.photos == (str(single), *(str(folder / n) for n in ("A.JPG", "b.png", "c.webp")))
    assert found.skipped == (str(folder / "notes.txt"), str(folder / "older")) and found.batch
    assert batch.collect_photos([single]) == batch.Inputs((str(single),), (), False)   # today's sweep
    assert batch.collect_photos([single, single]).batch is False                      # named twice: one
    assert batch.collect_photos([folder / "b.png"]).batch is False
    assert batch.collect_photos([tmp_path / "photos"]).batch                           # a folder: a batch
    with pytest.raises(ImageError, match=r"older: no images in this folder \(\.jpg"):
        batch.collect_photos([folder / "older"])


def test_clashing_stems_get_the_photos_digest_whatever_the_order():
    sources, keys = ["a/portrait.jpg", "b/portrait.png", "c/Other.jpg", "cells.png", "d/other.tif"], \
        ["1111aaaa2222", "3333bbbb4444", "55556666", "77778888", "9999cccc"]
    names = batch.photo_names(sources, keys)
    assert names == ["portrait-1111aaaa", "portrait-3333bbbb", "Other-55556666", "cells-77778888",
                     "other-9999cccc"]
    assert batch.photo_names(sources[::-1], keys[::-1]) == names[::-1]
    # the same pixels under the same stem twice: numbered
    assert batch.photo_names(["a/x.png", "b/x.png"], ["k1", "k1"]) == ["x-k1", "x-k1-2"]
    assert batch.photo_names(["sample:astronaut", "solo.png"], ["k1", "k2"]) == ["astronaut", "solo"]


# --- a real batch -------------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path):
    """one.png, and a folder holding another one.png (other pixels), two.png and notes.txt."""
    first = noise_image(tmp_path / "one.png", seed=0)
    folder = tmp_path / "more"
    noise_image(folder / "one.png", (40, 48), seed=5)
    noise_image(folder / "two.png", seed=6)
    (folder / "notes.txt").write_text("shot list\n")
    style = noise_image(tmp_path / "styles" / "starry.png", (40, 40), seed=1)
    return first, folder, style


def test_photos_and_a_folder_get_a_sheet_each_and_an_index_sheet(photos, tmp_path, capsys, renders):
    first, folder, style = photos
    out = tmp_path / "batch"
    code, stdout, stderr = run(capsys, "sweep", first, folder, "-s", style, "-o", out, *TINY,
                               "--content-weight", "1,10", "--tile", "64")
    assert code == 0, stderr
    assert len(renders) == 6 and len({photo for photo, _ in renders}) == 3
    assert "impasto: note: skipped 1 file that is not an image: notes.txt" in stderr
    assert "cell 6/6 · photo 3/3" in stderr and "ETA " in stderr and "Traceback" not in stderr
    index = index_of(out)
    one, other, two = index["photos"]
    assert index["kind"] == "batch" and [a["name"] for a in index["axes"]] == ["content_weight"]
    assert one["name"].startswith("one-") and other["name"].startswith("one-") and two["name"] == "two"
    assert one["name"] != other["name"] and one["photo"] == str(first)
    assert two["photo"] == str(folder / "two.png")
    ids = set()
    for photo in index["photos"]:
        assert [c["label"] for c in photo["cells"]] == ["cw=1", "cw=10"]
        assert all(c["status"] == "done" and (out / c["image"]).is_file() for c in photo["cells"])
        assert {c["photo_key"] for c in photo["cells"]} == {photo["photo_key"]}
        ids |= {c["id"] for c in photo["cells"]}
        view = json.loads((out / photo["index"]).read_text())   # the photo's own index: paths from there
        assert [c["id"] for c in view["cells"]] == [c["id"] for c in photo["cells"]]
        assert all((out / photo["name"] / c["image"]).is_file() for c in view["cells"])
        with Image.open(out / photo["sheet"]) as sheet:          # 2 columns of 64 px tiles, header + a row
            assert sheet.width >= 2 * 64 and sheet.height > 64 + 32
    assert {p.stem for p in (out / "cells").glob("*.png")} == ids and len(ids) == 6
    with Image.open(out / "index.png") as sheet:   # a block per photo: the photo and its 2 cells
        assert sheet.width >= 3 * 64 and sheet.height >= 3 * (64 + 2 * 17)
    rows = list(csv.DictReader((out / "index.csv").open()))
    assert [(r["photo"], r["content_weight"]) for r in rows][-2:] == [("two", "1"), ("two", "10")]
    assert len(rows) == 6 and all(r["style_score"] for r in rows)
    assert "rendered 6 of 6 cells for 3 photos" in stdout and f"two: {out / 'two' / 'sheet.png'}" in stdout


def test_a_batch_resumes_only_missing_cells_across_interrupts_photos_and_layouts(photos, tmp_path, capsys,
                                                                                 monkeypatch, renders):
    first, folder, style = photos
    second = folder / "two.png"
    out = tmp_path / "batch"
    grid = [*TINY, "-s", style, "-o", out, "--content-weight", "1,10"]
    assert run(capsys, "sweep", first, *grid, "-q")[0] == 0               # one photo, today's layout
    assert (out / "sheet.png").is_file() and len(renders) == 2
    renders.clear()

    def interrupt_second_cell_to_render(self, progress):
        if progress.cell == 2:   # of the cells still to render: the first's are done
            raise KeyboardInterrupt

    original = cli.SweepBar.__call__
    monkeypatch.setattr(cli.SweepBar, "__call__", interrupt_second_cell_to_render)
    code, _, stderr = run(capsys, "sweep", first, second, *grid)
    assert code == 130 and len(stderr.splitlines()) == 1, stderr
    assert "3 of 4 cells of 2 photos are done" in stderr
    assert [(photo_sum(second), 1.0), (photo_sum(second), 10.0)] == renders   # the first photo's were kept
    statuses = [[c["status"] for c in p["cells"]] for p in index_of(out)["photos"]]
    assert statuses == [["done", "done"], ["done", "pending"]]
    assert not list((out / "cells").glob(".*"))                        # no temporary file left
    monkeypatch.setattr(cli.SweepBar, "__call__", original)
    renders.clear()
    assert run(capsys, "sweep", first, second, *grid, "-q")[0] == 0
    assert renders == [(photo_sum(second), 10.0)]                       # only the missing cell
    renders.clear()
    code, stdout, _ = run(capsys, "sweep", first, second, *grid)
    assert code == 0 and renders == [] and "rendered 0 of 4 cells for 2 photos (4 were done)" in stdout
    assert run(capsys, "sweep", folder, first, *grid, "-q")[0] == 0      # one more photo
    assert sorted(cw for _, cw in renders) == [1.0, 10.0] and {p for p, _ in renders} == {
        photo_sum(folder / "one.png")}
    renders.clear()
    assert run(capsys, "sweep", first, *grid, "-q")[0] == 0               # back to one photo: all done
    assert renders == [] and [c["status"] for c in index_of(out)["cells"]] == ["done", "done"]
    assert len(index_of(out)["earlier"]) == 4                           # the others' cells are kept


def test_batch_progress_counts_cells_and_photos_and_the_eta_starts_after_a_cell(photos, tmp_path):
    first, folder, style = photos
    options = sweep.parse_options({"image_size": "32", "start_size": "0", "num_iterations": "2"})
    styles = [sweep.StyleChoice("starry", str(style), imaging.load(style))]
    prepared = batch.prepare([str(first), str(folder / "two.png")], options, styles, max_cells=10, tile=64)
    seen = []
    records = batch.Batch(prepared, tmp_path / "b", tile=64).run(seen.append)
    assert [(p.iteration, p.total, p.cell, p.cells, p.photo, p.photos) for p in seen] == [
        (1, 4, 1, 2, 1, 2), (2, 4, 1, 2, 1, 2), (3, 4, 2, 2, 2, 2), (4, 4, 2, 2, 2, 2)]
    assert [p.eta for p in seen[:2]] == [None, None] and all(p.eta >= 0 for p in seen[2:])
    assert [[r["status"] for r in photo] for photo in records] == [["done"], ["done"]]


def test_the_eta_is_the_finished_cells_pace_times_the_work_left(monkeypatch):
    clock = iter([0.0, 10.0, 10.0])   # start 1, finish 1, start 2
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: next(clock))
    seen = []
    tally = sweep.Tally([(2, 100.0), (2, 300.0)], seen.append)
    tally.start("a", (2, 100.0))
    tally.finish()
    report = tally.start("b", (2, 300.0), photo=2, photos=2)
    report(type("Progress", (), {"iteration": 1, "fraction": 0.5, "losses": {}})())   # half of cell 2
    assert seen[0].eta == pytest.approx(10.0 / 100.0 * (300.0 - 150.0))
    assert (seen[0].iteration, seen[0].total, seen[0].cell, seen[0].photo) == (3, 4, 2, 2)


# --- bad input ---------------------------------------------------------------------------------

def _garbled(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a png at all")
    return path


BAD_BATCHES = {
    "empty folder": (lambda t: [(t / "empty").mkdir() or t / "empty"], "empty: no images in this folder"),
    "no images in the folder": (lambda t: [_text(t / "docs" / "a.txt").parent], "docs: no images"),
    "unreadable photo in a folder": (lambda t: _unreadable_in(t / "f"), "b.png: not an image"),
    "missing photo": (lambda t: [noise_image(t / "a.png"), t / "nope.jpg"], "image not found"),
    "too many cells": (lambda t: [*_two_photos(t), "--max-cells", "3"],
                       "4 cells (2 photos × 1 × 2) is more than --max-cells 3"),
}


def _two_photos(folder: Path) -> list[Path]:
    return [noise_image(folder / "a.png"), noise_image(folder / "b.png", seed=2)]


def _unreadable_in(folder: Path) -> list[Path]:
    """A folder with a photo, a garbled .png and a text file (whose note must not make a
    second line), and the garbled file named again."""
    noise_image(folder / "a.png")
    _text(folder / "notes.txt")
    return [folder, _garbled(folder / "b.png")]


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("words\n")
    return path


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batches_exit_2_with_one_line_before_anything_is_written(case, tmp_path, capsys, renders):
    style = noise_image(tmp_path / "style.png", seed=9)
    made, message = BAD_BATCHES[case]
    given = [str(a) for a in made(tmp_path)]
    before = set(tmp_path.rglob("*"))
    code, stdout, stderr = run(capsys, "sweep", *given, "-s", style, "-o", tmp_path / "out", *TINY,
                               "--content-weight", "1,10")
    assert code == 2 and stdout == "" and renders == []
    assert stderr.count("\n") == 1 and stderr.startswith("impasto: error: "), stderr
    assert message in stderr
    assert set(tmp_path.rglob("*")) == before


def test_sweep_help_shows_a_batch(capsys):
    assert cli.main(["sweep", "--help"]) == 0
    out = capsys.readouterr().out
    assert "PHOTO [PHOTO ...]" in out and "a folder of photos" in out
    assert "impasto sweep photos/ grace_hopper.jpg" in out and "DIR/index.json" in out
