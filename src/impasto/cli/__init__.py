"""The ``impasto`` command: the only package that prints or exits.

Render options are derived from ``RenderParams`` (``add_model_options``): every field
becomes a ``--flag`` with its type, choices, description and default, so a new option in
the engine appears here without being re-typed. Every ``ImpastoError`` and every usage
error becomes one line ``impasto: error: …`` on stderr and exit code 2.

One module a concern; this one builds the parser and runs a command (``main``):
    common.py    PROG, exit codes, UsageError, Parser, logging, fail()
    options.py   --flags derived from a pydantic model (RenderParams)
    render.py    impasto render: progress report, resumable state
    catalog.py   impasto preview and impasto styles
    sweep.py     impasto sweep
    serve.py     impasto serve
    worker.py    impasto worker
    completion.py  impasto completion bash|zsh|tcsh (shtab)
Heavy imports (torch, fastapi, celery) stay inside the command functions, so that
``impasto --help`` is quick.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from impasto import __version__
from impasto.cli.catalog import add_preview, add_styles
from impasto.cli.completion import add_completion
from impasto.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, PROG, Parser, UsageError, fail, setup_logging
from impasto.cli.options import add_model_options, given_options
from impasto.cli.render import ProgressReport, add_render
from impasto.cli.serve import add_serve
from impasto.cli.sweep import SweepBar, add_sweep
from impasto.cli.worker import add_worker
from impasto.errors import ImpastoError

# Re-exported: what tests, bench/ and scripts use as ``impasto.cli.NAME``.
__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "PROG", "Parser", "ProgressReport", "SweepBar", "UsageError",
           "add_model_options", "build_parser", "fail", "given_options", "main", "setup_logging"]


def build_parser() -> Parser:
    from impasto.engine.params import RenderParams

    parser = Parser(prog=PROG, description="Neural style transfer portraits, from preview to print.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no loss lines (unless --print-iter is given)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=Parser)
    add_render(commands, common)
    add_preview(commands, common)
    add_sweep(commands, common)
    add_styles(commands, common, RenderParams)
    add_serve(commands, common)
    add_worker(commands, common)
    add_completion(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.verbose)
        return args.handler(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, ImpastoError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the output was not written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _out_of_memory(exc):
            return fail(f"out of memory ({exc}); give --memory-budget (e.g. 4GB: tiles keep the "
                        "whole-image loss) or a smaller --image-size", 1)
        raise  # anything else is a bug: keep its traceback


def _out_of_memory(exc: Exception) -> bool:
    torch = sys.modules.get("torch")
    cuda_oom = torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ()))
    return isinstance(exc, MemoryError) or cuda_oom
