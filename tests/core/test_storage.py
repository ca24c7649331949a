"""One contract, two backends: LocalStorage in a temp dir, S3Storage against a real moto server.

The S3 side talks HTTP to ``moto.server.ThreadedMotoServer`` on 127.0.0.1 through boto3,
exactly as it would to MinIO or R2. moto does not check presigned-URL signatures or their
expiry, so for S3 the expiry test reads the lifetime out of the URL; the download test
still fetches the bytes through the presigned URL over HTTP.
"""

from __future__ import annotations

import io
import urllib.parse
import uuid

import httpx
import pytest

from impasto.service.core.storage import (
    KeyNotFound,
    LocalStorage,
    S3Storage,
    Storage,
    StorageError,
    check_key,
    content_disposition,
    make_key,
    storage_from_url,
)

SECRET = b"test-secret-not-for-production"
BASE_URL = "http://shop.example"
BUCKET = "impasto-test"

BAD_KEYS = [
    "", "/", "/etc/passwd", "../secret", "a/../../b", "a/./b", "..", ".", "a//b", "a/", "/a",
    "a\\b", "..\\..\\win.ini", "a\0b", "a b", "a/.hidden", "é.jpg", "a%2f..", "a?b", "a#b",
    "C:/x", "~/x", "a\nb", "x" * 129, "/".join(["a"] * 300),
]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """Each contract test runs once per backend."""
    if request.param == "local":
        return LocalStorage(tmp_path / "files", secret=SECRET, base_url=BASE_URL + "/", clock=FakeClock())
    endpoint = request.getfixturevalue("moto_endpoint")
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    storage = storage_from_url(f"s3://{BUCKET}/{prefix}", secret=SECRET, base_url=BASE_URL,
                               endpoint_url=endpoint)
    try:
        storage.client.create_bucket(Bucket=BUCKET)
    except storage.client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return storage


def fetch(store, url: str) -> httpx.Response:
    """Download a signed URL the way a browser would."""
    if isinstance(store, S3Storage):
        return httpx.get(url, timeout=10)
    # LocalStorage: the app's file route does this check; emulate it from the URL alone.
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    key = parts.path.removeprefix("/files/")
    ok = store.verify(key, query.get("expires", ""), query.get("signature", ""),
                      filename=query.get("filename"))
    if not ok:
        return httpx.Response(403)
    headers = {"content-disposition": content_disposition(query["filename"])} if "filename" in query else {}
    return httpx.Response(200, content=store.get(key), headers=headers)


# --- contract ------------------------------------------------------------------------------

def test_is_a_storage(store):
    assert isinstance(store, Storage)


def test_round_trip(store):
    key = make_key("portraits", uuid.uuid4(), "photo.jpg")
    store.put(key, b"\xff\xd8jpeg bytes", content_type="image/jpeg")
    assert store.exists(key)
    assert store.get(key) == b"\xff\xd8jpeg bytes"
    store.put(key, b"replaced", content_type="image/jpeg")
    assert store.get(key) == b"replaced"


def test_streaming_put_and_open(store):
    key = make_key("prints", uuid.uuid4(), "print.tif")
    payload = bytes(range(256)) * 40_000          # 10 MB: multipart on S3, chunked locally
    store.put(key, io.BytesIO(payload), content_type="image/tiff")
    read = bytearray()
    with store.open(key) as stream:
        while chunk := stream.read(1 << 16):
            assert len(chunk) <= 1 << 16
            read += chunk
    assert bytes(read) == payload


def test_delete_and_exists(store):
    key = make_key("previews", uuid.uuid4(), "starry.jpg")
    assert not store.exists(key)
    store.put(key, b"x", content_type="image/jpeg")
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)                              # idempotent, as in S3


def test_delete_folder_removes_everything_under_it_and_nothing_beside_it(store):
    run = uuid.uuid4().hex
    inside = [make_key("jobs", run, "12", name) for name in ("result.png", "state.safetensors", "snapshot.jpg")]
    beside = [make_key("jobs", run, "123", "result.png"), make_key("jobs", run, "1", "result.png"),
              make_key("jobs", run, "12.png")]
    for key in inside + beside:
        store.put(key, b"x", content_type="application/octet-stream")
    assert store.delete_folder(f"jobs/{run}/12") == 3
    assert [store.exists(key) for key in inside] == [False] * 3
    assert all(store.exists(key) for key in beside)
    assert store.delete_folder(f"jobs/{run}/12") == 0            # idempotent
    if isinstance(store, LocalStorage):                          # no empty folder left behind
        assert not (store.root / "jobs" / run / "12").exists()
        store.delete(beside[1])
        assert not (store.root / "jobs" / run / "1").exists() and (store.root / "jobs" / run).is_dir()
    with pytest.raises(StorageError):
        store.delete_folder("../outside")


def test_missing_key(store):
    key = make_key("portraits", uuid.uuid4(), "photo.jpg")
    with pytest.raises(KeyNotFound):
        store.get(key)
    with pytest.raises(KeyNotFound):
        store.open(key)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_traversal_keys_rejected_everywhere(store, key):
    for call in (lambda: store.put(key, b"x", content_type="text/plain"), lambda: store.get(key),
                 lambda: store.open(key), lambda: store.exists(key), lambda: store.delete(key),
                 lambda: store.signed_url(key, expires_seconds=60)):
        with pytest.raises(StorageError):
            call()


def test_bad_content_type_rejected(store):
    with pytest.raises(StorageError):
        store.put("a/b.jpg", b"x", content_type="image/jpeg\r\nX-Evil: 1")


