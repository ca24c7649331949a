"""Batches: several photos, or folders of them, × one sweep grid (styles × options).

Every photo gets the same grid; all cells go to one ``cells/`` folder, named by the hash of
photo, style and options, so a cell is rendered once whatever batch or grid asks for it
again. The batch folder holds::

    cells/<id>.png          every finished cell
    <photo>/sheet.png       each photo's contact sheet, with its index.json and index.csv
    index.json              every photo's cells (and earlier cells), the one file read back
    index.csv               one row per cell, the photo's name first
    index.png               the index sheet: a block per photo, its cells, its best framed

A photo's folder is named by its file's stem; stems that clash (``a/portrait.jpg`` and
``b/portrait.png``, or ``Portrait`` and ``portrait`` on a case-blind disk) get the start
of the photo's pixel digest (``portrait-1f0c3a9e``), so a name does not depend on the
order the photos were given in. Photos are read twice: once to check every one and build
its grid before anything renders, and again when its cells render, so a folder of large
photos is never in memory all at once. This module prints nothing.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from impasto import imaging
from impasto.errors import ImageError
from impasto.files import atomic_path
from impasto.scoring import Scorer
from impasto.sheets import index_sheet, thumb
from impasto.sweep import (Cell, CellStore, Grid, StyleChoice, Sweep, SweepCallback, SweepOptions, Tally,
                           build_grid, cell_cost)
from impasto.sweep_index import CELLS, INDEX_CSV, INDEX_JSON, SHEET, axes_json, csv_row, write_view

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
INDEX_SHEET = "index.png"
RESERVED = {CELLS}   # names a photo's folder may not take


@dataclass(frozen=True)
class Inputs:
    photos: tuple[str, ...]    # in order: as given, each folder's images sorted by name
    skipped: tuple[str, ...]   # files in the folders that are not images
    batch: bool                # a folder or several photos: the batch layout


def collect_photos(sources: Sequence[Path | str]) -> Inputs:
    """The photos ``sources`` name: files as given, a folder's images (by suffix) sorted by
    name, not recursing; hidden files are passed over, other files and folders are
    ``skipped``; a photo named twice counts once. A folder with no image is an ImageError."""
    photos, skipped, seen, folders = [], [], set(), False
    for source in sources:
        path = Path(source)
        if str(source).startswith(imaging.SAMPLE_PREFIX) or not path.is_dir():
            found = [str(source)]
        else:
            folders = True
            entries = sorted((p for p in path.iterdir() if not p.name.startswith(".")),
                             key=lambda p: (p.name.casefold(), p.name))
            found = [str(p) for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            skipped += [str(p) for p in entries if str(p) not in found]
            if not found:
                raise ImageError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
        for photo in found:
            key = photo if photo.startswith(imaging.SAMPLE_PREFIX) else str(Path(photo).resolve())
            if key not in seen:
                seen.add(key)
                photos.append(photo)
    return Inputs(tuple(photos), tuple(skipped), folders or len(photos) > 1)


@dataclass(frozen=True)
class Photo:
    source: str                 # the path as given (or sample:NAME)
    name: str                   # its folder in the batch
    grid: Grid
    picture: Image.Image        # a thumbnail for the sheets
    costs: dict[str, tuple[int, float]]   # (iterations, work) by cell id


def prepare(sources: Sequence[str], options: SweepOptions, styles: Sequence[StyleChoice], *,
            max_cells: int, tile: int = 256) -> list[Photo]:
    """Read every photo and build its grid (every cell checked) before anything renders; a
    photo that cannot be read is an ImageError naming it."""
    loaded = []
    for source in sources:
        content = imaging.load(source)
        grid = build_grid(options, content, styles, photo=str(source), max_cells=max_cells)
        costs = {cell.id: cell_cost(cell.params, content) for cell in grid.cells}
        loaded.append((source, grid, thumb(content, tile), costs))
    names = photo_names([source for source, *_ in loaded], [grid.key for _, grid, *_ in loaded])
    return [Photo(source, name, grid, picture, costs)
            for name, (source, grid, picture, costs) in zip(names, loaded)]


def photo_names(sources: Sequence[str], keys: Sequence[str]) -> list[str]:
    """Each photo's folder name: its stem, or where stems clash (ignoring case) or take a
    reserved name, the stem and the start of the photo's digest; then -2, -3 for copies."""
    stems = [Path(str(s).removeprefix(imaging.SAMPLE_PREFIX)).stem or "photo" for s in sources]
    folded = [stem.casefold() for stem in stems]
    names = [f"{stem}-{key[:8]}" if folded.count(stem.casefold()) > 1 or stem.casefold() in RESERVED
             else stem for stem, key in zip(stems, keys)]
    unique, taken = [], set()
    for name in names:
        candidate, number = name, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{name}-{number}"
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique


