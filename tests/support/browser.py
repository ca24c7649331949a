"""Helpers of the browser tests (tests/e2e): what to wait for, screenshots, page errors."""

from __future__ import annotations

from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOADED = "() => [...document.querySelectorAll('.tile-preview')].every(i => i.complete && i.naturalWidth > 0)"
TIMEOUT_MS = 180_000     # a ceiling for tiny renders on a busy CPU; never a timing claim


def shoot(page, folder: Path, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(folder / f"shop-{name}.jpg"), type="jpeg", quality=72, full_page=full_page)


def watch_errors(page, errors: list[str]) -> None:
    """Script errors and CSP violations (a 404 of a snapshot not stored yet is expected)."""
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text else None)


def fill_address(page, **fields: str) -> None:
    """The order form's address: ``line1="…", city="…", country="GB"`` (the name is filled apart)."""
    for name, value in fields.items():
        if name == "country":
            page.select_option("select[name=shipping_country]", value)
        else:
            page.fill(f"input[name=shipping_{name}]", value)
