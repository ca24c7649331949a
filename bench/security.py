"""The shop's six security holes (issue 12), attacked over HTTP against a real `impasto serve`.

    python bench/security.py [--src PATH] [--mpf-frames 160000] [--slow-seconds 30]

Starts `impasto serve` (the package under ``--src``, default this checkout's ``src``) on
127.0.0.1 at a free port with a temporary ``IMPASTO_DATA_DIR`` and a one-style catalog (a
small generated painting), renders tiny previews and one tiny print, then sends each attack
and prints a table of what the shop answered. Run it on the code before and after a fix
to compare: every loop is bounded and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-admin-password-1234"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options")
# SOI, a baseline frame header of 1×1 pixel with one component, EOI: 17 bytes that the
# structure walk accepts as an appended MPF frame.
TINY_JPEG = bytes.fromhex("ffd8" "ffc0000b08000100010101 1100".replace(" ", "") + "ffd9")


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    pixels = (pixels + rng.integers(0, 24, pixels.shape)).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(src: Path, folder: Path):
    """`impasto serve` on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(src), "IMPASTO_DATA_DIR": str(folder / "data"),
           "IMPASTO_CATALOG_DIR": str(folder / "styles"), "IMPASTO_ADMIN_PASSWORD": PASSWORD,
           "IMPASTO_PREVIEW_SIZE": "48", "IMPASTO_PREVIEW_ITERATIONS": "4", "IMPASTO_PRINT_DPI": "64",
           "IMPASTO_PRINTS": '[{"size": "1x1in", "price_cents": 900}]', "IMPASTO_SIGNED_URL_SECONDS": "300",
           "OMP_NUM_THREADS": "1"}
    style = folder / "style.png"
    Image.open(io.BytesIO(jpeg(64, 64, seed=3))).save(style)
    subprocess.run([sys.executable, "-m", "impasto.cli", "styles", "add", "bench", str(style),
                    "--start-size", "0"], env=env, check=True, capture_output=True)
    process = subprocess.Popen([sys.executable, "-m", "impasto.cli", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(60)


def csrf_of(client: httpx.Client, path: str, **kwargs) -> str:
    match = CSRF.search(client.get(path, **kwargs).text)
    return match.group(1) if match else ""


def basic(password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def wait_until(condition, seconds: float = 300):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    return None


# --- the attacks -----------------------------------------------------------------------------

def mpf_upload(base: str, frames: int) -> str:
    body = jpeg(256, 256) + TINY_JPEG * frames
    started = time.monotonic()
    try:
        response = httpx.post(base + "/api/v1/portraits", data={"email": "mallory@example.com", "consent": "true"},
                              files={"photo": ("x.jpg", body, "image/jpeg")}, timeout=600)
        answer = str(response.status_code)
    except httpx.TransportError as exc:
        answer = type(exc).__name__
    return f"{len(body) / 1e6:.1f} MB, {frames} frames: {answer} after {time.monotonic() - started:.2f} s"


def portrait_with_print(base: str) -> tuple[dict, dict]:
    """A real portrait, its preview rendered, a print ordered and rendered."""
    response = httpx.post(base + "/api/v1/portraits", data={"email": "ada@example.com", "consent": "true"},
                          files={"photo": ("me.jpg", jpeg(320, 256), "image/jpeg")}, timeout=60)
    response.raise_for_status()
    portrait = response.json()
    url = base + "/api/v1" + portrait["url"]
    portrait = wait_until(lambda: (p := httpx.get(url).json())["previews"][0]["status"] == "done" and p)
    preview = portrait["previews"][0]["id"]
    order = httpx.post(url + "/orders", json={"preview_id": preview, "print_size": "1x1in",
                                              "shipping_name": "Ada", "shipping_address": "1 Way"}).json()
    order = wait_until(lambda: (o := httpx.get(f"{url}/orders/{order['number']}").json())["status"] == "ready"
                       and o)
    return portrait, order


def cancelled_print(base: str, portrait: dict, order: dict, admin: httpx.Client) -> str:
    """Cancel the order in the admin, then ask for the print job's image (job ids are sequential)."""
    page = admin.get("/admin").text
    order_id = re.search(r'/admin/orders/(\d+)/status', page).group(1)
    token = CSRF.search(page).group(1)
    admin.post(f"/admin/orders/{order_id}/status", data={"status": "cancelled", "csrf_token": token})
    print_job = portrait["previews"][-1]["id"] + 1
    download = httpx.get(f"{base}{portrait['url']}/orders/{order['number']}/download").status_code
    image = httpx.get(f"{base}{portrait['url']}/jobs/{print_job}/image").status_code
    return f"download {download}; /jobs/{print_job}/image {image}"


def form_login(base: str, client: httpx.Client | None = None, password: str = PASSWORD) -> tuple[httpx.Client, int]:
    client = client or httpx.Client(base_url=base)
    token = csrf_of(client, "/admin/login")
    response = client.post("/admin/login", data={"user": "admin", "password": password, "csrf_token": token,
                                                 "next": "/admin"})
    return client, response.status_code


def logout_reuse(base: str) -> str:
    client, _ = form_login(base)
    cookies = {name: value for name, value in client.cookies.items() if "admin" in name}
    token = csrf_of(client, "/admin")
    client.post("/admin/logout", data={"csrf_token": token})
    replay = httpx.get(base + "/admin", cookies=cookies, headers={"accept": "application/json"})
    return f"old cookie after logout: {replay.status_code}"


def planted_csrf(base: str) -> str:
    """An anonymous visitor's nonce and token, planted into a signed-in admin's browser."""
    stranger = httpx.Client(base_url=base)
    token = csrf_of(stranger, "/")
    nonce = {name: value for name, value in stranger.cookies.items() if "csrf" in name}
    admin, _ = form_login(base)
    for name, value in nonce.items():
        admin.cookies.set(name, value)
    response = admin.post("/admin/jobs/999999/cancel", data={"csrf_token": token})
    return f"admin POST with a stranger's pair: {response.status_code} ({'refused' if response.status_code == 403 else 'passed the check'})"


def crafted_numbers(base: str, portrait: dict, order: dict) -> list[tuple[str, str]]:
    url = portrait["url"]
    preview = portrait["previews"][0]["id"]
    big = str(2 ** 70)
    probes = [
        ("GET", f"{url}/jobs/{big}/image", None),
        ("GET", f"{url}/order?preview={big}", None),
        ("GET", f"{url}/order?preview=%C2%B2", None),
        ("GET", f"/files/portraits/x/photo.jpg?expires=%C2%B2&signature=x", None),
        ("POST", f"/api/v1{url}/orders", {"preview_id": 2 ** 70, "print_size": "1x1in", "shipping_name": "A",
                                          "shipping_address": "B"}),
        ("GET", f"/admin/jobs/{big}", None),
    ]
    rows = []
    for method, path, body in probes:
        try:
            response = httpx.request(method, base + path, json=body, headers={"accept": "text/html"}, timeout=30)
            missing = [h for h in HEADERS if h not in response.headers]
            answer = f"{response.status_code}" + (f" (no {', '.join(missing)})" if missing else "")
        except httpx.TransportError as exc:
            answer = type(exc).__name__
        rows.append((f"{method} {path.replace(url, '/portraits/ID')[:60]}", answer))
    client = httpx.Client(base_url=base)
    form = {"preview_id": "²", "print_size": "1x1in", "shipping_name": "A", "shipping_address": "B",
            "csrf_token": csrf_of(client, f"{url}/order?preview={preview}")}
    rows.append(("POST order form preview_id=²", str(client.post(f"{url}/orders", data=form).status_code)))
    cookie = b"impasto_admin=admin.\xb2." + b"A" * 43      # the byte 0xB2 is "\u00b2" in latin-1
    rows.append(("GET /admin with cookie admin.\u00b2.mac",
                 str(httpx.get(base + "/admin", headers={"cookie": cookie, "accept": "text/html"}).status_code)))
    return rows


def basic_brute_force(base: str, tries: int = 30) -> str:
    codes: dict[int, int] = {}
    for index in range(tries):
        code = httpx.get(base + "/admin", headers={**basic(f"wrong-{index}"), "accept": "application/json"}).status_code
        codes[code] = codes.get(code, 0) + 1
    right = httpx.get(base + "/admin", headers={**basic(PASSWORD), "accept": "application/json"}).status_code
    return f"{tries} wrong: {dict(sorted(codes.items()))}; then the right one: {right}"


def owner_after_lockout(base: str, owner: httpx.Client) -> str:
    """A stranger (same IP) fails 12 form logins; then the owner, on a browser that signed in before."""
    stranger = httpx.Client(base_url=base)
    codes = [form_login(base, stranger, password=f"guess-{i}")[1] for i in range(12)]
    owner.cookies.delete("impasto_admin") if "impasto_admin" in owner.cookies else None
    _, code = form_login(base, owner)
    _, fresh = form_login(base, httpx.Client(base_url=base))
    return f"stranger's answers {codes[0]}…{codes[-1]}; owner's known browser: {code}; unknown browser: {fresh}"


def slow_client(base: str, seconds: float) -> str:
    """Half a request line and headers, then silence: how long does the server keep it?"""
    host, port = base.removeprefix("http://").split(":")
    results = []
    for what, data in [("headers", b"GET / HTTP/1.1\r\nHost: x\r\n"),
                       ("body", b"POST /api/v1/portraits HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n")]:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(data)
            sock.settimeout(seconds)
            started = time.monotonic()
            try:
                closed = sock.recv(65536) is not None
            except (TimeoutError, socket.timeout):
                closed = False
            except ConnectionError:
                closed = True
            held = time.monotonic() - started
            results.append(f"{what}: {'closed after %.1f s' % held if closed else 'still open after %.0f s' % held}")
    return "; ".join(results)


def file_modes(folder: Path) -> str:
    data = folder / "data"
    photos = sorted(data.glob("files/portraits/*/photo.jpg"))
    modes = {"impasto.db": data / "impasto.db", "photo.jpg": photos[0] if photos else None}
    return ", ".join(f"{name} {oct(stat.S_IMODE(path.stat().st_mode)) if path else '?'}" for name, path in modes.items())


def docs_page(base: str) -> str:
    response = httpx.get(base + "/docs")
    external = sorted(set(re.findall(r'(?:src|href)="(https?://[^/"]+)', response.text)))
    csp = "CSP" if "content-security-policy" in response.headers else "no CSP"
    return f"{response.status_code}, {csp}, assets from {', '.join(external) or 'this server only'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the impasto package's src folder")
    parser.add_argument("--mpf-frames", type=int, default=160_000)
    parser.add_argument("--slow-seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"impasto serve from {args.src}\n\n| attack | answer |\n| --- | --- |", flush=True)

    def row(name: str, answer: str) -> None:
        print(f"| {name} | {answer} |", flush=True)

    with tempfile.TemporaryDirectory(prefix="impasto-bench-security-") as tmp, serve(args.src, Path(tmp)) as base:
        row("1. MPF upload (anonymous)", mpf_upload(base, args.mpf_frames))
        portrait, order = portrait_with_print(base)
        owner, _ = form_login(base)
        row("3. cancelled order's print", cancelled_print(base, portrait, order, owner))
        row("4. logout", logout_reuse(base))
        row("5. planted CSRF pair", planted_csrf(base))
        for probe, answer in crafted_numbers(base, portrait, order):
            row("6. " + probe, answer)
        row("slow client", slow_client(base, args.slow_seconds))
        row("file modes", file_modes(Path(tmp)))
        row("/docs", docs_page(base))
        row("2. HTTP Basic brute force", basic_brute_force(base))
        row("lockout vs the owner", owner_after_lockout(base, owner))

if __name__ == "__main__":
    main()
