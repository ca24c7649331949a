"""Where the shop keeps photos, previews and prints: a local folder or an S3 bucket.

Both backends sit behind one small protocol, ``Storage``, so the app and the workers never
know which one they talk to. Keys are made by the server (``make_key("portraits", id,
"photo.jpg")``), never taken from a request, and every key is checked again on every call
(``check_key``), so a path like ``../../etc/passwd`` cannot reach the file system or the
bucket even if a caller forgets. Downloads go through short-lived signed URLs: S3 presigns
them itself; ``LocalStorage`` signs ``{base_url}/files/{key}`` with an HMAC that the app's
file route checks with ``LocalStorage.verify``.

Errors: ``KeyNotFound`` for a missing object, ``StorageError`` for a bad key or URL.
Infrastructure failures (a bucket that is down, a full disk) are not the customer's fault
and propagate as they are (botocore errors, ``OSError``), to be answered with a 5xx.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from impasto.errors import KeyNotFound, StorageError
from impasto.files import atomic_path
from impasto.service.core.signing import Keyring
from impasto.service.core.untrusted import MAX_TIMESTAMP, parse_int

log = logging.getLogger(__name__)

# One segment: starts with a letter or digit (so never ".", ".." or a hidden file), then
# letters, digits, ".", "_", "-". Everything else — "/", "\\", NUL, spaces, unicode,
# "%" — is refused rather than escaped: server-made keys never need it.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_SEGMENT_CHARS = 128
MAX_KEY_CHARS = 512            # S3 allows 1024 bytes; the prefix needs room too
MAX_SIGNED_URL_SECONDS = 7 * 24 * 3600   # SigV4's ceiling; keep both backends alike
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_CHUNK_BYTES = 1 << 20
FILE_MODE = 0o600              # LocalStorage's files: customers' photos, previews, prints
FOLDER_MODE = 0o700


def check_key(key: str) -> str:
    """``key`` unchanged when it is a safe relative key, else ``StorageError``.

    Safe: 1..512 characters, segments separated by single ``/``, each segment matching
    ``[A-Za-z0-9][A-Za-z0-9._-]*`` (≤ 128 characters). This refuses ``..``, absolute paths,
    backslashes, NUL, empty segments (``a//b``, trailing ``/``) and any odd character.
    """
    if not isinstance(key, str) or not key:
        raise StorageError("empty storage key")
    if len(key) > MAX_KEY_CHARS:
        raise StorageError(f"storage key longer than {MAX_KEY_CHARS} characters")
    for segment in key.split("/"):
        if len(segment) > MAX_SEGMENT_CHARS or not _SEGMENT.fullmatch(segment):
            raise StorageError(f"unsafe storage key {key!r}")
    return key


def make_key(*parts: object) -> str:
    """A key from safe parts, one segment each: ``make_key("portraits", uuid, "photo.jpg")``.

    Parts are ``str()``-ed (so a ``UUID`` or an int id can be passed) and must each be one
    safe segment: a part holding ``/`` is refused rather than split, so a value that came
    from a customer can never add directories.
    """
    if not parts:
        raise StorageError("a storage key needs at least one part")
    segments = [str(part) for part in parts]
    for segment in segments:
        if "/" in segment:
            raise StorageError(f"storage key part {segment!r} holds a '/'")
    return check_key("/".join(segments))


def content_disposition(filename: str) -> str:
    """``attachment`` header value naming ``filename`` safely (RFC 6266 with an ASCII fallback).

    Quotes, backslashes, control characters and path separators cannot break out of the
    header or name a directory: the ASCII fallback replaces them with ``_`` and the
    ``filename*`` form percent-encodes everything outside the unreserved set.
    """
    name = filename.replace("/", "_").replace("\\", "_").strip() or "download"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"%' else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


@runtime_checkable
class Storage(Protocol):
    """What the app and the workers need from a store of bytes under server-made keys."""

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str) -> None:
        """Store ``data`` (bytes or a readable binary stream) under ``key``, replacing any."""

    def get(self, key: str) -> bytes:
        """All bytes under ``key``; ``KeyNotFound`` when absent."""

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object (use as a context manager); ``KeyNotFound``."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (as in S3)."""

    def delete_folder(self, folder: str) -> int:
        """Remove every object whose key starts with ``folder/`` (``jobs/12``: not ``jobs/123``);
        how many there were. A missing folder is not an error."""

    def signed_url(self, key: str, *, expires_seconds: int, filename: str | None = None) -> str:
        """A URL that downloads the object for ``expires_seconds`` (as ``filename`` if given)."""

    def check(self) -> None:
        """``StorageError`` (or the client's error) unless the store can be reached: cheap, no write."""


def _check_put(key: str, content_type: str) -> None:
    check_key(key)
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type):
        raise StorageError(f"bad content type {content_type!r}")


