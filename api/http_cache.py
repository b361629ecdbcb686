"""The HTTP layer every tile kind shares (vector, raster, 3D Tiles): validators, conditional requests,
compression, CORS, byte ranges, and the in-memory cache of rendered tiles.

Decisions recorded here:
- **Strong ETags.** Rendered bodies (MVT, raster images, TileJSON): the first 128 bits of BLAKE2b over the
  bytes. Static files: ``"<inode>-<size>-<mtime ns>"`` in hex, taken from the open file: strong because
  tileset files are never modified in place (builds write a temporary file and rename it; unchanged tiles are
  hard-linked into the new folder, keeping inode and mtime), so new bytes always come with a new inode and
  mtime. The gzip representation has its own tag (``…-gz"``), as RFC 9110 wants for another content coding;
  ``If-None-Match`` is matched (weak comparison, ``*``) against both tags of the current content.
- **304** carries ETag, Cache-Control, Vary and the CORS header, and no body.
- **gzip** only when the client accepts it (``q`` > 0) and only for kinds that compress (MVT, JSON, glTF and
  the 3D Tiles binaries), never for PNG/WEBP/JPEG, which are compressed already, and never for a byte range
  (ranges address the identity bytes). A body is compressed once, when first asked for, and kept next to it
  in the cache; a body that gzip does not shrink by at least 10 % is always sent as it is. Rendered tiles
  use level 1 (the first request waits for it: a 240 kB MVT takes 12 ms at level 1, 45 ms at level 6, for
  96 kB against 89 kB), static files level 6 (once per file version). Compressible kinds carry
  ``Vary: Accept-Encoding``.
- **CORS**: tile responses always carry ``Access-Control-Allow-Origin: *`` (no credentials; the same bytes
  for every origin); preflights are answered by the app's CORS middleware (which also appends
  ``Vary: Origin`` to the responses it passes through).
- **Range** (static files): one range ``bytes=a-b``, ``a-`` or ``-n`` → 206 with Content-Range; a range
  starting past the end → 416 with ``Content-Range: bytes */size``; several ranges or a malformed header are
  ignored (200 with the whole file), as RFC 9110 allows; ``If-Range`` with another validator → 200 whole.
- **The cache** is one LRU per process bounded by bytes (``CIM_TILE_CACHE_MB``; body plus its gzip copy, or
  half the body for a copy not made yet), shared by all tile kinds. Keys name the data version they were
  rendered at, so an entry of an older version is never served; `TileCache.drop` frees them early when a
  version moves on.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "ETag, Content-Encoding, Content-Length, Content-Range, Accept-Ranges",
}
GZIP_LEVEL_RENDERED = 1  # rendered tiles: 3-4x faster than level 6 for ~8 % more bytes (MVT), on the miss path
GZIP_LEVEL_STATIC = 6  # static files: compressed once per file version, so the smaller result wins
MIN_GZIP_SAVING = 0.10
GZIP_INLINE_BYTES = 64 * 1024  # smaller bodies are compressed on the event loop, bigger ones in a thread
STREAM_CHUNK = 256 * 1024
IMMUTABLE = "public, max-age=31536000, immutable"


def max_age(seconds: int) -> str:
    return f"public, max-age={max(0, int(seconds))}"


def content_etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


def _gz_etag(etag: str) -> str:
    return etag[:-1] + '-gz"'


RawHeaders = list[tuple[bytes, bytes]]


@dataclass(eq=False)
class Body:
    """A rendered response body with its validator; ``gz`` is the gzip copy once made (``b""``: not worth it).

    ``status`` is 200, or 204 for an empty vector tile (the body is then empty). The encoded response headers
    of each way the body is answered are kept with it (`body_reply`), so a cache hit builds no headers."""

    content: bytes
    media_type: str
    compressible: bool
    status: int = 200
    etag: str = field(init=False)
    gz_etag: str = field(init=False)
    gz: bytes | None = None
    wire_headers: dict[tuple[int, bool, str], RawHeaders] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.etag = content_etag(self.content)
        self.gz_etag = _gz_etag(self.etag)
        if not self.compressible or len(self.content) < 256:
            self.gz = b""

    @property
    def nbytes(self) -> int:
        """Memory charged to the cache: the body, its gzip copy (half the body while not made yet), headers."""
        gz = len(self.gz) if self.gz is not None else len(self.content) // 2
        return len(self.content) + gz + 600

    def ensure_gzip(self) -> bytes:
        """The gzip copy (made now if needed), or ``b""`` when the identity bytes should be sent."""
        if self.gz is None:
            self.gz = gzip_or_empty(self.content, GZIP_LEVEL_RENDERED)
        return self.gz


def gzip_or_empty(data: bytes, level: int) -> bytes:
    """``data`` gzipped, or ``b""`` when that saves less than `MIN_GZIP_SAVING`."""
    packed = gzip.compress(data, compresslevel=level, mtime=0)
    return packed if len(packed) <= (1 - MIN_GZIP_SAVING) * len(data) else b""


class TileCache:
    """A thread-safe LRU of `Body` objects bounded by the memory charged for them when put (`Body.nbytes`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, max_bytes)
        self._items: OrderedDict[Hashable, tuple[Body, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Body | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, body: Body) -> None:
        size = body.nbytes
        if size > self.max_bytes // 4:  # one huge body must not flush everything else
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (body, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def drop(self, stale: Callable[[Hashable], bool]) -> int:
        """Remove every entry whose key ``stale`` says is out of date; returns how many."""
        with self._lock:
            keys = [k for k in self._items if stale(k)]
            for k in keys:
                self._bytes -= self._items.pop(k)[1]
            return len(keys)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}


# ---------------------------------------------------------------------------------------------------------
# Request headers

_accepts_gzip_cache: dict[str, bool] = {}


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (``gzip`` or ``*`` with q > 0; ``gzip;q=0`` refuses)."""
    if not header:
        return False
    known = _accepts_gzip_cache.get(header)
    if known is not None:
        return known
    codings: dict[str, float] = {}
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        codings[name.strip()] = q
    result = codings.get("gzip", codings.get("x-gzip", codings.get("*", 0.0))) > 0
    if len(_accepts_gzip_cache) < 256:
        _accepts_gzip_cache[header] = result
    return result


def none_match(header: str | None, *etags: str) -> bool:
    """True when an If-None-Match value names one of ``etags`` (or ``*``): the client's copy is current."""
    if not header:
        return False
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == "*" or tag in etags:
            return True
    return False


# ---------------------------------------------------------------------------------------------------------
# Responses of rendered bodies


def body_reply(
    accept_encoding: str | None, if_none_match: str | None, body: Body, cache_control: str
) -> tuple[int, RawHeaders, bytes]:
    """What to answer for ``body`` — status, encoded headers (shared: copy before changing), bytes: 304 when
    the client's copy is current, else the body, gzipped if the client accepts it and the gzip copy exists
    or is small (see `wants_gzip_work` for big ones)."""
    use_gzip = body.compressible and accepts_gzip(accept_encoding) and bool(body.ensure_gzip())
    if none_match(if_none_match, body.etag, body.gz_etag):
        status, content = 304, b""
    elif body.status == 204:
        status, content = 204, b""
    else:
        status, content = 200, (body.gz or b"") if use_gzip else body.content
    key = (status, use_gzip, cache_control)
    headers = body.wire_headers.get(key)
    if headers is None:
        items = [("etag", body.gz_etag if use_gzip else body.etag), ("cache-control", cache_control)]
        items += [(k.lower(), v) for k, v in CORS_HEADERS.items()]
        if body.compressible:
            items.append(("vary", "Accept-Encoding"))
        if status == 200:
            items.append(("content-type", body.media_type))
            items.append(("content-length", str(len(content))))
            if use_gzip:
                items.append(("content-encoding", "gzip"))
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
        body.wire_headers[key] = headers
    return status, headers, content


def body_response(request: Request, body: Body, cache_control: str) -> Response:
    """`body_reply` as a Starlette response."""
    h = request.headers
    status, headers, content = body_reply(h.get("accept-encoding"), h.get("if-none-match"), body, cache_control)
    response = Response(content, status_code=status)
    response.raw_headers = list(headers)  # a copy: middleware may edit the headers of the message in place
    return response


def wants_gzip_work(request: Request, body: Body) -> bool:
    """True when answering needs a gzip copy that is not made yet and is big enough to make in a thread."""
    return (
        body.gz is None
        and len(body.content) > GZIP_INLINE_BYTES
        and accepts_gzip(request.headers.get("accept-encoding"))
        and not none_match(request.headers.get("if-none-match"), body.etag, _gz_etag(body.etag))
    )


def make_gzip(body: Body) -> None:
    """Make ``body``'s gzip copy (run in a worker thread)."""
    body.ensure_gzip()


# ---------------------------------------------------------------------------------------------------------
# Static files


@dataclass(frozen=True)
class StaticKind:
    media_type: str
    compressible: bool


def static_etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One satisfiable range as (first, last) inclusive; None to ignore the header; ``"416"`` if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if not (first_s.isdigit() or first_s == "") or not (last_s.isdigit() or last_s == ""):
        return None
    if first_s == "":
        if last_s == "" or int(last_s) == 0:
            return None if last_s == "" else "416"
        n = min(int(last_s), size)
        return (size - n, size - 1) if size > 0 else "416"
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        return "416"
    return first, min(last, size - 1)


def static_file_response(
    request: Request,
    path: str,
    kind: StaticKind,
    cache_control: str,
    gzip_cache: TileCache,
) -> Response:
    """Serve one file (already resolved and checked by the caller) with ETag/304, Range/206/416 and gzip.

    The file is opened once; validator, length and bytes all come from that descriptor, so a tileset swapped
    in meanwhile cannot mix two versions in one response. Raises FileNotFoundError if it vanished."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        size = st.st_size
        etag = static_etag(st)
        gz_tag = _gz_etag(etag)
        headers = {"Cache-Control": cache_control, "Accept-Ranges": "bytes", **CORS_HEADERS}
        if kind.compressible:
            headers["Vary"] = "Accept-Encoding"
        if none_match(request.headers.get("if-none-match"), etag, gz_tag):
            headers["ETag"] = etag
            return Response(status_code=304, headers=headers)
        range_header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if range_header and if_range and if_range.strip() != etag:
            range_header = None
        byte_range = _parse_range(range_header, size) if range_header else None
        if byte_range == "416":
            headers["Content-Range"] = f"bytes */{size}"
            headers["ETag"] = etag
            return Response(status_code=416, headers=headers)
        if isinstance(byte_range, tuple):
            first, last = byte_range
            headers["ETag"] = etag
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            return Response(os.pread(fd, last - first + 1, first), status_code=206, headers=headers,
                            media_type=kind.media_type)  # fmt: skip
        if (
            kind.compressible
            and accepts_gzip(request.headers.get("accept-encoding"))
            and size <= 4 * GZIP_INLINE_BYTES * 64
        ):
            # Cached: the gzip bytes alone (b"" when gzip does not pay), keyed by the file's identity.
            key = ("static-gz", st.st_dev, st.st_ino, size, st.st_mtime_ns)
            packed = gzip_cache.get(key)
            if packed is None:
                data = _read_all(fd, size)
                packed = Body(gzip_or_empty(data, GZIP_LEVEL_STATIC), kind.media_type, False)
                gzip_cache.put(key, packed)
                if not packed.content:
                    headers["ETag"] = etag
                    return Response(data, headers=headers, media_type=kind.media_type)
            if packed.content:
                headers["ETag"] = gz_tag
                headers["Content-Encoding"] = "gzip"
                return Response(packed.content, headers=headers, media_type=kind.media_type)
        headers["ETag"] = etag
        if size <= STREAM_CHUNK:
            return Response(_read_all(fd, size), headers=headers, media_type=kind.media_type)
        headers["Content-Length"] = str(size)
        stream_fd, fd = fd, -1  # the stream owns the descriptor now
        return StreamingResponse(_chunks(stream_fd, size), headers=headers, media_type=kind.media_type)
    finally:
        if fd >= 0:
            os.close(fd)


def _read_all(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(STREAM_CHUNK * 16, size - offset), offset)
        if not chunk:
            break
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    try:
        offset = 0
        while offset < size:
            chunk = os.pread(fd, min(STREAM_CHUNK, size - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


def json_body(payload: Any) -> Body:
    """A JSON document as a cacheable, compressible body."""
    import json

    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Body(data, "application/json", True)
