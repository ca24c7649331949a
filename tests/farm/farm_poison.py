"""Loaded into a test worker (``Farm.start_worker(poisoned=True)``): a job in the style
"poison" kills its render process, as a job that runs out of memory every time would.

Everything else is the real `impasto worker`; only ``worker._render`` is wrapped.
"""

import os
import signal

from impasto.service.core import render_job as worker

_real_render = worker._render


def _render(task, **options):
    if task.style == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_render(task, **options)


worker._render = _render
