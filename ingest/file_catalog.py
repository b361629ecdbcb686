"""What the raster, point-cloud and mesh ingests share: catalogue names, the source CRS, where a file lies in
the storage CRS, and placing files under ``$CIM_HOME`` so that a failed or killed ingest leaves no trace.

Decisions recorded here:
- **Names** follow the catalogue's CHECK: 1–64 characters of letters, digits, ``_ . -``, starting with a
  letter or digit. The default name is the file's stem.
- **CRS transformations** to the storage CRS follow `cim.crs` for CRSs with an EPSG/OGC code (so the
  CGCS2000 ↔ WGS84 null shift is allowed and nothing else is guessed). Other CRSs (e.g. IGNF codes, or a
  custom WKT) are transformed by PROJ only when it knows a real (non-"ballpark") operation.
- **Where a file lies**: its horizontal bounding box in its own CRS, with each edge densified to
  `DENSIFY_POINTS` points, transformed to the storage CRS. A box that misses the storage CRS's area of use
  entirely is refused: it is nearly always a wrong CRS or a file from another city, and the projection's
  numbers there are meaningless.
- **Placing files**: the new file (or folder) is written to a hidden temporary name in the target folder,
  validated, then swapped in with `os.replace` while the previous version waits under a hidden backup
  name; the database transaction commits inside that swap, and any failure puts the old version back. A
  SIGKILL can only leave hidden ``.<name>.<pid>.tmp``/``.old`` entries, which the next ingest into the
  folder removes (restoring a backup whose final name is missing).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyproj
import shapely
from pyproj.exceptions import ProjError
from shapely.geometry import Polygon, box

from cim.crs import CRS84, CRSError, parse_crs, transformer
from ingest.errors import IngestError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DENSIFY_POINTS = 21
# Hidden staging (.tmp) and backup (.old) entries, and the overview scratch file GDAL writes beside a COG.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?P<what>tmp|old)(?P<gdal>\.ovr\.tmp)?$")


class CatalogueError(IngestError):
    """A file cannot be catalogued: bad name, missing or unusable CRS, or it lies outside the storage CRS."""


def catalogue_name(path: Path, name: str | None) -> str:
    """The catalogue name: ``name`` or the file's stem; raises CatalogueError when it is not a valid name."""
    chosen = name if name is not None else path.stem
    if not NAME.fullmatch(chosen):
        origin = "--name" if name is not None else f"the file name {path.stem!r}"
        raise CatalogueError(
            f"{path}: {origin} is not a valid catalogue name (1-64 letters, digits, '_', '.', '-', "
            "starting with a letter or digit); pass --name"
        )
    return chosen


def user_crs(text: str, where: str) -> pyproj.CRS:
    """The CRS a user named with ``--crs`` (EPSG code, CRS84 or OGC URI); raises CatalogueError."""
    try:
        return parse_crs(text)
    except CRSError as exc:
        raise CatalogueError(f"{where}: {exc}") from None


def crs_label(crs: pyproj.CRS) -> tuple[str, int | None]:
    """How the catalogue names a CRS: ``AUTH:CODE`` when it has one (else its WKT), and its EPSG code."""
    authority = crs.to_authority()
    label = f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()
    return label, crs.to_epsg()


def transformer_between(src: pyproj.CRS, dst: pyproj.CRS | str, where: str) -> pyproj.Transformer:
    """An x/y-ordered transformer from ``src`` to ``dst`` under the policy of the module docstring; raises
    CatalogueError naming ``where`` when there is none."""
    try:
        return transformer(src, dst)
    except CRSError as exc:
        named_error: Exception = exc
    target = parse_crs(dst) if isinstance(dst, str) else dst
    try:
        return pyproj.Transformer.from_crs(src, target, always_xy=True, allow_ballpark=False)
    except ProjError:
        raise CatalogueError(
            f"{where}: cannot transform from {src.name} to {target.name} without guessing the datum shift "
            f"({named_error})"
        ) from None


def storage_transformer(src: pyproj.CRS, srid: int, where: str) -> pyproj.Transformer:
    """An x/y-ordered transformer from ``src`` to the storage CRS ``EPSG:<srid>``; raises CatalogueError."""
    return transformer_between(src, f"EPSG:{srid}", where)


def _densified_ring(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, DENSIFY_POINTS)[:-1]
    xs = np.concatenate(
        [xmin + (xmax - xmin) * t, np.full_like(t, xmax), xmax - (xmax - xmin) * t, np.full_like(t, xmin)]
    )
    ys = np.concatenate(
        [np.full_like(t, ymin), ymin + (ymax - ymin) * t, np.full_like(t, ymax), ymax - (ymax - ymin) * t]
    )
    return xs, ys


