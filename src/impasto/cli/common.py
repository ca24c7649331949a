"""What every command shares: the program name, exit codes, one-line errors and logging.

Every ``ImpastoError`` and every usage error becomes one line ``impasto: error: …`` on
stderr and exit code 2 (``fail``); argparse's own errors are raised as ``UsageError``
(``Parser``) so that ``main()`` reports them the same way.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import re
import sys
import typing

PROG = "impasto"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line argparse rejected; main() reports it like an ImpastoError."""


def require_extra(extra: str, command: str, *, requires: list[str] | None = None) -> None:
    """``UsageError`` naming the extra to install when a distribution of ``extra`` is missing.

    The extra's list is read from the installed package's metadata (``pyproject.toml``'s,
    not typed again here); a tree without metadata is not checked (its imports will tell).
    """
    if requires is None:
        try:
            requires = importlib.metadata.requires(PROG) or []
        except importlib.metadata.PackageNotFoundError:
            return
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    missing = []
    for requirement in requires:
        name, _, markers = requirement.partition(";")
        if not marker.search(markers):
            continue
        dist = re.match(r"[A-Za-z0-9._-]+", name.strip()).group(0)
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise UsageError(f"{PROG} {command} needs the {extra} extra (missing: {', '.join(missing)}): "
                         f"pip install 'impasto[{extra}]'")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so main() prints exactly one line."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


class _TqdmHandler(logging.Handler):
    """Log lines through tqdm.write, so they do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler: never let logging kill a render
            self.handleError(record)


log_handler = _TqdmHandler()
log_handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def setup_logging(verbosity: int) -> None:
    """impasto's own loggers to stderr: WARNING by default, -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("impasto")
    if log_handler not in logger.handlers:  # main() may run many times in one process (tests)
        logger.addHandler(log_handler)
    logger.setLevel(level)


def use_log_format(log_format: str, *, text: str | None = None) -> None:
    """``IMPASTO_LOG_FORMAT`` (``Settings.log_format``) for impasto's lines: ``json`` gives one
    JSON object a line (``impasto.logs.JsonFormatter``), ``text`` the ``text`` format given."""
    from impasto.logs import formatter_for

    log_handler.setFormatter(formatter_for(log_format, text=text or f"{PROG}: %(levelname)s: %(message)s"))


def fail(message: str, code: int = EXIT_USAGE) -> int:
    first = str(message).strip().splitlines() or ["unknown error"]
    print(f"{PROG}: error: {first[0]}", file=sys.stderr)
    return code