def _check_expiry(expires_seconds: int) -> int:
    if isinstance(expires_seconds, bool) or not isinstance(expires_seconds, int) \
            or not 1 <= expires_seconds <= MAX_SIGNED_URL_SECONDS:
        raise StorageError(f"signed URL lifetime must be 1..{MAX_SIGNED_URL_SECONDS} s, "
                           f"not {expires_seconds!r}")
    return expires_seconds


class LocalStorage:
    """Files under ``root``; signed URLs point at the app's own ``/files/`` route.

    Writes are atomic (temp file + rename), so a reader never sees half a photo. Files are
    0600 and the folders made for them 0700, whatever the umask: customers' photos are
    for the shop's process alone (the render threads run in it). The content type is not
    stored: server-made keys carry the right extension, and the file
    route derives ``Content-Type`` from it (``mimetypes``). ``clock`` exists for tests of
    expiry.
    """

    def __init__(self, root: Path | str, *, secret: bytes, base_url: str, old_secrets: Iterable[bytes] = (),
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise StorageError("LocalStorage needs a non-empty secret to sign URLs")
        self.root = Path(root)
        self.base_url = base_url.rstrip("/")
        self._keys = Keyring(secret, old_secrets)     # old_secrets: URLs signed before a key rotation
        self._clock = clock

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r}, base_url={self.base_url!r})"

    def path(self, key: str) -> Path:
        """The file of ``key`` (for the file route's ``FileResponse``); checked to lie under root."""
        check_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        # Keys cannot name "..", but a symlink planted inside root could still lead out.
        if not path.is_relative_to(root):
            raise StorageError(f"storage key {key!r} resolves outside the storage root")
        return path

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str) -> None:
        _check_put(key, content_type)
        path = self.path(key)
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        with atomic_path(path, mode=FILE_MODE) as tmp, open(tmp, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, _CHUNK_BYTES)
        log.debug("stored %s", key)

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(f"no object under {key!r}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path(key)
        path.unlink(missing_ok=True)
        self._prune(path.parent)

    def delete_folder(self, folder: str) -> int:
        path = self.path(folder)
        if not path.is_dir() or path == self.root.resolve():
            return 0
        count = sum(1 for item in path.rglob("*") if item.is_file())
        shutil.rmtree(path)        # path() refused a folder that resolves outside the root
        self._prune(path.parent)
        return count

    def _prune(self, folder: Path) -> None:
        """Remove the folders a deletion left empty, up to (not including) the root: a
        customer's folder must not outlive the customer's files."""
        root = self.root.resolve()
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()
            except OSError:      # not empty (or already gone): stop here
                return
            folder = folder.parent

    def check(self) -> None:
        """The root is a folder this process can write into, or can be made by ``put``.

        Nothing is created: a missing mount must not be papered over by a fresh empty folder
        on the root file system, so a missing root passes only when its nearest existing
        ancestor is a writable folder (where ``put`` would make it).
        """
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise StorageError(f"storage root {self.root}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"storage root {self.root}: {folder} is not writable")

    def signed_url(self, key: str, *, expires_seconds: int, filename: str | None = None) -> str:
        check_key(key)
        expires = int(self._clock()) + _check_expiry(expires_seconds)
        query = {"expires": str(expires), "signature": self._sign(key, expires, filename)}
        if filename is not None:
            query["filename"] = filename
        return f"{self.base_url}/files/{key}?{urllib.parse.urlencode(query)}"

    def verify(self, key: str, expires: int | str, signature: str, *,
               filename: str | None = None) -> bool:
        """Whether a ``/files/`` request carries a valid, unexpired signature.

        Takes the query values as they arrive (strings); anything malformed is simply
        ``False``, never an exception, so the route answers 403 without a special case.
        """
        try:
            check_key(key)
        except StorageError:
            return False
        expires = parse_int(expires, maximum=MAX_TIMESTAMP)
        if expires is None or not isinstance(signature, str) or expires < self._clock():
            return False
        return self._keys.verify(self._message(key, expires, filename), signature)

    def _sign(self, key: str, expires: int, filename: str | None) -> str:
        return self._keys.mac(self._message(key, expires, filename))

    @staticmethod
    def _message(key: str, expires: int, filename: str | None) -> bytes:
        # NUL separators: no key, number or filename can contain one to shift a boundary.
        # A missing filename and an empty one sign differently ("-" vs "+").
        return "\0".join([key, str(expires), "-" if filename is None else "+" + filename]).encode("utf-8")


class S3Storage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2) under ``prefix``.

    ``client`` is a boto3 S3 client, or a zero-argument callable that makes one on first
    use: ``storage_from_url`` passes the callable so that reading the settings builds no
    client (and touches no network or credentials) until the first real call.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any) -> None:
        if not bucket:
            raise StorageError("S3Storage needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self._client = client if not callable(client) else None
        self._factory = client if callable(client) else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Storage({self.bucket!r}, {self.prefix!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def object_key(self, key: str) -> str:
        """The bucket key of ``key``: the prefix joined on, after the key is checked."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes | BinaryIO, *, content_type: str) -> None:
        _check_put(key, content_type)
        name = self.object_key(key)
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data), ContentType=content_type)
        else:
            # Streams go through the transfer manager: multipart above 8 MB, bounded memory.
            self.client.upload_fileobj(data, self.bucket, name, ExtraArgs={"ContentType": content_type})
        log.debug("stored s3://%s/%s", self.bucket, name)

    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        except Exception as exc:
            if _is_not_found(exc):
                raise KeyNotFound(f"no object under {key!r}") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def check(self) -> None:
        """One listing of at most one key under the prefix: the bucket exists and we may read it."""
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "",
                                    MaxKeys=1)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_folder(self, folder: str) -> int:
        prefix = self.object_key(folder) + "/"
        count = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            names = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if names:      # at most 1000 a page, which is also delete_objects' limit
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": names, "Quiet": True})
                count += len(names)
        return count

    def signed_url(self, key: str, *, expires_seconds: int, filename: str | None = None) -> str:
        params = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=_check_expiry(expires_seconds))


def _is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def storage_from_url(url: str, *, secret: bytes, base_url: str, endpoint_url: str | None = None,
                     old_secrets: Iterable[bytes] = ()) -> LocalStorage | S3Storage:
    """The storage a URL names: ``file:///srv/impasto/files`` or ``s3://bucket/prefix``.

    For S3 the boto3 client is made on first use, from the usual AWS credential chain;
    ``endpoint_url`` (``Settings.s3_endpoint_url``) points it at MinIO, R2 or moto, with
    path-style addressing, which those need and AWS accepts.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise StorageError(f"storage URL {url!r}: use file:///absolute/path")
        return LocalStorage(Path(urllib.parse.unquote(parsed.path)), secret=secret, base_url=base_url,
                            old_secrets=old_secrets)
    if parsed.scheme == "s3":
        if not parsed.netloc or parsed.query or parsed.fragment:
            raise StorageError(f"storage URL {url!r}: use s3://bucket/prefix")
        return S3Storage(parsed.netloc, parsed.path.strip("/"),
                         client=lambda: _make_s3_client(endpoint_url or None))
    raise StorageError(f"storage URL {url!r}: scheme must be file:// or s3://")


def _make_s3_client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4", retries={"mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint_url else {})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)