def storage_footprint(bounds: tuple[float, float, float, float], crs: pyproj.CRS, srid: int, where: str) -> Polygon:
    """The box ``bounds`` (xmin, ymin, xmax, ymax in ``crs``) as a densified polygon in ``EPSG:<srid>``.

    Raises CatalogueError when the box misses the storage CRS's area of use or cannot be transformed. A box
    of zero width or height (e.g. a single point) becomes a 1 cm square so the catalogue has an area."""
    xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    if not all(np.isfinite([xmin, ymin, xmax, ymax])) or xmin > xmax or ymin > ymax:
        raise CatalogueError(f"{where}: invalid bounds {bounds}")
    xs, ys = _densified_ring(xmin, ymin, xmax, ymax)
    _refuse_outside_area_of_use(xs, ys, crs, srid, where)
    tx, ty = storage_transformer(crs, srid, where).transform(xs, ys)
    tx, ty = np.asarray(tx, dtype=np.float64), np.asarray(ty, dtype=np.float64)
    if not (np.all(np.isfinite(tx)) and np.all(np.isfinite(ty))):
        raise CatalogueError(f"{where}: its extent cannot be transformed to EPSG:{srid} (outside the CRS area?)")
    ring = Polygon(np.column_stack([tx, ty]))
    if ring.area <= 0.0:
        cx, cy = float(np.mean(tx)), float(np.mean(ty))
        lo_x, hi_x, lo_y, hi_y = tx.min(), tx.max(), ty.min(), ty.max()
        ring = box(min(lo_x, cx - 0.005), min(lo_y, cy - 0.005), max(hi_x, cx + 0.005), max(hi_y, cy + 0.005))
    if not ring.is_valid:
        ring = shapely.make_valid(ring)
        if not isinstance(ring, Polygon):
            raise CatalogueError(f"{where}: its extent is not a simple polygon in EPSG:{srid}")
    return ring


def _refuse_outside_area_of_use(xs: np.ndarray, ys: np.ndarray, crs: pyproj.CRS, srid: int, where: str) -> None:
    area = parse_crs(f"EPSG:{srid}").area_of_use
    if area is None:
        return
    try:
        lon, lat = transformer_between(crs, CRS84, where).transform(xs, ys)
    except CatalogueError:
        return  # no way to lon/lat; the transformation to storage decides
    lon, lat = np.asarray(lon), np.asarray(lat)
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise CatalogueError(f"{where}: its extent has no longitude/latitude in {crs.name} (wrong CRS?)")
    if lon.max() < area.west or lon.min() > area.east or lat.max() < area.south or lat.min() > area.north:
        raise CatalogueError(
            f"{where}: it lies at lon {lon.min():.3f}..{lon.max():.3f}, lat {lat.min():.3f}..{lat.max():.3f}, "
            f"outside the area of the storage CRS EPSG:{srid} ({area.name}); wrong CRS?"
        )


def refuse_degrees_in_projected(bounds: tuple[float, float, float, float], crs: pyproj.CRS, where: str) -> None:
    """Coordinates that look like degrees in a projected CRS are nearly always a wrong or missing CRS."""
    xmin, ymin, xmax, ymax = bounds
    if crs.is_projected and -180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90 and (xmax - xmin) < 5:
        raise CatalogueError(
            f"{where}: coordinates look like longitude/latitude degrees but the CRS is {crs.name} (metres); "
            "pass the right --crs"
        )


# ---------------------------------------------------------------------------------------------------------
# Placing files atomically


def staging_path(final: Path) -> Path:
    """A hidden temporary path beside ``final`` (same file system) for its new version."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def _backup_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.old")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(folder: Path) -> None:
    """Remove what a killed ingest left in ``folder``: temporary entries of dead processes, and their backups
    (restored when the final name is missing, i.e. the kill came between the two renames)."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if not m:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        final = folder / m["name"]
        if m["what"] == "old" and not m["gdal"] and not final.exists():
            os.replace(entry, final)
        else:
            _remove(entry)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_folder(final: Path, files: list[tuple[Path, str]]) -> tuple[Path, dict[str, str]]:
    """Copy ``files`` (source, path relative to the folder) into a new hidden folder beside ``final``;
    returns it and the SHA-256 of each copied file (hashed while copying, one read per file). On any error
    the staged folder is removed."""
    staged = staging_path(final)
    hashes: dict[str, str] = {}
    try:
        staged.mkdir()
        for source, relative in files:
            target = staged / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with source.open("rb") as src, target.open("wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
            hashes[relative] = digest.hexdigest()
    except OSError as exc:  # a full disk, a file that vanished, no permission: the user's to fix
        _remove(staged)
        raise IngestError(f"cannot copy into {final.parent}: {exc}") from None
    except BaseException:
        _remove(staged)
        raise
    return staged, hashes


@contextmanager
def swapped_in(staged: Path, final: Path) -> Iterator[None]:
    """Move ``staged`` (file or folder) to ``final`` for the duration of the block, keeping the previous
    ``final`` aside; if the block raises, the previous version comes back and ``staged`` is deleted.

    Run the database transaction inside the block so file and row change together."""
    backup = _backup_path(final)
    had_old = final.exists()
    try:
        if had_old:
            os.replace(final, backup)
        os.replace(staged, final)
    except OSError as exc:
        if had_old and backup.exists() and not final.exists():
            os.replace(backup, final)
        _remove(staged)
        raise IngestError(f"cannot place {final}: {exc}") from exc
    try:
        yield
    except BaseException:
        _remove(final)
        if had_old:
            os.replace(backup, final)
        raise
    if had_old:
        _remove(backup)


@contextmanager
def new_folder(folder: Path) -> Iterator[Path]:
    """``folder``, created if missing; removed again if it was created here and the block fails leaving it
    empty (so a refused ingest leaves ``$CIM_HOME`` as it was)."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale(folder)
    try:
        yield folder
    except BaseException:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
