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
"""

from __future__ import annotations

import csv
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
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

from impasto import imaging
from impasto.engine.multiscale import render, schedule
from impasto.engine.params import RenderParams, describe
from impasto.engine.prints import crop_to_aspect, print_pixels
from impasto.engine.scale import extractor_for
from impasto.errors import OutputError, ParamError
from impasto.files import atomic_path
from impasto.scoring import Scorer

log = logging.getLogger(__name__)
# no loss lines or intermediates inside a sweep; --mask needs several styles per render, a cell has one
NOT_SWEPT = ("print_iter", "save_iter", "mask")
LIST_SEPARATOR = ";"
DEFAULT_MAX_CELLS = 200
INDEX_JSON, INDEX_CSV, SHEET, CELLS = "index.json", "index.csv", "sheet.png", "cells"
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


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ",".join(map(format_value, value))
    if isinstance(value, Path):
        return value.name
    return str(value)


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


@dataclass(frozen=True)
class Grid:
    photo: str
    cells: tuple[Cell, ...]
    axes: tuple[Axis, ...]     # the varying axes, "style" first when there are several styles
    columns: int               # the sheet's columns: the last varying axis


def check_count(options: SweepOptions, styles: int, max_cells: int = DEFAULT_MAX_CELLS) -> int:
    """The number of cells; a ParamError when there are none or more than ``max_cells``."""
    if styles < 1:
        raise ParamError("a sweep needs at least one style")
    count = styles * math.prod(len(axis.values) for axis in options.axes)
    if count > max_cells:
        shape = " × ".join(str(n) for n in [styles, *(len(a.values) for a in options.axes)])
        raise ParamError(f"{count} cells ({shape}) is more than --max-cells {max_cells}; "
                         f"narrow the ranges or raise --max-cells")
    return count


def build_grid(options: SweepOptions, content: torch.Tensor, styles: Sequence[StyleChoice], *,
               photo: str = "", max_cells: int = DEFAULT_MAX_CELLS) -> Grid:
    """Every cell of the grid, each validated (with its style's preset) before any render."""
    check_count(options, len(styles), max_cells)
    styles = _unique_names(styles)
    photo_key = image_digest(content)
    names = [axis.name for axis in options.axes]
    cells = []
    for style in styles:
        style_key = image_digest(style.image)
        for combo in itertools.product(*(axis.values for axis in options.axes)):
            values = dict(zip(names, combo))
            label = cell_label(style.name if len(styles) > 1 else None, values)
            params = _cell_params(style, options, values, label, content)
            cells.append(Cell(cell_id(photo_key, style_key, params), label, style, params, values))
    axes = ((Axis("style", tuple(s.name for s in styles)),) if len(styles) > 1 else ()) + options.axes
    columns = len(axes[-1].values) if axes else 1
    return Grid(photo, tuple(cells), axes, columns)


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


# --- running ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SweepProgress:
    iteration: int             # over every cell rendered in this run
    total: int
    cell: int                  # 1-based, among the cells rendered in this run
    cells: int
    label: str
    losses: dict[str, float]


SweepCallback = Callable[[SweepProgress], None]


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


class Sweep:
    """Renders a grid's unfinished cells into ``folder`` and keeps its index and sheet."""

    def __init__(self, grid: Grid, content: torch.Tensor, folder: Path | str, *, tile: int = 256,
                 scorer: Scorer | None = None):
        self.grid, self.content, self.folder = grid, content, check_folder(folder)
        self.tile = tile
        self.scorer = scorer or Scorer()
        self.records = load_records(self.folder)
        self._extractors: dict[tuple, Any] = {}

    def is_done(self, cell: Cell) -> bool:
        record = self.records.get(cell.id)
        return bool(record and record.get("status") == "done" and (self.folder / record["image"]).is_file())

    def pending(self) -> list[Cell]:
        return [cell for cell in self.grid.cells if not self.is_done(cell)]

    def run(self, callback: SweepCallback | None = None) -> list[dict]:
        """Render every pending cell; returns the grid's records (in grid order)."""
        try:
            (self.folder / CELLS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create the sweep folder ({exc})") from None
        todo = self.pending()
        estimates = [cell_iterations(cell.params, self.content) for cell in todo]
        total, done = sum(estimates), 0
        self.write()
        for number, (cell, estimate) in enumerate(zip(todo, estimates), 1):
            relay = _relay(callback, done, total, number, len(todo), cell.label)
            self._render_cell(cell, relay)
            done += estimate
            self.write()
        return self.grid_records()

    def _render_cell(self, cell: Cell, callback) -> None:
        started = time.perf_counter()
        params = cell.params
        init = imaging.load(params.init_image) if params.init_image else None
        image = render(self.content, [cell.style.image], params, callback, init_image=init,
                       extractor=self._extractor(params))
        path = imaging.save(image, self.folder / CELLS / f"{cell.id}.png",
                            dpi=params.dpi if params.print_size else None)
        photo = self.content
        if params.print_size:  # the render cropped the photo to the sheet: score against that
            photo = crop_to_aspect(photo, *image.shape[-2:])
        scores = self.scorer.score(image, photo, cell.style.image)
        record = _record(cell, "done", self.folder, path)
        record.update(scores={"style": round(scores.style, 4), "content": round(scores.content, 4)},
                      seconds=round(time.perf_counter() - started, 2))
        self.records[cell.id] = record
        log.info("cell %s (%s) done: style %.3f content %.3f", cell.id, cell.label, scores.style,
                 scores.content)

    def _extractor(self, params: RenderParams):
        """One extractor per network configuration, shared by every cell that uses it."""
        key = (params.model, tuple(params.content_layers), tuple(params.style_layers), params.pooling,
               str(params.weights), params.download, params.device, params.precision)
        if key not in self._extractors:
            self._extractors[key] = extractor_for(params)
        return self._extractors[key]

    def grid_records(self) -> list[dict]:
        """The grid's cells in order; a finished one keeps its scores and time, and takes
        this grid's label (a cell from an earlier grid may have been labelled otherwise)."""
        records = []
        for cell in self.grid.cells:
            record = _record(cell, "pending", self.folder)
            if self.is_done(cell):
                stored = self.records[cell.id]
                record.update(status="done", image=stored["image"], scores=stored["scores"],
                              seconds=stored["seconds"])
                self.records[cell.id] = record
            records.append(record)
        return records

    def write(self) -> None:
        """The index (JSON and CSV) and the contact sheet, as things stand."""
        cells = self.grid_records()
        ids = {cell.id for cell in self.grid.cells}
        earlier = [r for key, r in sorted(self.records.items()) if key not in ids
                   and r.get("status") == "done" and (self.folder / r["image"]).is_file()]
        write_index(self.folder, self.grid, cells, earlier)
        imaging.save(contact_sheet(self.grid, cells, self.folder, self.content, tile=self.tile),
                     self.folder / SHEET)


def _relay(callback: SweepCallback | None, done: int, total: int, number: int, count: int, label: str):
    if callback is None:
        return None

    def report(progress) -> None:
        callback(SweepProgress(min(done + progress.iteration, total), total, number, count, label,
                               progress.losses))
    return report


def best(records: Sequence[dict]) -> dict | None:
    """The finished cell with the highest style + content score (both are 0..1)."""
    scored = [r for r in records if r.get("scores")]
    return max(scored, key=lambda r: r["scores"]["style"] + r["scores"]["content"], default=None)


# --- the index --------------------------------------------------------------------------

def _record(cell: Cell, status: str, folder: Path, path: Path | None = None) -> dict:
    return {"id": cell.id, "label": cell.label, "status": status, "style": cell.style.name,
            "style_source": cell.style.source,
            "values": {name: _jsonable(value) for name, value in cell.values.items()},
            "image": str((path or folder / CELLS / f"{cell.id}.png").relative_to(folder)),
            "scores": None, "seconds": None, "params": cell.params.model_dump(mode="json")}


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def load_records(folder: Path) -> dict[str, dict]:
    """The records of an earlier sweep in ``folder``, by id (none when there is no index)."""
    path = folder / INDEX_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        records = [*data["cells"], *data.get("earlier", [])]
        return {r["id"]: r for r in records if r["status"] == "done" and r.get("image")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: unreadable sweep index ({exc}); move it away to start over") from None


def write_index(folder: Path, grid: Grid, cells: list[dict], earlier: list[dict]) -> None:
    data = {"version": 1, "photo": grid.photo,
            "axes": [{"name": a.name, "values": [_jsonable(v) for v in a.values]} for a in grid.axes],
            "cells": cells, "earlier": earlier}
    with atomic_path(folder / INDEX_JSON) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
    swept = [axis.name for axis in grid.axes if axis.name != "style"]
    with atomic_path(folder / INDEX_CSV) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "status", "style", *swept, "style_score", "content_score",
                         "seconds", "image"])
        for r in cells:
            scores = r["scores"] or {}
            writer.writerow([r["id"], r["label"], r["status"], r["style"],
                             *(format_value(r["values"][name]) for name in swept),
                             scores.get("style", ""), scores.get("content", ""), r["seconds"] or "",
                             r["image"]])


# --- the contact sheet ------------------------------------------------------------------

PAD, LINE, MIN_SHEET_WIDTH = 8, 17, 480
FRAME = (200, 30, 30)


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):   # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def _thumb(image: Image.Image | torch.Tensor, side: int) -> Image.Image:
    """``image`` scaled (up or down) so its longest side is ``side``."""
    picture = imaging.to_pil(image) if isinstance(image, torch.Tensor) else image.convert("RGB")
    scale = side / max(picture.size)
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                          Image.LANCZOS)


