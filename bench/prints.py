"""Print-size benchmarks: memory, time to quality, seams and preview consistency.

    python bench/prints.py memory [--sizes 1024,2048,4096] [--iterations 2] [--budgets 1.5GB,2GB,4GB]
                                  [--resume STATE] [--out bench/out/prints]
    python bench/prints.py tile-peak [--shapes 1024x688,832x688,1024x1024]
    python bench/prints.py seams IMAGE --tile-size PX [--init IMAGE]
    python bench/prints.py gram-spread [--size 384] [--tile-size 128] [--iterations 20]
    python bench/prints.py consistency PRINT --preview PREVIEW
    python bench/prints.py time-to-quality [--pairs 0,1,2] [--size 512] [--iterations 500] [--jobs 2]
                                           [--budgets 140,150] [--coarse-content K]
    python bench/prints.py all

Each prints a markdown table. Baselines run in the same process (or, for memory, the
same script): memory is against the budget it was given, seams to the tile interiors, the
Gram spread to a non-tiled render of the same image, consistency to the preview, time
to quality to a single-scale 500-iteration L-BFGS render of our own engine.

**memory** runs each budget × size in a fresh subprocess — ``impasto render`` as a user
runs it (a square print, ``--print-size 8x8in --dpi S/8 --memory-budget B``, one scale of
N iterations or, with ``--iterations 0 --resume PREVIEW``, the preview's schedule
continued; loading the photo and saving the PNG) — and reads that process's high-water
RSS (``VmHWM``) at exit, its wall time, the last scale's tiles and planned peak, or the
one-line error a budget too small for the render ends with (exit 2). ``bench/phases.py``
breaks one render's memory down by phase.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "bench" / "out" / "prints"
PAIRS = [("tubingen", "starry_night"), ("tubingen", "the_scream"), ("tubingen", "shipwreck"),
         ("golden_gate", "starry_night_crop"), ("golden_gate", "the_scream"),
         ("golden_gate", "woman-with-hat-matisse")]


def find(folder: str, stem: str) -> Path:
    return next((SHARED / "images" / folder).glob(stem + ".*"))


def vm_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())[1])


# --- memory -------------------------------------------------------------------------------

def child(argv: list[str]) -> None:
    """Run ``impasto <argv[1:]>`` in this process; write peak RSS, seconds and the last
    scale's memory plan (tile, planned peak) to argv[0]."""
    from impasto.cli import main
    from impasto.engine import scale
    from impasto.engine.tiling import format_tile

    plans = []
    planner = scale.plan_memory

    def recording(*args, **kwargs):
        plans.append(planner(*args, **kwargs))
        return plans[-1]

    scale.plan_memory = recording
    started, cpu = time.perf_counter(), time.process_time()
    code = main(argv[1:])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    last = plans[-1] if plans else None
    Path(argv[0]).write_text(json.dumps({"work": _vgg_work(last, argv), 
        "code": code, "seconds": seconds, "cpu_seconds": cpu, "peak_kib": vm_kib("VmHWM"),
        "tile": (format_tile(last.tile_size) if last.tile_size else "whole") if last else "-",
        "planned": last.peak_bytes if last else 0}))


def _vgg_work(plan, argv: list[str]) -> float:
    """Pixels the plan runs through VGG per pass (windows, halos included) ÷ the image's:
    the compute a budget costs, whatever else loads the machine."""
    from impasto.engine import RenderParams
    from impasto.engine.tiling import model_geometry, needs_tiles, plan_tiles

    size = int(argv[argv.index("--dpi") + 1]) * 8   # the square print's side
    if plan is None or not needs_tiles(size, size, plan.tile_size):
        return 1.0
    params = RenderParams()
    geometry = model_geometry(params.model, [*params.content_layers, *params.style_layers])
    tiles = plan_tiles(size, size, plan.tile_size, geometry)
    return sum((t.rows.hi - t.rows.lo) * (t.cols.hi - t.cols.lo) for t in tiles) / size**2


def memory(args: argparse.Namespace) -> str:
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for budget in args.budgets.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            rows.append((budget, size, *_memory_run(args, budget, size)))
    return memory_table(rows, args.iterations)


