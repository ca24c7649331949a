"""Where a render's memory goes: the process's resident set at each phase boundary and
its high-water mark within each phase (``VmHWM``, reset between phases through
``/proc/self/clear_refs``; Linux only).

    python bench/phases.py [--no-hold] -- render PHOTO --style STYLE -o OUT --memory-budget 1.5GB ...

Runs ``impasto <args>`` in this process with the engine's phases wrapped — loading, the
extractor, the plan, the targets, the start image, each evaluation's style pass, gradient
pass and TV loss, L-BFGS's two-loop step, saving — and prints one markdown row per phase:
resident MiB when it ended, its peak MiB and the peak above the resident set it started
from. ``--no-hold`` leaves malloc's mmap threshold to glibc (the engine holds it under a
budget: engine/resident.py), to see what holding it saves. This is how the terms of
``engine/memory.py`` were found; it measures, it asserts nothing.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
PHASES = [  # (module, attribute): wrapped where the engine looks them up
    ("impasto.imaging", "load"), ("impasto.imaging", "save"),
    ("impasto.engine.scale", "extractor_for"), ("impasto.engine.scale", "plan_scale"),
    ("impasto.engine.scale", "_objective_for"), ("impasto.engine.scale", "initial_pixels"),
    ("impasto.engine.scale", "_optimize"),
    ("impasto.engine.tiling.objective", "tiled_features"), ("impasto.engine.tiling.objective", "tiled_grams"),
    ("impasto.engine.tiling.objective", "TiledObjective._style_pass"),
    ("impasto.engine.tiling.objective", "TiledObjective._grad_pass"),
    ("impasto.engine.tiling.objective", "_tv_into"), ("impasto.engine.lbfgs", "_two_loop"),
]


class Recorder:
    """Marks: (label, resident bytes now, peak bytes since the previous mark)."""

    def __init__(self):
        from impasto.engine.resident import status_bytes

        self.status, self.marks = status_bytes, []

    def mark(self, label: str) -> None:
        self.marks.append((label, self.status("VmRSS"), self.status("VmHWM")))
        CLEAR_REFS.write_text("5")   # the high-water mark starts again from the resident set

    def wrap(self, module_name: str, attribute: str) -> None:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def traced(*args, **kwargs):
            self.mark(f"before {attribute}")
            try:
                return inner(*args, **kwargs)
            finally:
                self.mark(attribute)
        setattr(owner, name, traced)

    def table(self) -> str:
        lines = ["| phase | resident after, MiB | peak within, MiB | peak above its start, MiB |", "|---|---|---|---|"]
        start = 0
        for label, resident, peak in self.marks:
            if label.startswith("before "):
                start = resident
                continue
            lines.append(f"| {label} | {resident / 2**20:.0f} | {peak / 2**20:.0f} | {(peak - start) / 2**20:.0f} |")
        overall = max(peak for _, _, peak in self.marks)
        return "\n".join(lines) + f"\n\nprocess peak: {overall / 2**20:.0f} MiB"


def main(argv: list[str]) -> int:
    hold = "--no-hold" not in argv
    args = argv[argv.index("--") + 1:] if "--" in argv else [a for a in argv if a != "--no-hold"]
    if not CLEAR_REFS.exists():
        raise SystemExit("needs Linux's /proc/self/clear_refs")
    from impasto.engine import resident

    if not hold:   # the engine holds the threshold under a budget; pretend it already did
        resident.hold_allocator = lambda: False
    recorder = Recorder()
    recorder.mark("imports")
    for module_name, attribute in PHASES:
        recorder.wrap(module_name, attribute)
    scale = importlib.import_module("impasto.engine.scale")
    # the tiled objective and L-BFGS are called by names bound at import: rebind them
    scale.build_tiled_objective = importlib.import_module("impasto.engine.tiling.objective").build_tiled_objective
    scale.minimize.__globals__["_two_loop"] = importlib.import_module("impasto.engine.lbfgs")._two_loop
    from impasto.cli import main as impasto

    code = impasto(args)
    recorder.mark("end")
    print(recorder.table())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
