"""Engine speed: seconds per L-BFGS iteration and peak memory, impasto vs a naive baseline.

    python bench/engine.py [--sizes 256,512] [--iters 10] [--warmup 2] [--threads N]
                           [--configs baseline,impasto,bf16]
                           [--memory-iters 2] [--no-memory]

Configurations (all on the same converted VGG-16 weights, default RenderParams layers and
weights, init=image, the same square content/style pair, one scale):

- ``baseline``: written here, naively: the full VGG-16 (13 convs + 5 pools) runs every
  step although the deepest loss is at relu5_1; float32; the same Gram (C·H·W), content,
  style and TV losses, written out again. Its weights are frozen like impasto's, so the
  two differ only in what the engine is built to save.
- ``impasto``: the engine as ``render`` runs it: ``build_extractor`` (truncated at the
  deepest layer used, channels_last, ReLUs in place) and ``render.build_objective``
  (Gram as a bmm on a view).
- ``bf16``: impasto's objective with the VGG forward under ``torch.autocast("cpu",
  torch.bfloat16)``, features cast back to float32 before the losses (``--precision
  bfloat16``). Long runs suffer: L-BFGS's curvature estimate meets its rounding noise; the
  shop's short previews use it where the hardware has it (docs/benchmarks.md, "Shop").
- ``sw``, ``nnst``: impasto with ``--style-loss sw`` / ``nnst`` (nnst's extractor also runs
  to relu4_3): an iteration's time against Gram's, in the same process.

Timing: all configurations run in this one process, interleaved iteration by iteration
(one ``LBFGS.step`` with ``max_iter=1`` each, which continues the same L-BFGS history as
one long step), so a load change on the machine hits every configuration alike. s/iter is
the median of the timed iterations after the warm-up ones; an iteration is one loss and
gradient evaluation plus the L-BFGS update, as in ``render`` (no line search).

Memory: each configuration runs again in a fresh subprocess. "peak RSS" is that
process's high-water RSS (``VmHWM``: Python + torch + weights + set-up + optimisation;
not ``ru_maxrss``, which Linux carries over from the parent through fork + exec);
"working" is the high-water RSS during the optimisation alone (``VmHWM`` after resetting
it through ``/proc/self/clear_refs``) minus the RSS just before it: activations kept for
backward, gradients, L-BFGS state. tracemalloc cannot see torch's allocations. The
L-BFGS history grows by two image-sized float32 vectors per iteration up to
``lbfgs_num_correction`` (100): at 512×512 that adds up to 2·100·3·512²·4 B = 629 MB over a
long render, for every configuration alike; these short runs hold only a few.

Quality columns, against the float32 impasto objective: the relative difference of the
first loss, the cosine between first gradients, and the float32 loss of each
configuration's final image relative to impasto's after the same number of iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from impasto.engine.features import build_extractor
from impasto.engine.params import RenderParams
from impasto.engine.scale import PIXEL_SCALE, build_objective, initial_pixels
from impasto.engine.weights import MODELS, POOL, load_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CONFIGS = ("baseline", "impasto", "bf16", "sw", "nnst")
LABELS = {
    "baseline": "naive baseline (full VGG-16, fp32, NCHW)",
    "impasto": "impasto (truncated, channels_last, in-place ReLU, bmm Gram; fp32)",
    "bf16": "impasto + bf16 autocast (VGG only; --precision bfloat16)",
    "sw": "impasto, --style-loss sw (sliced Wasserstein, default projections)",
    "nnst": "impasto, --style-loss nnst (neural neighbours, relu1_1..relu4_3 hypercolumns)",
}
STYLE_LOSSES = {"sw": "sw", "nnst": "nnst"}   # configurations that are impasto with another style loss


# --- the naive baseline ------------------------------------------------------------------

class NaiveVGG16(nn.Module):
    """All of VGG-16, every step; records the activations the losses ask for."""

    def __init__(self, state: dict[str, torch.Tensor], wanted: list[str]):
        super().__init__()
        ops, names, block, index = [], [], 1, 1
        for item in MODELS["vgg16"].layout:
            if item == POOL:
                ops.append(nn.MaxPool2d(2, 2))
                names.append(f"pool{block}")
                block, index = block + 1, 1
                continue
            name = f"conv{block}_{index}"
            conv = nn.Conv2d(state[f"{name}.weight"].shape[1], item, 3, padding=1)
            conv.weight.data.copy_(state[f"{name}.weight"])
            conv.bias.data.copy_(state[f"{name}.bias"])
            ops += [conv, nn.ReLU()]
            names += [name, f"relu{block}_{index}"]
            index += 1
        self.net, self.names, self.wanted = nn.ModuleList(ops), names, set(wanted)
        self.register_buffer("mean_bgr", torch.tensor(MODELS["vgg16"].mean).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        x, out = pixels.flip(1) - self.mean_bgr, {}     # Keras VGG: BGR, 0..255, mean removed
        for name, op in zip(self.names, self.net):
            x = op(x)
            if name in self.wanted:
                out[name] = x
        return out


def naive_gram(f: torch.Tensor) -> torch.Tensor:
    _, c, h, w = f.shape
    flat = f.reshape(c, h * w)
    return flat @ flat.t() / (c * h * w)


class NaiveObjective(nn.Module):
    def __init__(self, net: NaiveVGG16, content: torch.Tensor, style: torch.Tensor, params: RenderParams):
        super().__init__()
        self.net, self.params = net, params
        with torch.no_grad():
            self.content_targets = {k: v for k, v in net(content * PIXEL_SCALE).items()
                                    if k in params.content_layers}
            self.style_targets = {k: naive_gram(v) for k, v in net(style * PIXEL_SCALE).items()
                                  if k in params.style_layers}

    def forward(self, pixels: torch.Tensor):
        p, feats = self.params, self.net(pixels)
        loss = sum(p.content_weight * F.mse_loss(feats[k], t) for k, t in self.content_targets.items())
        for (k, t), lw in zip(self.style_targets.items(), p.layer_weights()):
            loss = loss + p.style_weight * lw * F.mse_loss(naive_gram(feats[k]), t)
        dx = pixels[..., :, 1:] - pixels[..., :, :-1]
        dy = pixels[..., 1:, :] - pixels[..., :-1, :]
        loss = loss + p.tv_weight * 0.5 * (dx.pow(2).sum() + dy.pow(2).sum())
        return loss, {}


# --- candidate speed-ups, as wrappers around impasto's extractor ---------------------------

class Bfloat16(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, pixels):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = self.inner(pixels)
        return {k: v.float() for k, v in feats.items()}


def conv_macs(size: int, deepest: str | None) -> int:
    """Multiply-accumulates of VGG-16's convs on a size² input, up to layer ``deepest``."""
    macs, side, channels, block, index = 0, size, 3, 1, 1
    for item in MODELS["vgg16"].layout:
        if item == POOL:
            side, block, index = side // 2, block + 1, 1
            if deepest == f"pool{block - 1}":
                break
            continue
        macs += side * side * item * channels * 9
        channels = item
        if deepest in (f"conv{block}_{index}", f"relu{block}_{index}"):
            break
        index += 1
    return macs


