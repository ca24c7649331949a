"""GPU benchmark (issue 3): everything GPU-side in one run, for when a GPU is lent.

    python bench/gpu.py [--device cuda] [--size 512] [--iterations 500]
                        [--precisions float32,bfloat16,float16] [--budget 24GB]
                        [--sizes 4096,5792,8192,11584,16384] [--top-iterations 3]
                        [--out bench/out/gpu] [--no-score]

1. **Speed**: tubingen × starry night at ``--size`` px, one scale, ``--iterations`` L-BFGS
   iterations from the photo — neural-style's default run, which its README times at 22 s
   on a Pascal Titan X (cuDNN). One row per precision (``--precision``: VGG's convolutions
   in half precision, losses in float32), after a warm-up render; the final loss must be
   finite (float16 can overflow: ``RenderDiverged``), with ``score.py``'s style and content
   scores so a faster precision is not a worse picture.
2. **Largest square**: square renders of each size in ``--sizes`` under ``--memory-budget``
   (one scale of ``--top-iterations`` from the photo: the memory of a print's top scale,
   the part that limits it), in the fastest precision that stayed finite; peak device memory
   (``torch.cuda.max_memory_allocated``; the process's RSS on a CPU) and seconds per
   iteration, until a size fails or runs out of memory.

Markdown on stdout, with the device's name and the torch/CUDA versions: paste it into
docs/benchmarks.md. Runs on a CPU too (``--device cpu`` with small sizes): the test
suite smoke-tests it that way, so the script is known to work before a GPU is lent.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "bench" / "out" / "gpu"
CONTENT = SHARED / "images" / "content" / "tubingen.jpg"
STYLE = SHARED / "images" / "style" / "starry_night.jpg"


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return f"CPU, {torch.get_num_threads()} threads; torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())[1]) * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def timed_render(content, style, params, device: torch.device):
    """(image, seconds, final losses) of one render, timed to the device's last kernel."""
    from impasto.engine import render

    losses = {}
    synchronize(device)
    started = time.perf_counter()
    image = render(content, [style], params, lambda progress: losses.update(progress.losses))
    synchronize(device)
    return image, time.perf_counter() - started, losses


def speed(args, device: torch.device, content, style) -> tuple[list[str], list[str]]:
    """The speed table's rows, and the precisions whose losses stayed finite (fastest first)."""
    from impasto import imaging
    from impasto.engine import RenderParams
    from impasto.errors import RenderDiverged

    score = None if args.no_score else load_scorer()
    rows, finite = [], []
    for precision in args.precisions:
        params = RenderParams(image_size=args.size, start_size=0, num_iterations=args.iterations,
                              device=str(device), precision=precision, print_iter=0)
        timed_render(content, style, params.model_copy(update={"num_iterations": 5}), device)  # warm-up
        try:
            image, seconds, losses = timed_render(content, style, params, device)
        except RenderDiverged as exc:
            rows.append(f"| {precision} | diverged: {exc} | | | | |")
            continue
        path = imaging.save(image, args.out / f"speed-{precision}.png")
        scores = [f"{value:.3f}" for value in score(str(path), str(CONTENT), str(STYLE))] if score else ["—"] * 2
        finite.append((seconds, precision))
        rows.append(f"| {precision} | {seconds:.2f} | {seconds / args.iterations * 1000:.1f} | "
                    f"{losses['total']:.4g} | {scores[0]} | {scores[1]} |")
    return rows, [precision for _, precision in sorted(finite)]


def largest(args, device: torch.device, content, style, precision: str) -> list[str]:
    """One row per size until one fails: peak memory and seconds per iteration."""
    from impasto.engine import RenderParams
    from impasto.errors import ImpastoError

    rows = []
    height, width = content.shape[-2:]
    side = min(height, width)
    content = content[..., (height - side) // 2:(height + side) // 2, (width - side) // 2:(width + side) // 2]
    for size in args.sizes:
        params = RenderParams(image_size=size, scales=[size], scale_iterations=[args.top_iterations],
                              memory_budget=args.budget, device=str(device), precision=precision,
                              print_iter=0)
        reset_peak(device)
        try:
            _, seconds, _ = timed_render(content, style, params, device)
        except (ImpastoError, torch.cuda.OutOfMemoryError, MemoryError) as exc:
            rows.append(f"| {size}² | failed: {str(exc).splitlines()[0][:120]} | | |")
            break
        rows.append(f"| {size}² | {peak_bytes(device) / 2**30:.2f} | {seconds:.1f} | "
                    f"{seconds / args.top_iterations:.2f} |")
    return rows


def load_scorer():
    spec = importlib.util.spec_from_file_location("score", SHARED / "tools" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--precisions", type=lambda s: s.split(","), default=["float32", "bfloat16", "float16"])
    parser.add_argument("--budget", default="24GB", help="memory budget of the largest-square runs")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[4096, 5792, 8192, 11584, 16384])
    parser.add_argument("--top-iterations", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-score", action="store_true", help="skip score.py (faster smoke runs)")
    args = parser.parse_args(argv)
    from impasto import imaging
    from impasto.engine.scale import resolve_device

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    content, style = imaging.load(CONTENT), imaging.load(STYLE)
    print(f"device: {device_line(device)}\n", flush=True)
    rows, finite = speed(args, device, content, style)
    print(f"### {args.size} px × {args.iterations} L-BFGS iterations, one scale (neural-style: 22 s, "
          "Pascal Titan X)\n\n| precision | seconds | ms / iteration | final loss | style | content |\n"
          "|---|---|---|---|---|---|", *rows, sep="\n", flush=True)
    if not finite:
        sys.exit("no precision kept the losses finite: no largest-square run")
    print(f"\n### Largest square in {args.budget} ({finite[0]}, {args.top_iterations} iterations at the "
          "top scale)\n\n| size | peak GiB | seconds | s / iteration |\n|---|---|---|---|",
          *largest(args, device, content, style, finite[0]), sep="\n", flush=True)


if __name__ == "__main__":
    main()
