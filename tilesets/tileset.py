"""The 3D Tiles 1.1 data model: local frames, bounding boxes, the tile tree as ``tileset.json``, and how a
built tileset directory replaces the published one atomically.

Decisions recorded here:
- **Frames.** Every content tile has its own ``transform``: east-north-up at a local origin → ECEF
  (EPSG:4978), from `cim.crs.enu_to_ecef_matrix` with the height-datum offset applied. Its
  content is float32 glTF (y-up) relative to that origin, and its ``box`` is axis-aligned in that frame.
  Tiles without content have no transform; their ``box`` is oriented in ECEF along east/north/up at the
  box centre. A box in a frame contains every corner of its children's boxes, so containment of content
  in every ancestor holds by convexity, not by luck.
- **Margins.** Boxes are grown by `BOX_MARGIN_M` (1 cm) on every side so float rounding of the corners
  never puts a vertex outside.
- **Atomic publish.** A build writes a complete tileset into a hidden staging folder beside the target
  (same filesystem), then `publish_directory` swaps it in: the first time by ``rename(2)`` (atomic), then by
  ``renameat2(RENAME_EXCHANGE)``, which exchanges the two directory entries in one step: every path lookup
  under ``<layer>/`` resolves in the complete old tree or the complete new one, never in a half-written
  tree and never in a gap. The old tree (now at the staging name) is deleted afterwards; files a reader
  already opened stay readable until closed. A client holding the old ``tileset.json`` that requests tiles
  after the swap gets the new tiles (unchanged tiles keep their paths; ``tilesetVersion`` tells caches
  apart). Where the kernel or filesystem lacks RENAME_EXCHANGE the swap falls back to two renames (old
  out, new in), leaving a gap of microseconds in which the layer folder is missing (a 404, never a
  half-written file).
- **One builder per layer.** `build_lock` takes an exclusive ``flock`` on ``.<layer>.lock``; a second build
  of the same layer fails at once instead of racing. Leftover staging folders of crashed builds are removed
  under that lock.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj

from cim.crs import as_3dtiles_transform, enu_to_ecef_matrix, storage_to_ecef
from cim.settings import get_settings

FloatArray = npt.NDArray[np.float64]

BOX_MARGIN_M = 0.01
_WGS84 = pyproj.CRS("EPSG:4978").ellipsoid
assert _WGS84 is not None
_A2 = _WGS84.semi_major_metre**2
_B2 = _WGS84.semi_minor_metre**2


class TilesetBusyError(RuntimeError):
    """Another build of the same tileset is running."""


# --------------------------------------------------------------------------------------------------
# Frames and boxes


def ellipsoid_up(ecef: npt.ArrayLike) -> FloatArray:
    """Unit ellipsoid normals (geodetic "up") at ECEF points near the WGS84 surface, shape (n, 3).

    The gradient of the ellipsoid equation through the point; for points within a few kilometres of the
    surface it differs from the normal at the foot point by under 1e-6 rad, so moving a point up by its
    height along this vector reproduces PROJ's geodetic → ECEF to well under a millimetre."""
    p = np.asarray(ecef, dtype=np.float64)
    g = p / np.array([_A2, _A2, _B2])
    return np.asarray(g / np.linalg.norm(g, axis=-1, keepdims=True), dtype=np.float64)


@dataclass(frozen=True)
class LocalFrame:
    """East-north-up at an origin: ``matrix`` takes local metres to ECEF (column vectors)."""

    matrix: FloatArray

    @classmethod
    def at_storage_point(cls, x: float, y: float, h_orthometric: float) -> LocalFrame:
        """The frame at a storage-CRS point with an orthometric height (datum offset applied by cim.crs).

        Same matrix as `cim.crs.storage_enu_to_ecef_matrix`, but longitude and latitude come from the point's
        ECEF position (through the storage → ECEF transformer the meshes use anyway) instead of a second
        storage → CRS84 transformer, whose creation costs PROJ about two seconds per process."""
        h = float(h_orthometric) + get_settings().height_offset_m
        ex, ey, ez = storage_to_ecef(x, y, h_orthometric)
        point = np.array([[float(ex), float(ey), float(ez)]])
        up = ellipsoid_up(point)
        for _ in range(3):  # the normal at the foot point: each step shrinks the error by ~h / 1e9
            up = ellipsoid_up(point - h * up)
        lon, lat = math.degrees(math.atan2(point[0, 1], point[0, 0])), math.degrees(math.asin(up[0, 2]))
        return cls(enu_to_ecef_matrix(lon, lat, h))

    @property
    def rotation(self) -> FloatArray:
        return self.matrix[:3, :3]

    @property
    def origin(self) -> FloatArray:
        return self.matrix[:3, 3]

    def to_local(self, ecef: npt.ArrayLike) -> FloatArray:
        """ECEF points (n, 3) → local east, north, up metres."""
        return np.asarray((np.asarray(ecef, dtype=np.float64) - self.origin) @ self.rotation, dtype=np.float64)

    def to_ecef(self, local: npt.ArrayLike) -> FloatArray:
        """Local east, north, up metres (n, 3) → ECEF."""
        return np.asarray(np.asarray(local, dtype=np.float64) @ self.rotation.T + self.origin, dtype=np.float64)

    def transform(self) -> list[float]:
        """The 16 column-major numbers of a 3D Tiles ``transform``."""
        return as_3dtiles_transform(self.matrix)


