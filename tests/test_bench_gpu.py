"""bench/gpu.py runs where a GPU is lent, rarely: smoke-test it on the CPU so it is known
to work before then (tiny sizes; the numbers mean nothing here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_on_a_cpu(tmp_path, capsys, shared_images):
    _bench().main(["--device", "cpu", "--size", "48", "--iterations", "3", "--precisions", "float32,bfloat16",
                   "--sizes", "64,96", "--budget", "2GB", "--top-iterations", "2", "--no-score",
                   "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("device: CPU")
    speed_rows = [line for line in out.splitlines() if line.startswith(("| float32 |", "| bfloat16 |"))]
    assert len(speed_rows) == 2 and all("diverged" not in row for row in speed_rows)
    assert "| 64² |" in out and "| 96² |" in out and "failed" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speed-bfloat16.png", "speed-float32.png"]


def test_a_budget_too_small_ends_the_largest_square_table_with_the_reason(tmp_path, capsys, shared_images):
    _bench().main(["--device", "cpu", "--size", "48", "--iterations", "2", "--precisions", "float32",
                   "--sizes", "64,4096", "--budget", "600MB", "--top-iterations", "1", "--no-score",
                   "--out", str(tmp_path)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 4096² |")]
    assert len(rows) == 1 and "failed" in rows[0] and "memory-budget" in rows[0]