def _memory_run(args: argparse.Namespace, budget: str, size: int) -> tuple:
    """One ``impasto render`` in a fresh process: (exit code, peak bytes, seconds, tile,
    planned peak, its one-line error if it refused)."""
    out = args.out / f"print-{size}-{budget}.png"
    report = args.out / f"memory-{size}-{budget}.json"
    command = ["render", str(find("content", args.content)), "--style", str(find("style", args.style)),
               "-o", str(out), "--print-size", "8x8in", "--dpi", str(size // 8),
               "--memory-budget", budget, "-q", "-v"]
    if args.iterations:   # else the preview's own schedule, as the shop continues it
        command += ["--scales", str(size), "--scale-iterations", str(args.iterations)]
    if args.resume:
        command += ["--resume", str(args.resume)]
    print(f"memory: {size} px in {budget}: impasto {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, __file__, "_child", str(report), *command],
                          capture_output=True, text=True)
    result = json.loads(report.read_text())
    error = next((line for line in done.stderr.splitlines() if line.startswith("impasto: error:")), "")
    return (result["code"], result["peak_kib"] * 1024, result["seconds"], result["tile"], result["planned"],
            result.get("work", 0.0), error)


def memory_table(rows, iterations: int) -> str:
    from impasto.engine.units import parse_bytes

    lines = ["| budget | size | tiles | planned peak MiB | peak RSS MiB | ÷ budget | VGG work ÷ untiled "
             "| seconds | s / iteration |", "|---|---|---|---|---|---|---|---|---|"]
    for budget, size, code, peak, seconds, tile, planned, work, error in rows:
        if code:
            lines.append(f"| {budget} | {size}² | refused, exit {code}: `{error}` | | {peak / 2**20:.0f} | "
                         f"{peak / parse_bytes(budget):.2f} | | {seconds:.0f} | |")
            continue
        per = f"{seconds / iterations:.0f}" if iterations else ""
        lines.append(f"| {budget} | {size}² | {tile} | {planned / 2**20:.0f} | {peak / 2**20:.0f} | "
                     f"{peak / parse_bytes(budget):.2f} | {work:.2f} | {seconds:.0f} | {per} |")
    return "\n".join(lines)


def tile_peak(args: argparse.Namespace) -> str:
    """One tile's forward + backward alone (default layers), measured against its estimate."""
    lines = ["| tile (inner) | window | measured peak MiB | estimate MiB | measured ÷ estimate |", "|---|---|---|---|---|"]
    for shape in args.shapes.split(","):
        rows, cols = parse_tile(shape) if "x" in shape.lower() else (int(shape),) * 2
        out = subprocess.run([sys.executable, __file__, "_tile_peak", str(rows), str(cols)],
                             capture_output=True, text=True, check=True).stdout.split()
        measured, estimate, halo = int(out[0]), int(out[1]), int(out[2])
        lines.append(f"| {rows}×{cols} | {rows + 2 * halo}×{cols + 2 * halo} | {measured / 2**20:.0f} | "
                     f"{estimate / 2**20:.0f} | {measured / estimate:.2f} |")
    return "\n".join(lines)


def _tile_peak_child(rows: int, cols: int) -> None:
    """The real tiled objective's gradient pass over one interior tile (of a 3×3 plan):
    its peak above the image, the gradient and the targets already there."""
    import torch

    from impasto.engine import RenderParams
    from impasto.engine.scale import extractor_for
    from impasto.engine.tiling import TiledObjective, estimate_tile_bytes, model_geometry

    params = RenderParams(device="cpu")
    layers = [*params.content_layers, *params.style_layers]
    geometry = model_geometry(params.model, layers)
    extractor = extractor_for(params)
    height, width = 3 * rows, 3 * cols
    targets = {name: torch.zeros(1, 512, height // geometry.strides[name], width // geometry.strides[name],
                                 dtype=torch.float16) for name in params.content_layers}
    channels = {info.name: info.channels for info in geometry.layers}
    grams = {name: torch.rand(channels[name], channels[name]) for name in params.style_layers}
    objective = TiledObjective(extractor, targets, grams, content_weight=5.0,
                               style_weights=dict.fromkeys(grams, 100.0), tv_weight=0.0, tile_size=(rows, cols))
    pixels = torch.rand(1, 3, height, width) * 255
    tiles = objective.tiles(height, width)
    style_grads = {name: (g, torch.ones(1)) for name, g in grams.items()}
    grad = torch.zeros_like(pixels)   # _grad_pass's own: counted as a full-size buffer, not the tile
    Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM
    before = vm_kib("VmRSS")
    del grad
    objective._grad_pass(pixels, [tiles[4]], style_grads, {})
    print((vm_kib("VmHWM") - before) * 1024, estimate_tile_bytes((rows, cols), layers), geometry.halo)


# --- seams --------------------------------------------------------------------------------

def seams(args: argparse.Namespace) -> str:
    """Mean gradient magnitude within ±2 px of the tile borders over that of the interiors."""
    import numpy as np
    from PIL import Image

    from impasto.engine.params import RenderParams
    from impasto.engine.tiling import format_tile, model_geometry, plan_tiles, tile_shape

    params = RenderParams()
    image = np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32) / 255
    height, width = image.shape[:2]
    geometry = model_geometry(params.model, [*params.content_layers, *params.style_layers])
    tiles = plan_tiles(height, width, tile_shape(args.tile_size), geometry)
    rows = sorted({t.rows.start for t in tiles} - {0})
    cols = sorted({t.cols.start for t in tiles} - {0})
    lines = ["| image | tiles | border ±2 px mean |∇| | interior mean |∇| | border ÷ interior |",
             "|---|---|---|---|---|"]
    images = [("render", image)]
    if args.init:
        init = np.asarray(Image.open(args.init).convert("RGB").resize((width, height), Image.BICUBIC),
                          dtype=np.float32) / 255
        images.append(("render − start (the painted change)", image - init))
    # control: lines halfway between the borders, where no tile edge is (the picture's own
    # variation between one set of lines and the rest)
    half = [(a + b) // 2 for a, b in zip([0, *rows], [*rows, height])]
    half_cols = [(a + b) // 2 for a, b in zip([0, *cols], [*cols, width])]
    for label, data in images:
        for where, (r, c) in (("tile borders", (rows, cols)), ("control: mid-tile lines", (half, half_cols))):
            border, interior = _border_ratio(data, r, c)
            ratio = border / interior if interior else float("nan")
            lines.append(f"| {label}, {where} | {len(tiles)} ({len(rows) + 1}×{len(cols) + 1}, "
                         f"{format_tile(args.tile_size)} px) | {border:.5f} | {interior:.5f} | {ratio:.3f} |")
    return "\n".join(lines)


def _border_ratio(image, rows, cols, reach: int = 2):
    import numpy as np

    grey = image.mean(axis=2)
    gy = np.zeros_like(grey)
    gx = np.zeros_like(grey)
    gy[1:, :] = np.abs(grey[1:] - grey[:-1])
    gx[:, 1:] = np.abs(grey[:, 1:] - grey[:, :-1])
    magnitude = np.hypot(gx, gy)
    near = np.zeros(grey.shape, dtype=bool)
    for r in rows:
        near[max(0, r - reach):r + reach + 1, :] = True
    for c in cols:
        near[:, max(0, c - reach):c + reach + 1] = True
    near[0, :] = near[:, 0] = False
    magnitude[0, :] = magnitude[:, 0] = np.nan
    return float(np.nanmean(magnitude[near])), float(np.nanmean(magnitude[~near]))


def gram_spread(args: argparse.Namespace) -> str:
    """Per-tile Gram statistics of a tiled and a non-tiled render of the same pair and size."""

    from impasto import imaging
    from impasto.engine import RenderParams, render
    from impasto.engine.scale import extractor_for

    content, style = (imaging.load(find("content", args.content)), imaging.load(find("style", args.style)))
    base = RenderParams(image_size=args.size, start_size=0, num_iterations=args.iterations)
    extractor = extractor_for(base)
    results = {}
    for label, params in (("whole image", base), (f"tiled ({args.tile_size} px)",
                                                     base.model_copy(update={"tile_size": args.tile_size}))):
        started = time.perf_counter()
        image = render(content, [style], params, extractor=extractor)
        results[label] = (image, time.perf_counter() - started)
        imaging.save(image, args.out / f"gram-spread-{'tiled' if params.tile_size else 'whole'}.png")
    lines = ["| render | layer | tile Gram spread (std ÷ mean ‖G‖) | ÷ whole image's | max |Δpixel| vs whole |",
             "|---|---|---|---|---|"]
    whole = results["whole image"][0]
    spreads = {}
    for label, (image, _) in results.items():
        grams = _tile_grams(extractor, image, args.tile_size, base.style_layers)
        for name, stack in grams.items():
            norms = stack.flatten(1).norm(dim=1)
            spread = float((stack - stack.mean(0)).flatten(1).norm(dim=1).mean() / norms.mean())
            spreads[label, name] = spread
            ratio = spread / spreads["whole image", name]
            lines.append(f"| {label} | {name} | {spread:.4f} | {ratio:.3f} | "
                         f"{float((image - whole).abs().max()) * 255:.2f}/255 |")
    seconds = ", ".join(f"{label}: {sec:.0f} s" for label, (_, sec) in results.items())
    return "\n".join(lines) + f"\n\n{args.size} px, {args.iterations} iterations, one scale; {seconds}"


def _tile_grams(extractor, image, tile_size: int, layers):
    """Gram of each tile's own region of ``image`` (its features alone), stacked per layer."""
    import torch

    from impasto.engine.losses import gram
    from impasto.engine.units import PIXEL_SCALE

    height, width = image.shape[-2:]
    out = {name: [] for name in layers}
    with torch.no_grad():
        for top in range(0, height - tile_size + 1, tile_size):
            for left in range(0, width - tile_size + 1, tile_size):
                feats = extractor(image[..., top:top + tile_size, left:left + tile_size] * PIXEL_SCALE)
                for name in layers:
                    out[name].append(gram(feats[name]))
    return {name: torch.stack(grams) for name, grams in out.items()}


# --- consistency ------------------------------------------------------------------------

def consistency(args: argparse.Namespace) -> str:
    """SSIM of the print, downsampled to the preview's size, against the preview."""
    import numpy as np
    from PIL import Image

    from impasto.scoring import ssim

    preview = Image.open(args.preview).convert("RGB")
    lines = ["| print | preview | SSIM (luminance, print downsampled) | SSIM of the upsampled preview itself |",
             "|---|---|---|---|"]
    for path in args.prints:
        printed = Image.open(path).convert("RGB")
        small = printed.resize(preview.size, Image.LANCZOS)
        grey = [np.asarray(im.convert("L"), dtype=np.float64) / 255 for im in (small, preview)]
        # the floor: the preview upsampled to the print's size and back (resampling alone)
        round_trip = preview.resize(printed.size, Image.BICUBIC).resize(preview.size, Image.LANCZOS)
        floor = np.asarray(round_trip.convert("L"), dtype=np.float64) / 255
        lines.append(f"| {Path(path).name} ({printed.width} px) | {Path(args.preview).name} ({preview.width} px) "
                     f"| {ssim(grey[0], grey[1]):.3f} | {ssim(floor, grey[1]):.3f} |")
    return "\n".join(lines)


# --- the print in docs/ ------------------------------------------------------------------

def sample(args: argparse.Namespace) -> str:
    """The print downsampled beside a 1:1 crop of it, one JPEG (≤ 1200 px wide)."""
    from PIL import Image, ImageDraw

    printed = Image.open(args.image).convert("RGB")
    side = args.height
    small = printed.resize((round(printed.width * side / printed.height), side), Image.LANCZOS)
    left = min(max(0, round(printed.width * args.at[0]) - args.crop_width // 2), printed.width - args.crop_width)
    top = min(max(0, round(printed.height * args.at[1]) - side // 2), printed.height - side)
    crop = printed.crop((left, top, left + args.crop_width, top + side))
    sheet = Image.new("RGB", (small.width + 8 + crop.width, side), "white")
    sheet.paste(small, (0, 0))
    sheet.paste(crop, (small.width + 8, 0))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([round(left * side / printed.height), round(top * side / printed.height),
                    round((left + args.crop_width) * side / printed.height),
                    round((top + side) * side / printed.height)], outline="white", width=2)
    sheet.save(args.output, quality=args.quality)
    return (f"{args.output}: {printed.width}×{printed.height} print at {side} px high, beside a 1:1 crop "
            f"of {crop.width}×{crop.height} px from ({left}, {top}); {args.output.stat().st_size // 1024} KB")


# --- time to quality ----------------------------------------------------------------------

def load_scorer():
    spec = importlib.util.spec_from_file_location("score", SHARED / "tools" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def time_to_quality(args: argparse.Namespace) -> str:
    """Multi-scale vs single-scale 500-iteration L-BFGS: the time multi-scale needs to
    reach the single-scale run's mean style and content scores (checked after each scale
    budget in ``--budgets``, in order; the first that reaches both is the answer).

    Every render runs in a single-thread process (``--jobs N`` at a time) and is timed in
    CPU seconds of that process — what the render costs, whatever else shares the machine.
    Each render's scores and seconds are kept beside its PNG (``ttq-*.json``) and reused
    when the same command runs again with the same options: a long baseline is rendered
    once, and a stopped run resumes."""
    from concurrent.futures import ProcessPoolExecutor

    from impasto.engine import RenderParams

    pairs = [PAIRS[int(i)] for i in args.pairs.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    def run(label: str, params: RenderParams) -> tuple[float, float, float]:
        tasks = [(label, content, style, params.model_dump(mode="json"), args.out) for content, style in pairs]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs, initializer=_single_thread) as pool:
                results = list(pool.map(_ttq_render, tasks))
        else:
            _single_thread()
            results = [_ttq_render(task) for task in tasks]
        styles, contents, seconds = zip(*results)
        return sum(styles) / len(styles), sum(contents) / len(contents), sum(seconds)

    single = run("single", RenderParams(image_size=args.size, start_size=0, num_iterations=args.iterations))
    lines = ["| run | iterations | mean style | mean content | CPU seconds | ÷ single-scale time |",
             "|---|---|---|---|---|---|",
             f"| single scale | {args.iterations} | {single[0]:.3f} | {single[1]:.3f} | {single[2]:.0f} | 1.00 |"]
    for budget in [int(b) for b in args.budgets.split(",") if b]:
        options = _multi_options(args)
        label = f"multi{budget}" + "".join(f"-{_SHORT[name]}{value:g}" if isinstance(value, float) else f"-{value}"
                                           for name, value in options.items())
        multi = run(label, RenderParams(image_size=args.size, num_iterations=budget, **options))
        reached = multi[0] >= single[0] and multi[1] >= single[1]
        described = "".join(f", --{name.replace('_', '-')} {value:g}" if isinstance(value, float)
                            else f", --{name} {value}" for name, value in options.items())
        lines.append(f"| multi-scale{described} | {budget} | {multi[0]:.3f} | {multi[1]:.3f} | {multi[2]:.0f} "
                     f"| {multi[2] / single[2]:.3f}{' (reaches it)' if reached else ''} |")
        if reached:
            break
    return "\n".join(lines) + f"\n\npairs: {', '.join(f'{c} × {s}' for c, s in pairs)}"


_SHORT = {"coarse_content": "cc", "content_weight": "cw"}   # in a record's name


def _multi_options(args: argparse.Namespace) -> dict:
    """The multi-scale runs' options given on the command line (the rest: the engine's)."""
    given = {"coarse_content": args.coarse_content, "init": args.init, "content_weight": args.content_weight}
    return {name: value for name, value in given.items() if value is not None}


def _ttq_key(options: dict) -> dict:
    """The options that can change these renders: none resumes a preview (keep_preview),
    and a one-scale render has no coarse scale (coarse_content)."""
    ignored = {"keep_preview"} | ({"coarse_content"} if options.get("start_size") == 0 else set())
    return {name: value for name, value in options.items() if name not in ignored}


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


_SCORER = None
_EXTRACTOR = None


def _ttq_render(task) -> tuple[float, float, float]:
    """Render one pair, or reuse its earlier result with the same options;
    (style score, content score, CPU seconds of the render alone)."""
    global _SCORER, _EXTRACTOR
    from impasto import imaging
    from impasto.engine import RenderParams, render
    from impasto.engine.scale import extractor_for

    label, content, style, options, out = task
    record = out / f"ttq-{label}-{content}_{style}.json"
    if record.exists() and _ttq_key((kept := json.loads(record.read_text()))["options"]) == _ttq_key(options):
        return kept["style"], kept["content"], kept["cpu_seconds"]
    params = RenderParams(**options)
    _SCORER = _SCORER or load_scorer()
    _EXTRACTOR = _EXTRACTOR or extractor_for(params)
    c, s = find("content", content), find("style", style)
    started, wall = time.process_time(), time.perf_counter()
    image = render(imaging.load(c), [imaging.load(s)], params, extractor=_EXTRACTOR)
    seconds, wall = time.process_time() - started, time.perf_counter() - wall
    path = imaging.save(image, out / f"ttq-{label}-{content}_{style}.png")
    st, co = _SCORER(str(path), str(c), str(s))
    record.write_text(json.dumps({"options": options, "style": st, "content": co, "cpu_seconds": seconds,
                                  "wall_seconds": wall}))
    print(f"{label} {content} x {style}: style {st:.3f} content {co:.3f} {seconds:.0f} CPU s ({wall:.0f} s)",
          file=sys.stderr, flush=True)
    return st, co, seconds


# --- command line -------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_tile_peak":
        _tile_peak_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, default=OUT)
    common.add_argument("--content", default="tubingen")
    common.add_argument("--style", default="starry_night")
    mem = commands.add_parser("memory", parents=[common])
    mem.add_argument("--sizes", default="1024,2048,4096")
    mem.add_argument("--iterations", type=int, default=2,
                     help="iterations at the print size, one scale (0: with --resume, the preview's "
                          "own coarse-to-fine schedule continued, as the shop makes a print)")
    mem.add_argument("--budgets", default="1.5GB,2GB,4GB", help="comma-separated")
    mem.add_argument("--resume", type=Path, help="continue this preview state (a print as the shop makes it)")
    peak = commands.add_parser("tile-peak", parents=[common])
    peak.add_argument("--shapes", default="1024x688,832x688,1024x1024", help="tile inner shapes, rows×cols")
    seam = commands.add_parser("seams", parents=[common])
    seam.add_argument("image", type=Path)
    seam.add_argument("--tile-size", type=parse_tile, required=True,
                      help="the tile the render used: a side (688) or rows×cols (1024x688)")
    seam.add_argument("--init", type=Path, help="the image the render started from")
    spread = commands.add_parser("gram-spread", parents=[common])
    spread.add_argument("--size", type=int, default=384)
    spread.add_argument("--tile-size", type=int, default=128)
    spread.add_argument("--iterations", type=int, default=20)
    cons = commands.add_parser("consistency", parents=[common])
    cons.add_argument("prints", type=Path, nargs="+")
    cons.add_argument("--preview", type=Path, required=True)
    ttq = commands.add_parser("time-to-quality", parents=[common])
    ttq.add_argument("--pairs", default="0,1,2,3,4,5")
    ttq.add_argument("--size", type=int, default=512)
    ttq.add_argument("--iterations", type=int, default=500)
    ttq.add_argument("--budgets", default="100,150,200", help="multi-scale totals to try, in order")
    ttq.add_argument("--jobs", type=int, default=1, help="pairs rendered at once, one thread each")
    ttq.add_argument("--coarse-content", type=float, default=None,
                     help="multi-scale's --coarse-content (default: the engine's)")
    ttq.add_argument("--content-weight", type=float, default=None,
                     help="multi-scale's --content-weight (default: the engine's)")
    ttq.add_argument("--init", choices=("random", "image", "quick"), default=None,
                     help="multi-scale's start (default: the engine's, the photo; the single-scale baseline "
                          "always starts from the photo); "
                          "quick: the feed-forward sketch, whose seconds count in the render's")
    samp = commands.add_parser("sample", parents=[common])
    samp.add_argument("image", type=Path)
    samp.add_argument("-o", "--output", type=Path, required=True)
    samp.add_argument("--height", type=int, default=800)
    samp.add_argument("--crop-width", type=int, default=392)
    samp.add_argument("--at", type=float, nargs=2, default=(0.6, 0.3), help="crop centre, fractions")
    samp.add_argument("--quality", type=int, default=85)
    commands.add_parser("all", parents=[common])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.command == "all":
        mem_args = parser.parse_args(["memory"])
        print(memory(mem_args), flush=True)
        rows, cols = _tile_used(2048, mem_args.iterations)
        print(seams(parser.parse_args(["seams", str(OUT / "print-2048.png"), "--tile-size",
                                       f"{rows}x{cols}"])), flush=True)
        print(gram_spread(parser.parse_args(["gram-spread"])), flush=True)
        print(time_to_quality(parser.parse_args(["time-to-quality"])), flush=True)
        return
    handler = {"memory": memory, "tile-peak": tile_peak, "seams": seams, "gram-spread": gram_spread, "consistency": consistency,
               "time-to-quality": time_to_quality, "sample": sample}[args.command]
    print(handler(args), flush=True)


def _tile_used(size: int, iterations: int) -> tuple[int, int]:
    from impasto.engine import RenderParams
    from impasto.engine.memory import plan_memory
    from impasto.engine.tiling import tile_shape

    params = RenderParams(image_size=size, memory_budget="4GB", num_iterations=iterations)
    return tile_shape(plan_memory(params, size, size).tile_size)


def parse_tile(text: str) -> int | tuple[int, int]:
    """``688`` or ``1024x688`` (rows × cols)."""
    parts = [int(part) for part in text.lower().replace("×", "x").split("x")]
    if len(parts) not in (1, 2) or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"tile {text!r}: a side (688) or rows x cols (1024x688)")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


if __name__ == "__main__":
    main()