def aligned_box(lo: npt.ArrayLike, hi: npt.ArrayLike, margin: float = BOX_MARGIN_M) -> list[float]:
    """A 3D Tiles ``box`` (centre, three half-axes) spanning [lo, hi] along the frame's axes, plus margin."""
    lo_a, hi_a = np.asarray(lo, dtype=np.float64) - margin, np.asarray(hi, dtype=np.float64) + margin
    centre, half = (lo_a + hi_a) / 2, (hi_a - lo_a) / 2
    return [float(v) for v in (*centre, half[0], 0.0, 0.0, 0.0, half[1], 0.0, 0.0, 0.0, half[2])]


def box_corners(box: Sequence[float]) -> FloatArray:
    """The 8 corners (8, 3) of a 3D Tiles box, in the frame the box is given in."""
    b = np.asarray(box, dtype=np.float64)
    centre, axes = b[:3], b[3:].reshape(3, 3)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return np.asarray(centre + signs @ axes, dtype=np.float64)


def ecef_box_around(points: npt.ArrayLike, margin: float = BOX_MARGIN_M) -> list[float]:
    """An ECEF ``box`` holding ``points`` (n, 3), oriented east/north/up at their bounding centre."""
    p = np.asarray(points, dtype=np.float64)
    centre = (p.min(axis=0) + p.max(axis=0)) / 2
    up = ellipsoid_up(centre[None, :])[0]
    east = np.cross([0.0, 0.0, 1.0], up)
    east /= np.linalg.norm(east)
    north = np.cross(up, east)
    axes = np.stack([east, north, up])  # rows: unit axes
    local = (p - centre) @ axes.T
    lo, hi = local.min(axis=0) - margin, local.max(axis=0) + margin
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    box_centre = centre + mid @ axes
    half_axes = axes * half[:, None]
    return [float(v) for v in (*box_centre, *half_axes.reshape(-1))]


# --------------------------------------------------------------------------------------------------
# The tile tree


@dataclass
class Tile:
    """One tile: bounding box (in its parent's frame combined with its own ``transform``), geometric error
    in metres, optional content URI relative to tileset.json, optional local frame, children, and an
    optional ``refine`` overriding the one inherited from the parent ("ADD" or "REPLACE")."""

    box: list[float]
    geometric_error: float
    content_uri: str | None = None
    transform: list[float] | None = None
    children: list[Tile] = field(default_factory=list)
    refine: str | None = None

    def to_json(self, refine: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"boundingVolume": {"box": self.box}, "geometricError": self.geometric_error}
        if self.refine or refine:
            out["refine"] = self.refine or refine
        if self.transform is not None:
            out["transform"] = self.transform
        if self.content_uri is not None:
            out["content"] = {"uri": self.content_uri}
        if self.children:
            out["children"] = [c.to_json() for c in self.children]
        return out

    def walk(self) -> Iterator[Tile]:
        yield self
        for c in self.children:
            yield from c.walk()


def tileset_document(
    root: Tile,
    geometric_error: float,
    tileset_version: str,
    refine: str = "ADD",
    extras: dict[str, Any] | None = None,
    **asset_extras: Any,
) -> dict[str, Any]:
    """The ``tileset.json`` object (3D Tiles 1.1); ``refine`` is set on the root (unless the root tile has its
    own) and inherited; ``extras`` (application data, e.g. what a viewer needs to combine layers) goes on the
    tileset object."""
    for value in (refine, *(t.refine for t in root.walk() if t.refine is not None)):
        if value not in ("ADD", "REPLACE"):
            raise ValueError(f"refine must be ADD or REPLACE, not {value!r}")
    asset = {"version": "1.1", "tilesetVersion": tileset_version, "generator": "cim-twin tilesets", **asset_extras}
    doc: dict[str, Any] = {"asset": asset, "geometricError": geometric_error, "root": root.to_json(refine=refine)}
    if extras:
        doc["extras"] = extras
    return doc


def write_json(path: Path, doc: Any) -> None:
    """Write JSON through a temporary file in the same folder and ``os.replace`` it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file through a temporary name in the same folder and ``os.replace`` it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# Publishing


def staging_directory(target: Path) -> Path:
    """A new empty hidden folder beside ``target`` (same filesystem, so it can be renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


@contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold the exclusive build lock of ``target``; raises TilesetBusyError if another build holds it.

    Leftover staging folders of earlier, crashed builds are deleted once the lock is held."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(f".{target.name}.lock")
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TilesetBusyError(f"another build of {target} is running (lock {lock_path})") from None
        for stale in target.parent.glob(f".{target.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def publish_directory(staged: Path, target: Path) -> None:
    """Make the complete tileset in ``staged`` visible as ``target`` in one step (see module docstring)."""
    if not target.exists():
        try:
            os.rename(staged, target)
            return
        except OSError as exc:  # created meanwhile by someone not holding the lock: exchange below
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # now the previous version
        return
    old = target.with_name(f".{target.name}.staging-old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    os.rename(staged, target)
    shutil.rmtree(old, ignore_errors=True)
