"""Contact sheets: a sweep's cells laid out, labelled and scored, and a batch's index sheet.

Drawn with Pillow's default font (FreeType at 13 px where Pillow has it); every label is
shortened with "…" to its tile's width, so nothing is cut off at a tile's edge.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from impasto import imaging

if typing.TYPE_CHECKING:
    from impasto.sweep import Grid

PAD, LINE, MIN_SHEET_WIDTH = 8, 17, 480
FRAME = (200, 30, 30)
RULE = (200, 200, 200)
INDEX_COLUMNS = 8   # cells a line on the index sheet; a photo's further cells wrap under them


def best(records: Sequence[dict]) -> dict | None:
    """The finished cell with the highest style + content score (both are 0..1)."""
    scored = [r for r in records if r.get("scores")]
    return max(scored, key=lambda r: r["scores"]["style"] + r["scores"]["content"], default=None)


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):   # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…"
    return text


def _fit_text_left(draw: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """``text`` shortened at its start (``…/content/photo.jpg``) to ``width``."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = "…" + text[2:]
    return text


def thumb(image: Image.Image | torch.Tensor, side: int) -> Image.Image:
    """``image`` scaled (up or down) so its longest side is ``side``."""
    picture = imaging.to_pil(image) if isinstance(image, torch.Tensor) else image.convert("RGB")
    scale = side / max(picture.size)
    return picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                          Image.LANCZOS)


def contact_sheet(grid: Grid, records: list[dict], folder: Path, photo: Image.Image | torch.Tensor, *,
                  tile: int = 256) -> Image.Image:
    """A header (the photo, the styles, how many cells are done), then one labelled, scored
    thumbnail per cell: a row per combination of all axes but the last, whose values are the
    columns. The best cell by style + content is framed in red. Cell images are read from
    ``folder / record["image"]``."""
    font, columns = _font(), max(1, grid.columns)
    rows = -(-len(records) // columns)
    cell_w, cell_h = tile + PAD, tile + 2 * LINE + PAD
    small = max(48, tile // 2)
    head_h = PAD + LINE + small + LINE + PAD
    width = max(columns * cell_w + PAD, MIN_SHEET_WIDTH)
    sheet = Image.new("RGB", (width, head_h + rows * cell_h + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    done = sum(r["status"] == "done" for r in records)
    status = f" · {done}/{len(records)} cells done · captions: style and content scores"
    room = width - 2 * PAD - draw.textlength(status, font=font)
    title = _fit_text_left(draw, grid.photo or "photo", font, room) + status  # a long path loses its start
    draw.text((PAD, PAD), _fit_text(draw, title, font, width - 2 * PAD), fill="black", font=font)
    styles = {cell.style.name: cell.style.image for cell in grid.cells}
    for index, (name, image) in enumerate([("photo", photo), *styles.items()]):
        x = PAD + index * (small + PAD)
        if x + small > width:
            break
        sheet.paste(thumb(image, small), (x, PAD + LINE))
        draw.text((x, PAD + LINE + small + 2), _fit_text(draw, name, font, small), fill="black", font=font)
    top = best(records)
    for index, record in enumerate(records):
        row, column = divmod(index, columns)
        draw_cell(sheet, draw, font, record, folder, (PAD + column * cell_w, head_h + row * cell_h),
                  tile, framed=record is top)
    return sheet


def draw_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, font, record: dict, folder: Path,
              at: tuple[int, int], tile: int, *, framed: bool) -> None:
    """One cell at ``at``: its label, its image (or a grey "pending" square), its scores."""
    x, y = at
    draw.text((x, y), _fit_text(draw, record["label"], font, tile), fill="black", font=font)
    if record["status"] != "done":
        draw.rectangle((x, y + LINE, x + tile - 1, y + LINE + tile - 1), fill=(228, 228, 228))
        draw.text((x + 6, y + LINE + 6), "pending", fill=(90, 90, 90), font=font)
        return
    with Image.open(folder / record["image"]) as image:
        picture = thumb(image, tile)
    sheet.paste(picture, (x, y + LINE))
    if framed:
        draw.rectangle((x - 3, y + LINE - 3, x + picture.width + 2, y + LINE + picture.height + 2),
                       outline=FRAME, width=3)
    style, content = record["scores"]["style"], record["scores"]["content"]
    caption = f"style {style:.2f} · content {content:.2f}"
    if draw.textlength(caption, font=font) > tile:
        caption = f"{style:.2f} · {content:.2f}"
    draw.text((x, y + LINE + picture.height + 3), caption, fill=(60, 60, 60), font=font)


def index_sheet(photos: Sequence[tuple[str, Image.Image, list[dict]]], folder: Path, *,
                tile: int = 256) -> Image.Image:
    """A batch at a glance: one block per photo (name, photo, ``done/cells``), then its cells
    in grid order, labelled and scored, at most ``INDEX_COLUMNS`` a line; each photo's best
    cell by style + content is framed. ``photos``: (name, picture, records) each."""
    font = _font()
    columns = max(1, min(INDEX_COLUMNS, max((len(records) for _, _, records in photos), default=1)))
    cell_w, cell_h = tile + PAD, tile + 2 * LINE + PAD
    lines = [max(1, -(-len(records) // columns)) for _, _, records in photos]
    head_h = PAD + LINE + PAD
    width = max((1 + columns) * cell_w + PAD, MIN_SHEET_WIDTH)
    sheet = Image.new("RGB", (width, head_h + sum(lines) * cell_h + len(photos) * PAD + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    cells = [record for _, _, records in photos for record in records]
    done = sum(r["status"] == "done" for r in cells)
    title = (f"{len(photos)} photo{'' if len(photos) == 1 else 's'} · {done}/{len(cells)} cells done · "
             f"each photo's best (style + content) framed")
    draw.text((PAD, PAD), _fit_text(draw, title, font, width - 2 * PAD), fill="black", font=font)
    y = head_h
    for (name, picture, records), count in zip(photos, lines):
        draw.line((PAD, y - PAD // 2, width - PAD, y - PAD // 2), fill=RULE)
        _draw_photo(sheet, draw, font, (name, picture, records), (PAD, y), tile)
        top = best(records)
        for index, record in enumerate(records):
            line, column = divmod(index, columns)
            draw_cell(sheet, draw, font, record, folder, (PAD + (1 + column) * cell_w, y + line * cell_h),
                      tile, framed=record is top)
        y += count * cell_h + PAD
    return sheet


def _draw_photo(sheet: Image.Image, draw: ImageDraw.ImageDraw, font, photo: tuple, at: tuple[int, int],
                tile: int) -> None:
    (name, picture, records), (x, y) = photo, at
    draw.text((x, y), _fit_text(draw, name, font, tile), fill="black", font=font)
    picture = thumb(picture, tile)
    sheet.paste(picture, (x, y + LINE))
    done = sum(r["status"] == "done" for r in records)
    draw.text((x, y + LINE + picture.height + 3), f"{done}/{len(records)} cells done", fill=(60, 60, 60),
              font=font)
