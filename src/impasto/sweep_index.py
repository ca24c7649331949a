"""A sweep's index: each cell's record, index.json and index.csv, read back to resume.

A record says a cell's id, label, status, style, photo (``photo_key``), swept values, image
(a path relative to the folder the index is in), scores, seconds and full options. One
photo's sweep writes its index into its own folder; a batch writes one per photo into
``<photo>/`` (image paths ``../cells/<id>.png``) and its own ``index.json`` listing them
all (``impasto.batch``): ``load_records`` reads either.
"""

from __future__ import annotations

import csv
import json
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from impasto import imaging
from impasto.errors import OutputError
from impasto.files import atomic_path
from impasto.sheets import contact_sheet

if typing.TYPE_CHECKING:
    import torch
    from PIL import Image

    from impasto.sweep import Cell, Grid

INDEX_JSON, INDEX_CSV, SHEET, CELLS = "index.json", "index.csv", "sheet.png", "cells"


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


def make_record(cell: Cell, status: str, folder: Path, path: Path | None = None) -> dict:
    return {"id": cell.id, "label": cell.label, "status": status, "style": cell.style.name,
            "style_source": cell.style.source, "photo_key": cell.photo_key,
            "values": {name: jsonable(value) for name, value in cell.values.items()},
            "image": str((path or folder / CELLS / f"{cell.id}.png").relative_to(folder)),
            "scores": None, "seconds": None, "params": cell.params.model_dump(mode="json")}


def jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def load_records(folder: Path) -> dict[str, dict]:
    """The finished records of an earlier sweep or batch in ``folder``, by id (none when
    there is no index). A batch's index.json lists them under each photo."""
    path = folder / INDEX_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        groups = data["photos"] if "photos" in data else [data]
        records = [*(r for group in groups for r in [*group["cells"], *group.get("earlier", [])]),
                   *(data.get("earlier", []) if "photos" in data else [])]
        return {r["id"]: r for r in records if r["status"] == "done" and r.get("image")}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"{path}: unreadable sweep index ({exc}); move it away to start over") from None


def rebased(records: Sequence[dict], root: Path, folder: Path) -> list[dict]:
    """``records`` (image paths relative to ``root``) with image paths relative to ``folder``."""
    if Path(folder).resolve() == Path(root).resolve():
        return list(records)
    return [{**r, "image": Path(os.path.relpath(root / r["image"], folder)).as_posix()} for r in records]


def write_view(folder: Path, root: Path, grid: Grid, cells: list[dict], earlier: list[dict],
               photo: torch.Tensor | Image.Image, *, tile: int = 256) -> None:
    """A grid's index.json, index.csv and sheet.png in ``folder``; the records' images are in
    ``root`` (the same folder for one photo, the batch's folder for a batch's photo)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({exc})") from None
    write_index(folder, grid, rebased(cells, root, folder), rebased(earlier, root, folder))
    imaging.save(contact_sheet(grid, cells, root, photo, tile=tile), Path(folder) / SHEET)


def write_index(folder: Path, grid: Grid, cells: list[dict], earlier: list[dict]) -> None:
    data = {"version": 1, "photo": grid.photo, "axes": axes_json(grid), "cells": cells, "earlier": earlier}
    with atomic_path(folder / INDEX_JSON) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
    swept = [axis.name for axis in grid.axes if axis.name != "style"]
    with atomic_path(folder / INDEX_CSV) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "status", "style", *swept, "style_score", "content_score",
                         "seconds", "image"])
        for r in cells:
            writer.writerow(csv_row(r, swept))


def axes_json(grid: Grid) -> list[dict]:
    return [{"name": a.name, "values": [jsonable(v) for v in a.values]} for a in grid.axes]


def csv_row(record: dict, swept: Sequence[str]) -> list:
    """One cell's row: id, label, status, style, the swept values, scores, seconds, image."""
    scores = record["scores"] or {}
    return [record["id"], record["label"], record["status"], record["style"],
            *(format_value(record["values"][name]) for name in swept),
            scores.get("style", ""), scores.get("content", ""), record["seconds"] or "", record["image"]]
