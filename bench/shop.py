"""The shop's first minute: upload → every card has an image → every preview painted.

    python bench/shop.py [--uploads 10] [--photo PATH] [--baseline] [--score] [--screenshots docs]

An embedded shop as ``impasto serve`` runs it (the starter styles, made fresh in a temp
cache, 384 px previews with the shop's defaults, one render thread) under uvicorn in this
process; uploads go through the JSON API (httpx), and the times are read the way a
customer sees them: from the moment the upload's answer arrives.

1. One upload on an idle shop: seconds until every card has an image (the sketches), and
   until every preview is painted, with each style's render time (its job row's start and
   finish).
2. ``--uploads - 1`` more, one every ``--interval`` seconds while the render thread paints:
   seconds until each one's cards all have an image. Their previews are then cancelled
   (only the first upload's are painted to the end). p50 / p95 over all uploads.
   ``--sketches-only``: the first upload's previews are not waited for either.
3. ``--baseline``: in the same run, the first ``--baseline-styles`` styles painted as the shop
   did before the sketches (120 iterations from the photo): the per-style ratio.
4. ``--score``: the style / content scores of every painted preview (``../shared/tools/score.py``,
   run as its own process), against the baseline's.
5. ``--screenshots DIR``: Chromium uploads the photo on the upload page; the portrait page
   is shot 1 s after it opens and when all previews are done (``shop-first-1s.jpg``,
   ``shop-first-done.jpg``).

``$IMPASTO_SHARED`` is the shared folder (default: ``../shared`` beside the checkout).
Needs the test extras (httpx, playwright). Timings depend on what else runs on the machine:
the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMPASTO_SHARED") or ROOT.parent / "shared")   # a worktree: set it
SCORE = SHARED / "tools" / "score.py"
POLL_SECONDS = 0.05


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def start_shop(folder: Path, **overrides):
    """The app and its Shop, under uvicorn on a free port, with the starter styles made fresh."""
    import socket

    import uvicorn

    from impasto.catalog import Catalog
    from impasto.config import Settings
    from impasto.service.shop.app import create_app, shop_of
    from impasto.starter import StarterSet

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=folder / "data", public_url=f"http://127.0.0.1:{port}",
                        secret_key="bench-secret-0123456789abcdef", rate_limit_per_hour=1000, **overrides)
    started = time.perf_counter()
    catalog = Catalog(folder / "styles", starter=StarterSet(folder / "starter"))
    names = catalog.names()
    made = time.perf_counter() - started
    app = create_app(settings, catalog=catalog)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return settings.public_url, shop_of(app), server, thread, names, made


def upload(client, base: str, photo: Path) -> tuple[str, float]:
    with photo.open("rb") as handle:
        response = client.post(base + "/api/v1/portraits", data={"email": "bench@example.com", "consent": "true"},
                               files={"photo": (photo.name, handle, "image/jpeg")})
    answered = time.perf_counter()
    response.raise_for_status()
    return response.json()["id"], answered


def wait_until(client, base: str, public_id: str, condition, seconds: float = 3600) -> float:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        view = client.get(f"{base}/api/v1/portraits/{public_id}").json()
        if condition(view):
            return time.perf_counter()
        time.sleep(POLL_SECONDS)
    raise SystemExit(f"portrait {public_id}: not reached in {seconds} s")


def all_have_images(view) -> bool:
    return all(p["image_url"] for p in view["previews"])


def all_done(view) -> bool:
    return all(p["status"] == "done" for p in view["previews"])


def job_rows(shop, public_id: str):
    from sqlalchemy import select

    from impasto.service.core.models import Job, Portrait

    with shop.sessions() as session:
        portrait = session.scalars(select(Portrait).where(Portrait.public_id == public_id)).one()
        return session.scalars(select(Job).where(Job.portrait_id == portrait.id).order_by(Job.id)).all()


def cancel_all(shop, public_ids: list[str]) -> None:
    from impasto.service.core import jobs

    with shop.sessions() as session:
        for public_id in public_ids:
            for job in job_rows(shop, public_id):
                jobs.cancel(session=session, job_id=job.id)
        session.commit()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def stored_results(shop, rows, folder: Path) -> list[tuple[str, Path]]:
    out = []
    for row in rows:
        if row.result_key:
            path = folder / f"{row.style}-{row.id}.png"
            path.write_bytes(shop.storage.get(row.result_key))
            out.append((row.style, path))
    return out


def score(results: list[tuple[str, Path]], photo: Path, catalog) -> dict[str, tuple[float, float]]:
    if not SCORE.is_file():
        raise SystemExit(f"--score needs {SCORE}")
    args = []
    for style, path in results:
        args += [str(path), str(photo), str(catalog.get(style).image_path)]
    lines = subprocess.run([sys.executable, str(SCORE), *args], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    scores = {}
    for (style, _), line in zip(results, lines):
        fields = dict(part.split("=") for part in line.split("\t")[1:])
        scores[style] = (float(fields["style"]), float(fields["content"]))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between the later uploads")
    parser.add_argument("--photo", type=Path, default=SHARED / "images" / "content" / "grace_hopper.jpg")
    parser.add_argument("--baseline", action="store_true", help="also paint the styles as the shop did before")
    parser.add_argument("--baseline-styles", type=int, default=4, metavar="N", help="how many (default: 4)")
    parser.add_argument("--score", action="store_true", help="score the painted previews (and the baseline)")
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    parser.add_argument("--sketches-only", action="store_true",
                        help="measure the sketches only: the first upload's previews are not waited for")
    args = parser.parse_args()
    import httpx
    import torch

    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load {load()} at start")
    with tempfile.TemporaryDirectory(prefix="impasto-bench-shop-") as tmp:
        folder = Path(tmp)
        base, shop, server, thread, names, made = start_shop(folder)
        print(f"starter styles made in {made:.2f} s: {', '.join(names)}")
        try:
            with httpx.Client(timeout=120) as client:
                rows, scores = measure(args, client, base, shop, folder)
                if args.screenshots:
                    screenshots(args, base)
        finally:
            server.should_exit = True
            thread.join(60)
        if args.baseline:
            baseline(args, folder, names, rows, scores)


def measure(args, client, base: str, shop, folder: Path) -> tuple[list, dict]:
    first, answered = upload(client, base, args.photo)
    sketched = [wait_until(client, base, first, all_have_images) - answered]
    if args.sketches_only:
        rows, later = [], [first]
    else:
        done = wait_until(client, base, first, all_done) - answered
        rows, later = job_rows(shop, first), []
        print(f"\nupload 1 (idle shop): every card has an image after {sketched[0]:.2f} s, "
              f"every preview painted after {done:.1f} s (load {load()})")
        print("| style | render s | iterations |\n|---|---|---|")
        for row in rows:
            print(f"| {row.style} | {(row.finished_at - row.started_at).total_seconds():.1f} | {row.total} |")
    for _ in range(args.uploads - 1):
        public_id, answered = upload(client, base, args.photo)
        later.append(public_id)
        sketched.append(wait_until(client, base, public_id, all_have_images, seconds=120) - answered)
        time.sleep(max(0.0, args.interval - sketched[-1]))
    cancel_all(shop, later)
    print(f"\nupload → every card has an image, {len(sketched)} uploads (the later ones while a preview "
          f"paints): p50 {percentile(sketched, 0.5):.2f} s, p95 {percentile(sketched, 0.95):.2f} s, "
          f"max {max(sketched):.2f} s (load {load()})")
    print("each: " + ", ".join(f"{s:.2f}" for s in sketched))
    scores = score(stored_results(shop, rows, folder), args.photo, shop.catalog) if args.score else {}
    for style, (style_score, content) in scores.items():
        print(f"score {style}: style {style_score:.3f} content {content:.3f}")
    if scores:
        print(f"mean: style {statistics.mean(v[0] for v in scores.values()):.3f} "
              f"content {statistics.mean(v[1] for v in scores.values()):.3f}")
    return rows, scores


def baseline(args, folder: Path, names: list[str], rows: list, scores: dict) -> None:
    """``--baseline-styles`` styles as the shop painted them before: 120 iterations from the photo,
    no sketches; each style's time and score against this run's."""
    from impasto.service.core import jobs

    base, shop, server, thread, _, _ = start_shop(folder / "baseline", preview_iterations=120, preview_init="image",
                                                  sketches=False)
    keep = names[:args.baseline_styles]
    try:
        import httpx

        with httpx.Client(timeout=120) as client:
            public_id, answered = upload(client, base, args.photo)
            with shop.sessions() as session:
                for row in job_rows(shop, public_id):
                    if row.style not in keep:
                        jobs.cancel(session=session, job_id=row.id)
                session.commit()
            done = wait_until(client, base, public_id, lambda view: not any(
                p["status"] in ("queued", "running") for p in view["previews"])) - answered
            old = [row for row in job_rows(shop, public_id) if row.style in keep]
            old_scores = score(stored_results(shop, old, folder), args.photo, shop.catalog) if args.score else {}
    finally:
        server.should_exit = True
        thread.join(60)
    new = {row.style: row for row in rows}
    print(f"\nbaseline (120 iterations from the photo, no sketches): {len(old)} previews painted after "
          f"{done:.1f} s (load {load()})")
    print("| style | before s | now s | now / before | style before | style now | content before | content now |")
    print("|---|---|---|---|---|---|---|---|")
    for row in old:
        before = (row.finished_at - row.started_at).total_seconds()
        now = (new[row.style].finished_at - new[row.style].started_at).total_seconds()
        (sb, cb), (sn, cn) = old_scores.get(row.style, (0, 0)), scores.get(row.style, (0, 0))
        print(f"| {row.style} | {before:.1f} | {now:.1f} | {now / before:.3f} | {sb:.3f} | {sn:.3f} | {cb:.3f} | {cn:.3f} |")
    if old_scores:
        print(f"mean style before {statistics.mean(v[0] for v in old_scores.values()):.3f}, now "
              f"{statistics.mean(scores[k][0] for k in old_scores):.3f}")


def screenshots(args, base: str) -> None:
    from playwright.sync_api import sync_playwright

    args.screenshots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(600_000)
        page.goto(base + "/")
        page.set_input_files("input[name=photo]", str(args.photo))
        page.fill("input[name=email]", "bench@example.com")
        page.check("input[name=consent]")
        page.click("button[type=submit]")
        page.wait_for_url("**/portraits/*")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(args.screenshots / "shop-first-1s.jpg"), type="jpeg", quality=75, full_page=True)
        page.wait_for_function("() => document.querySelectorAll('.tile.status-done').length === "
                               "document.querySelectorAll('.tile').length")
        page.wait_for_timeout(500)
        page.screenshot(path=str(args.screenshots / "shop-first-done.jpg"), type="jpeg", quality=75, full_page=True)
        browser.close()
    print(f"\nscreenshots: {args.screenshots}/shop-first-1s.jpg, shop-first-done.jpg")


if __name__ == "__main__":
    main()
