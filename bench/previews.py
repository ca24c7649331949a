"""Instant previews: seconds per style for a 512 px photo (median of 10), and a sheet.

    python bench/previews.py [--photo sample:astronaut] [--repeats 10] [--sheet docs/preview-sheet.jpg]

Uses the four shared paintings (../shared/images/style). The baseline, in the same run, is
one iteration of the Gatys engine at the same size (the full render runs hundreds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from impasto import imaging
from impasto.engine import RenderParams
from impasto.engine.quick import QuickStylizer, contact_sheet
from impasto.engine.scale import render_scale

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
STYLES = ("starry_night", "the_scream", "shipwreck", "woman-with-hat-matisse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", default="sample:astronaut")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sheet", type=Path, default=None)
    args = parser.parse_args()
    photo = imaging.load(args.photo)
    styles = [(name, imaging.load(next((SHARED / "images" / "style").glob(name + ".*")))) for name in STYLES]
    stylizer = QuickStylizer()
    stylizer.stylize(photo, styles[0][1], size=512)  # load the ONNX sessions once
    print("| style | median s (512 px) | min s |\n|---|---|---|")
    tiles = [("photo", photo)]
    for name, style in styles:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            out = stylizer.stylize(photo, style, size=512)
            times.append(time.perf_counter() - started)
        tiles.append((name, out))
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} |")
    started = time.perf_counter()
    render_scale(photo, [styles[0][1]], RenderParams(image_size=512, num_iterations=1))
    print(f"\nbaseline: one Gatys iteration at 512 px (with set-up): {time.perf_counter() - started:.2f} s")
    if args.sheet:
        imaging.save(contact_sheet(tiles, tile=200, columns=5), args.sheet)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
