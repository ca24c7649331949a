"""``CountingBytes``: bytes that count how many of themselves a parser reads.

The structure walks of ``uploads`` only index, slice and ``find`` their input, so wrapping
an upload in this class measures the work they do in bytes touched — a clock-free way to
show that a walk is linear in the size of the file (tests never assert on wall-clock time).
"""

from __future__ import annotations


class CountingBytes:
    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self.touched = 0

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index):
        value = self._data[index]
        self.touched += len(value) if isinstance(index, slice) else 1
        return value

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        found = self._data.find(sub, start, len(self._data) if end is None else end)
        stop = len(self._data) if found < 0 else found + len(sub)
        self.touched += max(0, stop - start)
        return found


def touched_by(walk, data: bytes) -> int:
    """Bytes of ``data`` that ``walk(CountingBytes(data))`` read, whatever it raised."""
    counted = CountingBytes(data)
    try:
        walk(counted)
    except Exception:      # a refusal is fine here: the cost of reaching it is what is measured
        pass
    return counted.touched
