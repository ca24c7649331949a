"""Quality benchmark: render the six shared pairs and score them against neural-style.

    python bench/quality.py [--set content_weight=5 ...] [--losses gram,sw,nnst] [--out bench/out/quality]

Renders each pair with impasto's default RenderParams (plus any ``--set`` overrides),
scores every render and neural-style's published output for the same pair with
``../shared/tools/score.py`` (style: closeness in an independent style embedding; content:
coarse luminance SSIM), prints a markdown table and writes a side-by-side PNG sheet.

``--losses``: each pair rendered once per style loss, one after the other in this process
(so they share the machine's load), each under ``OUT/<loss>/``; the table adds each loss's
CPU seconds (all threads, ``time.process_time``) and its ratio to the first loss's, and
how many pairs it leads the first on style at no more than ``--content-slack`` less content.
The sheet (``--sheet``, .jpg or .png) shows a row per pair — the losses and neural-style at
a common height — and beneath it a 1:1 crop of each (the same place in every picture).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from impasto import imaging
from impasto.engine import RenderParams, render
from impasto.engine.scale import extractor_for

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PAIRS = [
    ("tubingen", "starry_night", "neural-style_tubingen_starry.png"),
    ("tubingen", "the_scream", "neural-style_tubingen_scream.png"),
    ("tubingen", "shipwreck", "neural-style_tubingen_shipwreck.png"),
    ("golden_gate", "starry_night_crop", "neural-style_golden_gate_starry.png"),
    ("golden_gate", "the_scream", "neural-style_golden_gate_scream.png"),
    ("golden_gate", "woman-with-hat-matisse", "neural-style_golden_gate_matisse.png"),
]


def find(folder: str, stem: str) -> Path:
    return next((SHARED / "images" / folder).glob(stem + ".*"))


def load_scorer():
    spec = importlib.util.spec_from_file_location("score", SHARED / "tools" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def parse_sets(pairs: list[str]) -> dict:
    """``key=value`` overrides; values parsed as JSON where possible (numbers, lists)."""
    options = {}
    for item in pairs:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value.split(",") if "," in value else value
    return options


def render_pairs(params: RenderParams, out: Path, pairs) -> list[tuple]:
    extractor = extractor_for(params)
    rows = []
    for content, style, reference in pairs:
        path, seconds, _ = render_one(params, extractor, content, style, out)
        rows.append((content, style, reference, path, seconds))
    return rows


def render_one(params: RenderParams, extractor, content: str, style: str, out: Path):
    """(path, wall seconds, CPU seconds of all threads) of one pair's render."""
    started, cpu = time.perf_counter(), time.process_time()
    image = render(imaging.load(find("content", content)), [imaging.load(find("style", style))],
                   params, extractor=extractor)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    path = imaging.save(image, out / f"{content}_{style}.png")
    print(f"rendered {path} in {seconds:.0f} s ({cpu:.0f} CPU-s, {params.style_loss})",
          file=sys.stderr, flush=True)
    return path, seconds, cpu


def score_rows(rows) -> list[dict]:
    score = load_scorer()
    results = []
    for content, style, reference, path, seconds in rows:
        c, s = find("content", content), find("style", style)
        ours = score(str(path), str(c), str(s))
        theirs = score(str(SHARED / "images" / "reference" / reference), str(c), str(s))
        results.append({"pair": f"{content} x {style}", "style": ours[0], "content": ours[1],
                        "ns_style": theirs[0], "ns_content": theirs[1], "seconds": seconds,
                        "path": path, "reference": SHARED / "images" / "reference" / reference})
    return results


# --- one pair, several losses ------------------------------------------------------------

def compare_losses(params: RenderParams, losses: list[str], out: Path, pairs) -> dict[str, list[dict]]:
    """Per loss, a result per pair (the results of ``score_rows`` plus ``cpu``)."""
    variants = {loss: params.model_copy(update={"style_loss": loss}) for loss in losses}
    extractors = {loss: extractor_for(variant) for loss, variant in variants.items()}   # nnst: more layers
    rendered = {loss: [] for loss in losses}
    for loss in losses:
        (out / loss).mkdir(parents=True, exist_ok=True)
    for content, style, reference in pairs:             # pair by pair: the losses share the load
        for loss, variant in variants.items():
            path, seconds, cpu = render_one(variant, extractors[loss], content, style, out / loss)
            rendered[loss].append((content, style, reference, path, seconds, cpu))
    results = {}
    for loss, rows in rendered.items():
        scored = score_rows([row[:5] for row in rows])
        for result, row in zip(scored, rows):
            result["cpu"] = row[5]
        results[loss] = scored
    return results


def loss_table(results: dict[str, list[dict]], content_slack: float) -> str:
    losses = list(results)
    base = results[losses[0]]
    head = "| pair | " + " | ".join(f"{loss} style / content / CPU-s" for loss in losses) + " | neural-style |"
    lines = [head, "|---|" + "---|" * (len(losses) + 1)]
    for index, first in enumerate(base):
        cells = [f"{results[loss][index]['style']:.3f} / {results[loss][index]['content']:.3f} / "
                 f"{results[loss][index]['cpu']:.0f}" for loss in losses]
        lines.append(f"| {first['pair']} | " + " | ".join(cells)
                     + f" | {first['ns_style']:.3f} / {first['ns_content']:.3f} |")
    mean = {loss: {key: sum(r[key] for r in rows) / len(rows) for key in ("style", "content", "cpu")}
            for loss, rows in results.items()}
    lines.append("| **mean** | " + " | ".join(
        f"**{mean[loss]['style']:.3f} / {mean[loss]['content']:.3f}** / {mean[loss]['cpu']:.0f}"
        for loss in losses) + f" | {sum(r['ns_style'] for r in base) / len(base):.3f} / "
        f"{sum(r['ns_content'] for r in base) / len(base):.3f} |")
    for loss in losses[1:]:
        ahead = sum(r["style"] > b["style"] and r["content"] >= b["content"] - content_slack
                    for r, b in zip(results[loss], base))
        lines.append(f"\n{loss}: CPU {mean[loss]['cpu'] / mean[losses[0]]['cpu']:.2f}x {losses[0]}'s; "
                     f"ahead of {losses[0]} on style at ≤{content_slack} less content in {ahead}/{len(base)} pairs")
    return "\n".join(lines)


