"""What the process holds now, measured: the fixed cost a ``--memory-budget`` plan starts from.

A plan counts what a scale will allocate; what is already resident — Python, torch, the
VGG weights, the photo and the styles as loaded, the previous scale's image — is read, not
assumed: ``VmRSS`` of ``/proc/self/status`` on the CPU, the caching allocator's reserve on
CUDA. Where neither can be read (not Linux), ``FALLBACK_BYTES`` stands in.

glibc's malloc keeps freed memory for reuse: its mmap threshold rises to the largest block
freed (up to 32 MiB), after which a tile's layer outputs below that size come from the heap
and stay resident after they are freed. Measured on a 1024² print tiled in 512² tiles
under 1.5 GB (``bench/phases.py``): the resident set crept from 461 to 850 MiB over
two evaluations with nothing live to show for it, and the peak was 1371 MiB; with the
threshold held at ``MMAP_THRESHOLD_BYTES`` it stayed at 455–491 MiB and peaked at
1223 MiB. So under a budget the threshold is held (``hold_allocator``), and freed heap is
returned before each measurement (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)
STATUS = Path("/proc/self/status")
FALLBACK_BYTES = 512 * 2**20     # Python, torch, the weights and the images, where RSS can't be read
MMAP_THRESHOLD_BYTES = 1 << 20   # blocks from this size are mapped and unmapped, never kept
_M_MMAP_THRESHOLD = -3           # glibc's mallopt parameter number


@lru_cache(maxsize=1)
def _libc():
    """glibc, or None (musl, macOS, Windows: no mallopt/malloc_trim to hold)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


@lru_cache(maxsize=1)
def hold_allocator() -> bool:
    """Hold glibc's mmap threshold (once per process): large freed blocks go back to the
    system instead of staying resident. False where there is no glibc."""
    libc = _libc()
    held = bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("malloc mmap threshold held at %d bytes: %s", MMAP_THRESHOLD_BYTES, held)
    return held


def status_bytes(key: str) -> int | None:
    """``VmRSS``, ``VmHWM``, … of this process in bytes, or None where it can't be read."""
    try:
        match = re.search(rf"^{key}:\s+(\d+)\s*kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match[1]) * 1024 if match else None


def baseline_bytes(device: torch.device | str = "cpu") -> int:
    """What the process holds now on ``device``: resident bytes (CPU) after returning freed
    heap, or the CUDA caching allocator's reserve after emptying its cache."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return int(torch.cuda.memory_reserved(device))
    hold_allocator()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    resident = status_bytes("VmRSS")
    return resident if resident is not None else FALLBACK_BYTES