def test_signed_url_downloads_the_bytes(store):
    key = make_key("prints", uuid.uuid4(), "print.jpg")
    store.put(key, b"the print", content_type="image/jpeg")
    url = store.signed_url(key, expires_seconds=600, filename='Ada "Lovelace" — 8x10.jpg')
    response = fetch(store, url)
    assert response.status_code == 200
    assert response.content == b"the print"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Ada%20%22Lovelace%22%20%E2%80%94%208x10.jpg" in disposition


def test_signed_url_expiry(store):
    key = make_key("prints", uuid.uuid4(), "print.jpg")
    store.put(key, b"x", content_type="image/jpeg")
    url = store.signed_url(key, expires_seconds=600)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if isinstance(store, S3Storage):
        assert query["X-Amz-Expires"] == "600"     # S3 enforces it; moto does not
        return
    assert fetch(store, url).status_code == 200
    store._clock.now += 601
    assert fetch(store, url).status_code == 403


@pytest.mark.parametrize("seconds", [0, -1, 7 * 24 * 3600 + 1, 1.5, True])
def test_signed_url_lifetime_bounds(store, seconds):
    with pytest.raises(StorageError):
        store.signed_url("a/b.jpg", expires_seconds=seconds)


# --- LocalStorage specifics ----------------------------------------------------------------

@pytest.fixture
def local(tmp_path):
    return LocalStorage(tmp_path / "files", secret=SECRET, base_url=BASE_URL, clock=FakeClock())


def test_local_url_shape(local):
    url = local.signed_url("prints/abc/print.jpg", expires_seconds=60, filename="p.jpg")
    parts = urllib.parse.urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://shop.example/files/prints/abc/print.jpg"
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["expires"] == str(1_700_000_060)
    assert query["filename"] == "p.jpg"


def test_local_verify_rejects_tampering(local):
    key = "prints/abc/print.jpg"
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
        local.signed_url(key, expires_seconds=60, filename="p.jpg")).query))
    expires, sig = query["expires"], query["signature"]
    assert local.verify(key, expires, sig, filename="p.jpg")
    assert not local.verify(key, expires, sig)                                # filename dropped
    assert not local.verify(key, expires, sig, filename="q.jpg")              # filename changed
    assert not local.verify("prints/abd/print.jpg", expires, sig, filename="p.jpg")
    assert not local.verify(key, str(int(expires) + 3600), sig, filename="p.jpg")
    assert not local.verify(key, expires, sig[:-1] + ("A" if sig[-1] != "A" else "B"), filename="p.jpg")
    assert not local.verify(key, "soon", sig, filename="p.jpg")
    assert not local.verify("../x", expires, sig, filename="p.jpg")
    assert not local.verify(key, expires, "é", filename="p.jpg")
    other = LocalStorage(local.root, secret=b"another secret", base_url=BASE_URL, clock=local._clock)
    assert not other.verify(key, expires, sig, filename="p.jpg")


def test_local_writes_atomically_under_root(local, tmp_path):
    local.put("a/b/c.bin", b"data", content_type="application/octet-stream")
    assert (tmp_path / "files" / "a" / "b" / "c.bin").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "files" / "a" / "b").iterdir()] == ["c.bin"]

    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError("client went away")

    with pytest.raises(OSError):
        local.put("a/b/c.bin", Broken(), content_type="application/octet-stream")
    assert local.get("a/b/c.bin") == b"data"                # the old file, whole
    assert [p.name for p in (tmp_path / "files" / "a" / "b").iterdir()] == ["c.bin"]


def test_local_symlink_out_of_root_refused(local, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    local.root.mkdir(parents=True)
    (local.root / "link").symlink_to(outside)
    with pytest.raises(StorageError):
        local.get("link/secret.txt")


def test_local_needs_a_secret(tmp_path):
    with pytest.raises(StorageError):
        LocalStorage(tmp_path, secret=b"", base_url=BASE_URL)


# --- keys, URLs, headers -------------------------------------------------------------------

def test_make_key():
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert make_key("portraits", uid, "photo.jpg") == f"portraits/{uid}/photo.jpg"
    assert make_key("jobs", 42) == "jobs/42"
    for parts in [(), ("a/b",), ("..",), ("a", ""), ("a", "x y")]:
        with pytest.raises(StorageError):
            make_key(*parts)


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_rejects(key):
    with pytest.raises(StorageError):
        check_key(key)


def test_check_key_accepts():
    assert check_key("portraits/0f/photo.jpg") == "portraits/0f/photo.jpg"
    assert check_key("a") == "a"
    assert check_key("a_b-c.d.e") == "a_b-c.d.e"


def test_content_disposition_cannot_break_the_header():
    value = content_disposition('evil"\r\nSet-Cookie: x=1/../a.jpg')
    assert "\r" not in value and "\n" not in value
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    assert "/" not in fallback and '"' not in fallback


def test_storage_from_url(tmp_path):
    local = storage_from_url((tmp_path / "files").as_uri(), secret=SECRET, base_url=BASE_URL)
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "files"
    s3 = storage_from_url("s3://bucket/some/prefix/", secret=SECRET, base_url=BASE_URL)
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    assert s3._client is None                      # no client until first use
    assert s3.object_key("a/b.jpg") == "some/prefix/a/b.jpg"
    for url in ["http://x/y", "file://host/path", "s3:///prefix", "s3://bucket/../x", "ftp://a"]:
        with pytest.raises(StorageError):
            storage_from_url(url, secret=SECRET, base_url=BASE_URL)