def contact_sheet(grid: Grid, records: list[dict], folder: Path, photo: torch.Tensor, *,
                  tile: int = 256) -> Image.Image:
    """A header (the photo, the styles, how many cells are done), then one labelled, scored
    thumbnail per cell: a row per combination of all axes but the last, whose values are the
    columns. The best cell by style + content is framed in red."""
    font, columns = _font(), max(1, grid.columns)
    rows = -(-len(records) // columns)
    cell_w, cell_h = tile + PAD, tile + 2 * LINE + PAD
    small = max(48, tile // 2)
    head_h = PAD + LINE + small + LINE + PAD
    width = max(columns * cell_w + PAD, MIN_SHEET_WIDTH)
    sheet = Image.new("RGB", (width, head_h + rows * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    done = sum(r["status"] == "done" for r in records)
    title = f"{grid.photo or 'photo'} · {done}/{len(records)} cells done · captions: style and content scores"
    draw.text((PAD, PAD), _fit_text(draw, title, font, width - 2 * PAD), fill="black", font=font)
    styles = {cell.style.name: cell.style.image for cell in grid.cells}
    for index, (name, image) in enumerate([("photo", photo), *styles.items()]):
        x = PAD + index * (small + PAD)
        if x + small > width:
            break
        sheet.paste(_thumb(image, small), (x, PAD + LINE))
        draw.text((x, PAD + LINE + small + 2), _fit_text(draw, name, font, small), fill="black", font=font)
    top = best(records)
    for index, record in enumerate(records):
        row, column = divmod(index, columns)
        _draw_cell(sheet, draw, font, record, folder, (PAD + column * cell_w, head_h + row * cell_h),
                   tile, framed=record is top)
    return sheet


def _draw_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, font, record: dict, folder: Path,
               at: tuple[int, int], tile: int, *, framed: bool) -> None:
    x, y = at
    draw.text((x, y), _fit_text(draw, record["label"], font, tile), fill="black", font=font)
    if record["status"] != "done":
        draw.rectangle((x, y + LINE, x + tile - 1, y + LINE + tile - 1), fill=(228, 228, 228))
        draw.text((x + 6, y + LINE + 6), "pending", fill=(90, 90, 90), font=font)
        return
    with Image.open(folder / record["image"]) as image:
        thumb = _thumb(image, tile)
    sheet.paste(thumb, (x, y + LINE))
    if framed:
        draw.rectangle((x - 3, y + LINE - 3, x + thumb.width + 2, y + LINE + thumb.height + 2),
                       outline=FRAME, width=3)
    style, content = record["scores"]["style"], record["scores"]["content"]
    caption = f"style {style:.2f} · content {content:.2f}"
    if draw.textlength(caption, font=font) > tile:
        caption = f"{style:.2f} · {content:.2f}"
    draw.text((x, y + LINE + thumb.height + 3), caption, fill=(60, 60, 60), font=font)