class Batch:
    """Renders the unfinished cells of every photo's grid into ``folder``, keeping each
    photo's sheet and index and the batch's index and index sheet after every cell."""

    def __init__(self, photos: Sequence[Photo], folder: Path | str, *, tile: int = 256,
                 scorer: Scorer | None = None):
        self.photos, self.tile = list(photos), tile
        self.store = CellStore(folder)
        self.folder = self.store.root
        self.scorer = scorer or Scorer()

    def pending(self) -> list[tuple[int, Cell]]:
        """(photo index, cell) of every cell to render, each id once, in photo order."""
        todo, seen = [], set()
        for index, photo in enumerate(self.photos):
            for cell in photo.grid.cells:
                if cell.id not in seen and not self.store.is_done(cell):
                    seen.add(cell.id)
                    todo.append((index, cell))
        return todo

    def cells(self) -> int:
        return sum(len(photo.grid.cells) for photo in self.photos)

    def done(self) -> int:
        return sum(self.store.is_done(cell) for photo in self.photos for cell in photo.grid.cells)

    def run(self, callback: SweepCallback | None = None) -> list[list[dict]]:
        """Render every pending cell; returns each photo's records (in grid order)."""
        self.store.prepare()
        todo = self.pending()
        tally = Tally([self.photos[index].costs[cell.id] for index, cell in todo], callback)
        self.write()
        runner = None
        for index, cell in todo:
            photo = self.photos[index]
            if runner is None or runner.grid is not photo.grid:
                runner = None   # the last photo's pixels go before the next one's are read
                runner = Sweep(photo.grid, imaging.load(photo.source), self.folder / photo.name,
                               tile=self.tile, scorer=self.scorer, store=self.store)
            relay = tally.start(cell.label, photo.costs[cell.id], photo=index + 1, photos=len(self.photos))
            runner.render_cell(cell, relay)
            self.write(only=index)
            tally.finish()
        if todo:
            self.write()   # a photo whose cells another photo rendered (the same pixels) shows them
        return [self.store.grid_records(photo.grid) for photo in self.photos]

    def write(self, *, only: int | None = None) -> None:
        """Each photo's sheet and index (or photo ``only``'s), then the batch's index files."""
        records = [self.store.grid_records(photo.grid) for photo in self.photos]
        for index, (photo, cells) in enumerate(zip(self.photos, records)):
            if only is None or index == only:
                write_view(self.folder / photo.name, self.folder, photo.grid, cells, self._earlier(photo),
                           photo.picture, tile=self.tile)
        self._write_index(records)
        sheet = index_sheet([(p.name, p.picture, cells) for p, cells in zip(self.photos, records)],
                            self.folder, tile=self.tile)
        imaging.save(sheet, self.folder / INDEX_SHEET)

    def _earlier(self, photo: Photo) -> list[dict]:
        return self.store.earlier({cell.id for cell in photo.grid.cells}, photo.grid.key)

    def _write_index(self, records: list[list[dict]]) -> None:
        current = {cell.id for photo in self.photos for cell in photo.grid.cells}
        keys = {photo.grid.key for photo in self.photos}
        others = [r for r in self.store.earlier(current) if r.get("photo_key") not in keys]
        photos = [{"name": photo.name, "photo": photo.source, "photo_key": photo.grid.key,
                   "sheet": f"{photo.name}/{SHEET}", "index": f"{photo.name}/{INDEX_JSON}",
                   "cells": cells, "earlier": self._earlier(photo)}
                  for photo, cells in zip(self.photos, records)]
        axes = axes_json(self.photos[0].grid) if self.photos else []
        data = {"version": 1, "kind": "batch", "axes": axes, "photos": photos, "earlier": others}
        with atomic_path(self.folder / INDEX_JSON) as tmp:
            Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
        swept = [axis["name"] for axis in axes if axis["name"] != "style"]
        with atomic_path(self.folder / INDEX_CSV) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["photo", "id", "label", "status", "style", *swept, "style_score",
                             "content_score", "seconds", "image"])
            for photo, cells in zip(self.photos, records):
                writer.writerows([photo.name, *csv_row(record, swept)] for record in cells)