def loss_sheet(results: dict[str, list[dict]], path: Path, height: int = 200, crop: int = 160) -> None:
    """Per pair: the losses and neural-style side by side, and under each a 1:1 crop of the
    same place (the upper third, where the sky's or the hill's strokes are). A loss's entry
    may be None for a pair it was not rendered for."""
    from PIL import ImageFont

    font = ImageFont.load_default()
    losses = list(results)
    base = [next(rows[i] for rows in results.values() if rows[i] is not None)
            for i in range(len(next(iter(results.values()))))]
    columns = [*losses, "neural-style"]
    width = 6 + len(columns) * (max(height * 4 // 3, crop) + 10)
    row_height = 22 + height + 8 + crop + 14
    canvas = Image.new("RGB", (width, len(base) * row_height + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for row, first in enumerate(base):
        y = row * row_height
        draw.text((6, y + 4), first["pair"], fill="black", font=font)
        x = 6
        for column in columns:
            result = results[column][row] if column in results else first
            if result is None:                     # that loss was not rendered for this pair
                draw.text((x, y + 24), f"{column}: not rendered", fill="black", font=font)
                x += max(height * 4 // 3, crop) + 10
                continue
            is_reference = column not in results
            picture = Image.open(result["reference"] if is_reference else result["path"]).convert("RGB")
            scores = ({"style": first["ns_style"], "content": first["ns_content"]} if is_reference else result)
            small = picture.resize((round(picture.width * height / picture.height), height), Image.LANCZOS)
            canvas.paste(small, (x, y + 20))
            cx, cy = (picture.width - crop) // 2, max(0, picture.height // 3 - crop // 2)
            canvas.paste(picture.crop((cx, cy, cx + crop, cy + crop)), (x, y + 28 + height))
            draw.text((x, y + 30 + height + crop), f"{column}: {scores['style']:.2f} / {scores['content']:.2f}",
                      fill="black", font=font)
            x += max(small.width, crop) + 10
    canvas.save(path, quality=88) if path.suffix.lower() in (".jpg", ".jpeg") else canvas.save(path)


def table(results: list[dict]) -> str:
    lines = ["| pair | style | content | neural-style style | neural-style content | seconds |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['pair']} | {r['style']:.3f} | {r['content']:.3f} | {r['ns_style']:.3f} "
                     f"| {r['ns_content']:.3f} | {r['seconds']:.0f} |")
    n = len(results)
    mean = {k: sum(r[k] for r in results) / n for k in ("style", "content", "ns_style", "ns_content", "seconds")}
    lines.append(f"| **mean** | **{mean['style']:.3f}** | **{mean['content']:.3f}** | {mean['ns_style']:.3f} "
                 f"| {mean['ns_content']:.3f} | {mean['seconds']:.0f} |")
    return "\n".join(lines)


def sheet(results: list[dict], path: Path, height: int = 192) -> None:
    """Rows of (ours | neural-style) at a common height, labelled."""
    tiles = []
    for r in results:
        pair = [Image.open(p).convert("RGB") for p in (r["path"], r["reference"])]
        pair = [im.resize((round(im.width * height / im.height), height), Image.LANCZOS) for im in pair]
        tiles.append((r, pair))
    width = max(sum(im.width for im in pair) + 30 for _, pair in tiles)
    canvas = Image.new("RGB", (width, len(tiles) * (height + 22) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (r, pair) in enumerate(tiles):
        y = row * (height + 22)
        draw.text((6, y + 4), f"{r['pair']}: impasto (style {r['style']:.2f}, content {r['content']:.2f})"
                  f"  |  neural-style (style {r['ns_style']:.2f}, content {r['ns_content']:.2f})", fill="black")
        x = 6
        for im in pair:
            canvas.paste(im, (x, y + 20))
            x += im.width + 10
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RenderParams field (repeatable)")
    parser.add_argument("--pairs", default="", help="comma-separated pair indices (default: all six)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    parser.add_argument("--sheet", type=Path, default=None, help="write the comparison sheet here")
    parser.add_argument("--losses", default="", help="comma-separated style losses, each pair rendered "
                                                     "with each (the first is the baseline)")
    parser.add_argument("--content-slack", type=float, default=0.03,
                        help="--losses: content a loss may lose and still count as ahead on style")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs {SHARED}/images")
    params = RenderParams.build(**parse_sets(args.set))
    pairs = [PAIRS[int(i)] for i in args.pairs.split(",")] if args.pairs else PAIRS
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"params: {params.model_dump_json(exclude_defaults=True)}", flush=True)
    if args.losses:
        compared = compare_losses(params, args.losses.split(","), args.out, pairs)
        print(loss_table(compared, args.content_slack), flush=True)
        loss_sheet(compared, args.sheet or args.out / "sheet.jpg")
        return
    results = score_rows(render_pairs(params, args.out, pairs))
    print(table(results), flush=True)
    sheet(results, args.sheet or args.out / "sheet.png")


if __name__ == "__main__":
    main()
