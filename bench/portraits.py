"""Portrait benchmark: does portrait mode keep the sitter's likeness without losing the style?

    python bench/portraits.py [--image-size 512] [--iterations 400] [--strength 0.5] \
        [--out bench/out/portraits] [--sheet docs/portrait-mode.jpg]

The two shared portraits (grace_hopper, astronaut) × four shared styles, each rendered with
``--portrait off`` and ``--portrait auto`` (same seed and options otherwise). Per render:

- **found**: the same Haar detector (engine.masks.detect_faces) still finds a face in the
  output, overlapping the photo's face box;
- **face SSIM**: luminance SSIM of the photo's face box (cropped from output and photo,
  128 px) — how much of the sitter's likeness survives;
- **style**: ``../shared/tools/score.py``'s style score of the whole image.

Prints a markdown table and the targets (found ≥ 7 of 8 with portrait mode; face SSIM at
least 0.10 higher on average; style score at most 0.05 lower) and writes a grid: each row a
portrait × style, columns photo | off | auto | face crops.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from impasto import imaging
from impasto.engine import RenderParams, render
from impasto.engine.masks import Face, detect_faces
from impasto.engine.render import extractor_for
from impasto.scoring import luminance, ssim

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = ["grace_hopper.jpg", "astronaut.png"]
STYLES = ["starry_night.jpg", "the_scream.jpg", "shipwreck.jpg", "woman-with-hat-matisse.jpg"]
FACE_SIDE = 128


def load_scorer():
    spec = importlib.util.spec_from_file_location("score", SHARED / "tools" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def face_box(face: Face, scale: float) -> tuple[int, int, int, int]:
    return tuple(round(v * scale) for v in (face.x, face.y, face.x + face.w, face.y + face.h))


def face_ssim(output: Image.Image, photo: Image.Image, box: tuple[int, int, int, int]) -> float:
    a, b = output.crop(box), photo.crop(box)
    return ssim(luminance(a, (FACE_SIDE, FACE_SIDE)), luminance(b, (FACE_SIDE, FACE_SIDE)))


def overlaps(found: list[Face], box: tuple[int, int, int, int]) -> bool:
    """A detected face whose centre lies inside the photo's face box."""
    return any(box[0] < f.x + f.w / 2 < box[2] and box[1] < f.y + f.h / 2 < box[3] for f in found)


def run(args: argparse.Namespace) -> list[dict]:
    args.out.mkdir(parents=True, exist_ok=True)
    score = load_scorer()
    base = RenderParams(image_size=args.image_size, num_iterations=args.iterations,
                        portrait_strength=args.strength)
    extractor = extractor_for(base)
    rows = []
    for portrait in args.portraits:
        photo_path = SHARED / "images" / "content" / portrait
        photo = imaging.load(photo_path)
        faces = detect_faces(photo)
        if not faces:
            raise SystemExit(f"no face in the photo {portrait}: the benchmark needs one")
        for style_name in STYLES:
            style_path = SHARED / "images" / "style" / style_name
            style = imaging.load(style_path)
            row = {"portrait": portrait, "style": style_name}
            for mode in ("off", "auto"):
                out_path = args.out / f"{Path(portrait).stem}-{Path(style_name).stem}-{mode}.png"
                if not out_path.exists():
                    started = time.perf_counter()
                    result = render(photo, [style], base.model_copy(update={"portrait": mode}), extractor=extractor)
                    imaging.save(result, out_path)
                    row[f"seconds_{mode}"] = round(time.perf_counter() - started, 1)
                output = Image.open(out_path).convert("RGB")
                scale = output.width / photo.shape[-1]
                box = face_box(faces[0], scale)
                small_photo = imaging.to_pil(photo).resize(output.size, Image.LANCZOS)
                row[f"found_{mode}"] = overlaps(detect_faces(imaging.to_tensor(output)), box)
                row[f"face_ssim_{mode}"] = round(face_ssim(output, small_photo, box), 4)
                row[f"style_{mode}"] = round(score(str(out_path), str(photo_path), str(style_path))[0], 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    lines = ["| portrait | style | found off/auto | face SSIM off → auto | style off → auto |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['portrait']} | {r['style']} | {int(r['found_off'])}/{int(r['found_auto'])} | "
                     f"{r['face_ssim_off']:.3f} → {r['face_ssim_auto']:.3f} | "
                     f"{r['style_off']:.3f} → {r['style_auto']:.3f} |")
    found_off = sum(r["found_off"] for r in rows)
    found_auto = sum(r["found_auto"] for r in rows)
    ssim_gain = float(np.mean([r["face_ssim_auto"] - r["face_ssim_off"] for r in rows]))
    style_drop = float(np.mean([r["style_off"] - r["style_auto"] for r in rows]))
    lines += ["",
              f"faces found: {found_auto}/{len(rows)} with portrait mode (target ≥ 7), {found_off}/{len(rows)} without",
              f"face SSIM gain: {ssim_gain:+.3f} on average (target ≥ +0.10)",
              f"style score drop: {style_drop:+.3f} on average (target ≤ 0.05)"]
    return "\n".join(lines)


def grid(rows: list[dict], args: argparse.Namespace, tile: int = 200) -> Image.Image:
    """Rows: portrait × style; columns: photo, off, auto, face off, face auto."""
    header = 22
    sheet = Image.new("RGB", (5 * tile, header + len(rows) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(["photo", "portrait off", "portrait auto", "face, off", "face, auto"]):
        draw.text((col * tile + 6, 5), title, fill="black")
    photos = {}
    for index, row in enumerate(rows):
        top = header + index * tile
        photo_path = SHARED / "images" / "content" / row["portrait"]
        if row["portrait"] not in photos:
            image = imaging.load(photo_path)
            photos[row["portrait"]] = (imaging.to_pil(image), detect_faces(image)[0])
        photo, face = photos[row["portrait"]]
        renders = [Image.open(args.out / f"{Path(row['portrait']).stem}-{Path(row['style']).stem}-{m}.png")
                   .convert("RGB") for m in ("off", "auto")]
        scale = renders[0].width / photo.width
        box = face_box(face, scale)
        pad = (box[2] - box[0]) // 4
        crop_box = (max(0, box[0] - pad), max(0, box[1] - pad), box[2] + pad, box[3] + pad)
        cells = [photo.resize(renders[0].size), *renders, *(r.crop(crop_box) for r in renders)]
        for col, cell in enumerate(cells):
            fit = (tile - 4) / max(cell.size)   # face crops are enlarged to the tile too
            sheet.paste(cell.resize((round(cell.width * fit), round(cell.height * fit)), Image.LANCZOS),
                        (col * tile + 2, top + 2))
        label = Path(row["style"]).stem
        draw.rectangle((2, top + tile - 20, 10 + 6 * len(label), top + tile - 3), fill="black")
        draw.text((6, top + tile - 18), label, fill="white")
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--portraits", nargs="+", default=PORTRAITS,
                        help="a subset (renders are kept in --out: run subsets in parallel, then all to sum up)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/portraits"))
    parser.add_argument("--sheet", type=Path, default=Path("docs/portrait-mode.jpg"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = run(args)
    print(summary(rows))
    grid(rows, args).save(args.sheet, quality=88)
    print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
