"""Sweeps: render a grid of options, score every cell, and resume where a sweep stopped.

Any ``RenderParams`` field given as a comma-separated list (``content_weight="1,5,10"``)
is an axis; list-valued fields (``style_layers``) take ``;``-separated lists. Every
combination of the axes with every style is a *cell*. A cell's id is a hash of the photo's
pixels, the style's pixels and the cell's full options, so a cell rendered once — in this
grid or an earlier one in the same folder — is never rendered again while its PNG is there.

The output folder holds::

    cells/<id>.png   one image per finished cell (written atomically)
    index.json       the grid: each cell's label, options, status, scores and time
    index.csv        the same, one row per cell, the swept options as columns
    sheet.png        a labelled contact sheet: rows and columns follow the axes

The index and the sheet are rewritten after every cell, so an interrupted sweep loses at
most the cell it was rendering. This module prints nothing; progress goes to a callback.
A batch of several photos (``impasto.batch``) shares one ``CellStore`` (``cells/`` and the
records of the cells in it) among one grid per photo; the sheets are drawn in ``sheets.py``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from impasto import imaging
from impasto.engine.multiscale import render, schedule
from impasto.engine.params import RenderParams, describe
from impasto.engine.prints import crop_to_aspect, print_pixels
from impasto.engine.scale import extractor_for
from impasto.errors import OutputError, ParamError
from impasto.scoring import Scorer
# re-exported too: the CLI and the tests use sweep.best, sweep.CELLS, sweep.contact_sheet, …
from impasto.sheets import best, contact_sheet  # noqa: F401
from impasto.sweep_index import (CELLS, INDEX_CSV, INDEX_JSON, SHEET, format_value,  # noqa: F401
                                 load_records, make_record, write_index, write_view)

log = logging.getLogger(__name__)
# no loss lines or intermediates inside a sweep; --mask needs several styles per render, a cell has one
NOT_SWEPT = ("print_iter", "save_iter", "mask")
LIST_SEPARATOR = ";"
DEFAULT_MAX_CELLS = 200
PHOTO_KEY_LENGTH = 16
ABBREVIATIONS = {"content_weight": "cw", "style_weight": "sw", "tv_weight": "tv", "image_size": "px",
                 "num_iterations": "it", "learning_rate": "lr", "style_scale": "ss", "seed": "seed"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_list_field(name: str) -> bool:
    annotation = RenderParams.model_fields[name].annotation
    kinds = typing.get_args(annotation) if typing.get_origin(annotation) is not list else (annotation,)
    return any(typing.get_origin(kind) is list for kind in kinds)


# --- options → axes --------------------------------------------------------------------

@dataclass(frozen=True)
class Axis:
    name: str           # a RenderParams field, or "style"
    values: tuple       # validated values, in the order given


@dataclass(frozen=True)
class SweepOptions:
    fixed: dict[str, Any]       # fields given one value
    axes: tuple[Axis, ...]      # fields given two or more values, in RenderParams' field order


def parse_options(raw: Mapping[str, str]) -> SweepOptions:
    """Split and validate ``{"content_weight": "1,5,10", ...}``; a bad value is a one-line
    ParamError naming the flag and the value (``--style-weight -5: …``)."""
    unknown = [name for name in raw if name not in RenderParams.model_fields or name in NOT_SWEPT]
    if unknown:
        raise ParamError(f"{flag(unknown[0])}: not an option a sweep takes")
    parts = {name: _split(name, str(text)) for name, text in raw.items()}
    # Each field's first value, checked together: a fixed value that is wrong on its own
    # or with the others fails here, named by its flag; then each further value in turn.
    anchor = {name: values[0] for name, values in parts.items()}
    first = _build(anchor, {name: _text(values[0]) for name, values in parts.items()})
    fixed = {name: getattr(first, name) for name, values in parts.items() if len(values) == 1}
    axes = []
    for name in RenderParams.model_fields:
        if name in parts and len(parts[name]) > 1:
            axes.append(Axis(name, _axis_values(name, parts[name], anchor)))
    return SweepOptions(fixed, tuple(axes))


def _split(name: str, text: str) -> list:
    listed = is_list_field(name)
    separator = LIST_SEPARATOR if listed else ","
    parts = [part.strip() for part in text.split(separator)]
    if any(not part for part in parts) or (listed and any(not item.strip() for part in parts
                                                          for item in part.split(","))):
        how = "lists are ;-separated, their items comma-separated" if listed else "values are comma-separated"
        raise ParamError(f"{flag(name)} {text}: an empty value ({how})")
    return [[item.strip() for item in part.split(",")] for part in parts] if listed else parts


def _text(part: Any) -> str:
    return ",".join(part) if isinstance(part, list) else str(part)


def _axis_values(name: str, parts: list, anchor: dict) -> tuple:
    values = []
    for part in parts:
        value = getattr(_build({**anchor, name: part}, {name: _text(part)}), name)
        if value in values:
            raise ParamError(f"{flag(name)}: the value {format_value(value)} is given twice")
        values.append(value)
    return tuple(values)


def _build(options: dict, texts: Mapping[str, str]) -> RenderParams:
    """RenderParams(**options); the first error names the flag and the value as typed."""
    try:
        return RenderParams(**options)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else None
        if name in texts:
            message = error["msg"].removeprefix("Value error, ")
            raise ParamError(f"{flag(name)} {texts[name]}: {message}") from None
        raise ParamError(describe(exc)) from None


# --- styles, cells and the grid ----------------------------------------------------------

@dataclass(frozen=True)
class StyleChoice:
    name: str                  # its label: the file's stem or the catalog name
    source: str                # the path, or catalog:NAME (kept in the index)
    image: torch.Tensor = field(repr=False)
    preset: dict = field(default_factory=dict)   # a catalog style's options


@dataclass(frozen=True)
class Cell:
    id: str
    label: str
    style: StyleChoice
    params: RenderParams
    values: dict[str, Any]     # the swept fields' values in this cell
    photo_key: str = ""        # the start of the photo's pixel digest (a batch's cells say whose they are)


@dataclass(frozen=True)
class Grid:
    photo: str
    cells: tuple[Cell, ...]
    axes: tuple[Axis, ...]     # the varying axes, "style" first when there are several styles
    columns: int               # the sheet's columns: the last varying axis
    key: str = ""              # the start of the photo's pixel digest


def check_count(options: SweepOptions, styles: int, max_cells: int = DEFAULT_MAX_CELLS, *,
                photos: int = 1) -> int:
    """The number of cells over ``photos`` photos; a ParamError when there are none or more
    than ``max_cells``."""
    if styles < 1:
        raise ParamError("a sweep needs at least one style")
    count = photos * styles * math.prod(len(axis.values) for axis in options.axes)
    if count > max_cells:
        shape = " × ".join(str(n) for n in [styles, *(len(a.values) for a in options.axes)])
        shape = f"{photos} photos × {shape}" if photos > 1 else shape
        raise ParamError(f"{count} cells ({shape}) is more than --max-cells {max_cells}; "
                         f"narrow the ranges or raise --max-cells")
    return count


def build_grid(options: SweepOptions, content: torch.Tensor, styles: Sequence[StyleChoice], *,
               photo: str = "", max_cells: int = DEFAULT_MAX_CELLS) -> Grid:
    """Every cell of the grid, each validated (with its style's preset) before any render."""
    check_count(options, len(styles), max_cells)
    styles = _unique_names(styles)
    photo_key = image_digest(content)
    key = photo_key[:PHOTO_KEY_LENGTH]
    names = [axis.name for axis in options.axes]
    cells = []
    for style in styles:
        style_key = image_digest(style.image)
        for combo in itertools.product(*(axis.values for axis in options.axes)):
            values = dict(zip(names, combo))
            label = cell_label(style.name if len(styles) > 1 else None, values)
            params = _cell_params(style, options, values, label, content)
            cells.append(Cell(cell_id(photo_key, style_key, params), label, style, params, values, key))
    axes = ((Axis("style", tuple(s.name for s in styles)),) if len(styles) > 1 else ()) + options.axes
    columns = len(axes[-1].values) if axes else 1
    return Grid(photo, tuple(cells), axes, columns, key)


def _unique_names(styles: Sequence[StyleChoice]) -> list[StyleChoice]:
    seen: dict[str, int] = {}
    unique = []
    for style in styles:
        seen[style.name] = seen.get(style.name, 0) + 1
        count = seen[style.name]
        unique.append(style if count == 1 else replace(style, name=f"{style.name}-{count}"))
    return unique


def _cell_params(style: StyleChoice, options: SweepOptions, values: dict, label: str,
                 content: torch.Tensor) -> RenderParams:
    try:
        params = RenderParams.build(**{**style.preset, **options.fixed, **values})
        params.blend_weights(1)
        cell_iterations(params, content)   # the schedule's own checks (--scales, …)
    except ParamError as exc:
        raise ParamError(f"cell {label}: {exc}") from None
    return params


def cell_label(style: str | None, values: Mapping[str, Any]) -> str:
    """``starry cw=5 sw=100``: the style (when several) and the swept values."""
    parts = [style] if style else []
    parts += [f"{ABBREVIATIONS.get(name, name.replace('_', '-'))}={format_value(value)}"
              for name, value in values.items()]
    return " ".join(parts) or "cell"


def image_digest(image: torch.Tensor) -> str:
    pixels = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def cell_id(photo_key: str, style_key: str, params: RenderParams) -> str:
    """A short stable id: same photo, style and options, same id (in any grid)."""
    options = params.model_dump(mode="json", exclude=set(NOT_SWEPT))
    text = json.dumps({"photo": photo_key, "style": style_key, "params": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cell_iterations(params: RenderParams, content: torch.Tensor) -> int:
    """The iterations ``render`` will report for ``params`` (print sizes as it sizes them)."""
    if params.print_size:
        height, width = print_pixels(params.print_size, params.dpi, *content.shape[-2:])
        params = params.model_copy(update={"print_size": None, "image_size": max(height, width)})
    return sum(scale.iterations for scale in schedule(params))


def cell_cost(params: RenderParams, content: torch.Tensor) -> tuple[int, float]:
    """(iterations, work) of a cell: work is iterations × pixels summed over its scales, what
    the ETA is measured in (cells of different sizes take different times an iteration)."""
    height, width = content.shape[-2:]
    if params.print_size:
        height, width = print_pixels(params.print_size, params.dpi, height, width)
        params = params.model_copy(update={"print_size": None, "image_size": max(height, width)})
    aspect = min(height, width) / max(height, width)
    scales = schedule(params)
    work = sum(scale.iterations * scale.size * scale.size * aspect for scale in scales)
    return sum(scale.iterations for scale in scales), float(work)


# --- running ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepProgress:
    iteration: int             # over every cell rendered in this run
    total: int
    cell: int                  # 1-based, among the cells rendered in this run
    cells: int
    label: str
    losses: dict[str, float]
    photo: int = 1             # 1-based, the photo of this cell among a batch's photos
    photos: int = 1
    eta: float | None = None   # seconds left, measured from the cells finished in this run


SweepCallback = Callable[[SweepProgress], None]


class Tally:
    """Counts a run's iterations and cells and estimates the time left from the finished
    cells: their seconds per unit of work (``cell_cost``) times the work still to do (the
    cell being rendered counted by the share of its iterations still to run)."""

    def __init__(self, costs: Sequence[tuple[int, float]], callback: SweepCallback | None):
        self.callback, self.cells = callback, len(costs)
        self.total = sum(iterations for iterations, _ in costs)
        self.work_left = sum(work for _, work in costs)
        self.iterations_done, self.work_done, self.seconds, self.cell = 0, 0.0, 0.0, 0
        self.current, self.started = (0, 0.0), 0.0

    def start(self, label: str, cost: tuple[int, float], *, photo: int = 1, photos: int = 1):
        """The engine callback for the next cell (None without a callback)."""
        self.cell, self.current, self.started = self.cell + 1, cost, time.perf_counter()
        if self.callback is None:
            return None
        number, callback = self.cell, self.callback

        def report(progress) -> None:
            eta = self.eta(min(1.0, progress.fraction))   # the cell's share of its pixel-work done
            callback(SweepProgress(min(self.iterations_done + progress.iteration, self.total), self.total,
                                   number, self.cells, label, progress.losses, photo, photos, eta))
        return report

    def finish(self) -> None:
        iterations, work = self.current
        self.iterations_done += iterations
        self.work_done, self.work_left = self.work_done + work, self.work_left - work
        self.seconds += time.perf_counter() - self.started

    def eta(self, share: float = 0.0) -> float | None:
        """Seconds left when ``share`` of the current cell's iterations are done."""
        if self.work_done <= 0:
            return None
        return max(0.0, self.seconds / self.work_done * (self.work_left - share * self.current[1]))


def check_folder(path: Path | str) -> Path:
    """The output folder: may exist (a sweep to resume) or be made in an existing folder."""
    path = Path(path)
    parent = path.resolve().parent
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder")
    if not path.exists() and not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise OutputError(f"{path}: not writable")
    return path


class CellStore:
    """A sweep folder's finished cells: ``cells/<id>.png`` and their records (read from its
    index.json), by id, and the feature extractors its renders share. Image paths in the
    records are relative to ``root``."""

    def __init__(self, root: Path | str):
        self.root = check_folder(root)
        self.records = load_records(self.root)
        self.extractors: dict[tuple, Any] = {}

    def prepare(self) -> None:
        try:
            (self.root / CELLS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot create the sweep folder ({exc})") from None

    def has_image(self, record: dict) -> bool:
        return record.get("status") == "done" and (self.root / record["image"]).is_file()

    def is_done(self, cell: Cell) -> bool:
        record = self.records.get(cell.id)
        return bool(record and self.has_image(record))

    def grid_records(self, grid: Grid) -> list[dict]:
        """The grid's cells in order; a finished one keeps its scores and time, and takes
        this grid's label (a cell from an earlier grid may have been labelled otherwise)."""
        records = []
        for cell in grid.cells:
            record = make_record(cell, "pending", self.root)
            if self.is_done(cell):
                stored = self.records[cell.id]
                record.update(status="done", image=stored["image"], scores=stored["scores"],
                              seconds=stored["seconds"])
                self.records[cell.id] = record
            records.append(record)
        return records

    def earlier(self, exclude: set[str], photo_key: str | None = None) -> list[dict]:
        """Finished cells not in ``exclude`` (by id), of the photo ``photo_key`` if given."""
        return [r for key, r in sorted(self.records.items()) if key not in exclude and self.has_image(r)
                and (photo_key is None or r.get("photo_key") == photo_key)]

    def extractor(self, params: RenderParams):
        """One extractor per network configuration, shared by every cell that uses it."""
        key = (params.model, tuple(params.content_layers), tuple(params.style_layers), params.pooling,
               str(params.weights), params.download, params.device, params.precision)
        if key not in self.extractors:
            self.extractors[key] = extractor_for(params)
        return self.extractors[key]


class Sweep:
    """Renders a grid's unfinished cells into ``folder`` and keeps its index and sheet.
    With a ``store`` (a batch's), cells go to the store's folder and ``folder`` is where
    this photo's index and sheet are written."""

    def __init__(self, grid: Grid, content: torch.Tensor, folder: Path | str, *, tile: int = 256,
                 scorer: Scorer | None = None, store: CellStore | None = None):
        self.grid, self.content = grid, content
        self.store = store or CellStore(folder)
        self.folder = self.store.root if store is None else Path(folder)
        self.tile = tile
        self.scorer = scorer or Scorer()

    @property
    def records(self) -> dict[str, dict]:
        return self.store.records

    def is_done(self, cell: Cell) -> bool:
        return self.store.is_done(cell)

    def pending(self) -> list[Cell]:
        return [cell for cell in self.grid.cells if not self.is_done(cell)]

    def run(self, callback: SweepCallback | None = None) -> list[dict]:
        """Render every pending cell; returns the grid's records (in grid order)."""
        self.store.prepare()
        todo = self.pending()
        costs = [cell_cost(cell.params, self.content) for cell in todo]
        tally = Tally(costs, callback)
        self.write()
        for cell, cost in zip(todo, costs):
            self.render_cell(cell, tally.start(cell.label, cost))
            self.write()
            tally.finish()
        return self.grid_records()

    def render_cell(self, cell: Cell, callback) -> None:
        """Render, save and score one cell, and keep its record in the store."""
        started = time.perf_counter()
        params, root = cell.params, self.store.root
        init = imaging.load(params.init_image) if params.init_image else None
        image = render(self.content, [cell.style.image], params, callback, init_image=init,
                       extractor=self.store.extractor(params))
        path = imaging.save(image, root / CELLS / f"{cell.id}.png",
                            dpi=params.dpi if params.print_size else None)
        photo = self.content
        if params.print_size:  # the render cropped the photo to the sheet: score against that
            photo = crop_to_aspect(photo, *image.shape[-2:])
        scores = self.scorer.score(image, photo, cell.style.image)
        record = make_record(cell, "done", root, path)
        record.update(scores={"style": round(scores.style, 4), "content": round(scores.content, 4)},
                      seconds=round(time.perf_counter() - started, 2))
        self.records[cell.id] = record
        log.info("cell %s (%s) done: style %.3f content %.3f", cell.id, cell.label, scores.style,
                 scores.content)

    def grid_records(self) -> list[dict]:
        return self.store.grid_records(self.grid)

    def write(self) -> None:
        """The index (JSON and CSV) and the contact sheet, as things stand; the index keeps
        every other finished cell in the folder as ``earlier``."""
        cells = self.grid_records()
        earlier = self.store.earlier({cell.id for cell in self.grid.cells})
        write_view(self.folder, self.store.root, self.grid, cells, earlier, self.content, tile=self.tile)
