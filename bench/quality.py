"""Quality benchmark: render the six shared pairs and score them against neural-style.

    python bench/quality.py [--image-size 512] [--set content_weight=5 ...] [--out bench/out/quality]

Renders each pair with impasto's default RenderParams (plus any ``--set`` overrides),
scores every render and neural-style's published output for the same pair with
``../shared/tools/score.py`` (style: closeness in an independent style embedding; content:
coarse luminance SSIM), prints a markdown table and writes a side-by-side PNG sheet.
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
        started = time.perf_counter()
        image = render(imaging.load(find("content", content)), [imaging.load(find("style", style))],
                       params, extractor=extractor)
        seconds = time.perf_counter() - started
        path = imaging.save(image, out / f"{content}_{style}.png")
        rows.append((content, style, reference, path, seconds))
        print(f"rendered {path.name} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return rows


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
    parser.add_argument("--sheet", type=Path, default=None, help="write the comparison PNG here")
    args = parser.parse_args()
    if not (SHARED / "images").is_dir():
        sys.exit(f"needs {SHARED}/images")
    params = RenderParams.build(**parse_sets(args.set))
    pairs = [PAIRS[int(i)] for i in args.pairs.split(",")] if args.pairs else PAIRS
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"params: {params.model_dump_json(exclude_defaults=True)}", flush=True)
    results = score_rows(render_pairs(params, args.out, pairs))
    print(table(results), flush=True)
    sheet(results, args.sheet or args.out / "sheet.png")


if __name__ == "__main__":
    main()