def flop_model_ratio(size: int) -> float:
    """Baseline ÷ impasto by conv MACs: both back-propagate (data gradients only, about one
    forward's MACs) up to relu5_1; the baseline also runs conv5_2, conv5_3 forward."""
    truncated, full = conv_macs(size, "relu5_1"), conv_macs(size, None)
    return (full + truncated) / (2 * truncated)


# --- set-up and measurement ---------------------------------------------------------------

def images(size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """A square content/style pair: the shared tubingen × starry night, or synthetic."""
    from impasto import imaging

    content_path = SHARED / "images" / "content" / "tubingen.jpg"
    style_path = SHARED / "images" / "style" / "starry_night.jpg"
    if content_path.is_file() and style_path.is_file():
        pair = [_square(imaging.load(p), size) for p in (content_path, style_path)]
        return pair[0], pair[1], "shared tubingen × starry_night, centre-cropped square"
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bicubic").clamp(0, 1)
    stripes = (torch.sin(torch.arange(size) / 3.0).view(1, 1, 1, -1) * 0.5 + 0.5).expand(1, 3, size, size)
    return smooth, (stripes * torch.rand(1, 3, 1, 1, generator=g)).contiguous(), "synthetic"


def _square(image: torch.Tensor, size: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[..., top:top + side, left:left + side]
    return F.interpolate(crop, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def make_objective(config: str, size: int):
    params = RenderParams(image_size=size, device="cpu", style_loss=STYLE_LOSSES.get(config, "gram"))
    content, style, _ = images(size)
    layers = [*params.content_layers, *params.style_layers]
    if config == "nnst":
        from impasto.engine.nnst import NNST_LAYERS

        layers = list(dict.fromkeys([*layers, *NNST_LAYERS]))
    if config == "baseline":
        objective = NaiveObjective(NaiveVGG16(load_weights("vgg16"), layers), content, style, params)
    else:
        extractor = build_extractor("vgg16", layers)
        wrap = Bfloat16 if config == "bf16" else (lambda e: e)
        objective = build_objective(wrap(extractor), content, [style], params)
    start = initial_pixels(content, params, extractor=None)   # init=image: the photo, 0..255
    return objective, start, params


class Run:
    """One configuration's L-BFGS run, advanced one iteration at a time."""

    def __init__(self, config: str, size: int):
        self.config = config
        self.objective, start, params = make_objective(config, size)
        self.pixels = start.detach().clone().requires_grad_(True)
        # As render._optimize: no line search, no tolerance stops.
        self.optimizer = torch.optim.LBFGS([self.pixels], lr=1.0, max_iter=1, max_eval=1,
                                           tolerance_grad=-1, tolerance_change=-1,
                                           history_size=params.lbfgs_num_correction)
        self.times: list[float] = []

    def closure(self):
        self.pixels.grad = None
        loss, _ = self.objective(self.pixels)
        loss.backward()
        return loss

    def step(self) -> float:
        started = time.perf_counter()
        self.optimizer.step(self.closure)
        elapsed = time.perf_counter() - started
        self.times.append(elapsed)
        return elapsed

    def first_loss_and_grad(self) -> tuple[float, torch.Tensor]:
        pixels = self.pixels.detach().clone().requires_grad_(True)
        loss, _ = self.objective(pixels)
        loss.backward()
        return float(loss.detach()), pixels.grad.flatten()


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def hwm_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_memory(config: str, size: int, iterations: int) -> dict:
    """Runs in a fresh process: the memory of setting up and running ``iterations`` iterations.

    VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over fork + exec, so a child of
    this (large) process would report at least the parent's size.
    """
    run = Run(config, size)
    setup_peak, before = hwm_mb(), rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")          # reset VmHWM to the current RSS (Linux >= 4.0)
        resettable = True
    except OSError:
        resettable = False
    for _ in range(iterations):
        run.step()
    run_peak = hwm_mb()
    return {"peak_mb": max(setup_peak, run_peak),
            "working_mb": run_peak - before if resettable else float("nan")}


def measure_memory(config: str, size: int, iterations: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", config, str(size), str(iterations), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_size(size: int, configs: list[str], warmup: int, iters: int) -> dict[str, dict]:
    runs = {c: Run(c, size) for c in configs}
    reference = runs.get("impasto")
    results: dict[str, dict] = {c: {} for c in configs}
    if reference is not None:
        ref_loss, ref_grad = reference.first_loss_and_grad()
        for c, run in runs.items():
            loss, grad = run.first_loss_and_grad()
            results[c]["first_loss_rel"] = abs(loss - ref_loss) / ref_loss
            results[c]["grad_cos"] = float(F.cosine_similarity(grad.double(), ref_grad.double(), dim=0))
    for i in range(warmup + iters):
        for c in configs:                  # interleaved: same machine state for all
            runs[c].step()
        print(f"  {size} px: iteration {i + 1}/{warmup + iters}", file=sys.stderr, flush=True)
    for c, run in runs.items():
        timed = run.times[warmup:]
        results[c].update(s_per_iter=statistics.median(timed), s_min=min(timed))
    if reference is not None:
        with torch.no_grad():
            ref_final = float(reference.objective(reference.pixels)[0])
            for c, run in runs.items():
                results[c]["final_loss_ratio"] = float(reference.objective(run.pixels)[0]) / ref_final
    return results


def table(all_results: dict[int, dict[str, dict]], configs: list[str]) -> str:
    rows = [("| size | configuration | s/iter (median) | min | baseline ÷ this | peak RSS MB | working MB "
            "| first loss Δ | first grad cos | fp32 loss after run ÷ impasto's |"),
            "|---|---|---|---|---|---|---|---|---|---|"]
    for size, results in all_results.items():
        base = results.get("baseline", {}).get("s_per_iter")
        for c in configs:
            r = results[c]
            ratio = f"{base / r['s_per_iter']:.2f}×" if base else "–"
            mem = r.get("memory", {})
            rows.append(
                f"| {size}² | {LABELS[c]} | {r['s_per_iter']:.3f} | {r['s_min']:.3f} | {ratio} "
                f"| {mem.get('peak_mb', float('nan')):.0f} | {mem.get('working_mb', float('nan')):.0f} "
                f"| {r.get('first_loss_rel', float('nan')):.1e} | {r.get('grad_cos', float('nan')):.5f} "
                f"| {r.get('final_loss_ratio', float('nan')):.4g} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--memory-iters", type=int, default=2, help="iterations per memory subprocess")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("CONFIG", "SIZE", "ITERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.child:
        config, size, iterations = args.child
        print(json.dumps(child_memory(config, int(size), int(iterations))))
        return

    configs = [c.strip() for c in args.configs.split(",")]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    started, load_start = time.time(), os.getloadavg()
    results = {}
    for size in sizes:
        results[size] = bench_size(size, configs, args.warmup, args.iters)
    load_end = os.getloadavg()
    if not args.no_memory:
        for size in sizes:
            for c in configs:
                print(f"  memory: {c} at {size} px", file=sys.stderr, flush=True)
                results[size][c]["memory"] = measure_memory(c, size, args.memory_iters, args.threads)

    print(f"# Engine speed: {' '.join(['python', 'bench/engine.py', *(argv or sys.argv[1:])])}\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} torch threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print(f"- images: {images(sizes[0])[2]}; RenderParams defaults (layers relu1_1…relu5_1 + relu4_2), "
          "init=image, L-BFGS")
    print(f"- {args.warmup} warm-up + {args.iters} timed iterations per configuration, interleaved; "
          f"memory from fresh subprocesses, {args.memory_iters} iterations each")
    print(f"- load average (1 min) at start {load_start[0]:.2f}, after timing {load_end[0]:.2f}; "
          f"wall time {time.time() - started:.0f} s\n")
    print(table(results, configs))
    print("\nConv-MAC model of baseline ÷ impasto (no memory or threading effects): "
          + ", ".join(f"{size}²: {flop_model_ratio(size):.3f}" for size in sizes))


if __name__ == "__main__":
    main()
