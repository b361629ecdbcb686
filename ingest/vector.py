"""Read vector files (GeoJSON, GeoPackage, Shapefile) and CSV tables into frames in the storage CRS.

Decisions:
- ``--crs`` states the CRS of the file's coordinates and overrides what the file declares (for files whose
  declaration is missing or wrong). A file with neither is refused.
- Coordinates that look like degrees in a file declared projected are refused: that is nearly always a
  missing or wrong CRS, and loading it would put the city in the sea off Africa.
- Large files are read in chunks (``read_vector_chunks``), by a forked process reading (and checking) one
  chunk ahead (``ingest.read_ahead``), so that reading, checking and loading overlap, and progress can be
  shown. Only formats GDAL can seek in (GeoPackage, Shapefile, FlatGeobuf) are read that way; the
  layer-wide checks then use the extent the file declares, and the check that every coordinate could be
  transformed runs when the last chunk is in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.raw
import shapely
import shapely.errors
from pyproj import CRS
from pyproj.exceptions import CRSError as ProjCRSError

from ingest.errors import IngestError
from ingest.read_ahead import read_ahead

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}
SEEKABLE_SUFFIXES = {".gpkg", ".shp", ".fgb"}
CHUNK_ROWS = 16_384
"""Features per chunk: small enough that loading overlaps reading, large enough that per-chunk costs vanish."""


def list_layers(path: Path) -> list[str]:
    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:
        raise IngestError(f"{path}: cannot be read as a vector file ({exc})") from exc


def parse_crs(text: str, where: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except ProjCRSError as exc:
        raise IngestError(f"{where}: unknown CRS {text!r}") from exc


def read_vector(
    path: Path, layer: str | None, crs: str | None, storage_srid: int, encoding: str | None = None
) -> gpd.GeoDataFrame:
    """One layer of a vector file, reprojected to the storage CRS. Raises IngestError with the file name.

    Malformed geometries (e.g. rings that are not closed) do not fail the file: each is repaired where GEOS
    can (recorded in ``frame.attrs["geometry_repairs"]``) or left empty with its reason in
    ``frame.attrs["geometry_problems"]`` for the layer checks to reject."""
    where = _check_path(path, layer)
    frame = _read_frame(path, layer, encoding, where)
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise IngestError(f"{where}: has no geometry column")
    if len(frame) == 0:
        raise IngestError(f"{where}: contains no features")
    source = _source_crs(crs, frame.crs, where)
    bounds = frame.geometry.total_bounds if len(frame) else np.zeros(4)
    _refuse_degrees_in_projected(bounds, source, where)
    _refuse_metres_in_geographic(bounds, source, where)
    frame = _to_storage(frame, source, storage_srid, where)
    _refuse_unprojected(frame.geometry.total_bounds if len(frame) else np.zeros(4), storage_srid, where)
    return frame


@dataclass
class VectorChunks:
    """A vector layer as consecutive chunks of features in file order, each in the storage CRS (with the
    ``geometry_repairs``/``geometry_problems`` attrs of ``read_vector``, by position in the chunk), or what
    ``read_vector_chunks``' ``then`` made of them. ``total``: the features the file declares (for progress)."""

    where: str
    total: int
    frames: Iterator[Any]


def read_vector_chunks(
    path: Path,
    layer: str | None,
    crs: str | None,
    storage_srid: int,
    encoding: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    then: Callable[[Iterator[gpd.GeoDataFrame]], Iterator[Any]] | None = None,
    ramp: bool = False,
) -> VectorChunks:
    """``read_vector`` in chunks of ``chunk_rows`` features. A file GDAL can seek in, with more than one
    chunk of features, is read chunk by chunk (see the module docstring); any other is read whole and
    handed out in slices. Raises IngestError as ``read_vector`` does (from the iterator for what only
    the features show).

    ``then`` turns the chunks into what the iterator yields (the layer checks): for a file read ahead, it
    runs in the reading process, so what it yields must pickle, and it must touch nothing but the chunks
    (its exceptions reach the caller). ``ramp``: the first two chunks read ahead are a quarter and a half
    of ``chunk_rows``, so that what follows the reading (checks, load) starts sooner."""
    where = _check_path(path, layer)
    info = _seekable_info(path, layer, encoding, chunk_rows)
    then = then or iter
    if info is None:
        frame = read_vector(path, layer, crs, storage_srid, encoding)
        return VectorChunks(where, len(frame), then(_slices(frame, chunk_rows)))
    source = _source_crs(crs, info["crs"], where)
    bounds = np.asarray(info["total_bounds"], dtype=float)
    _refuse_degrees_in_projected(bounds, source, where)
    _refuse_metres_in_geographic(bounds, source, where)
    total = int(info["features"])
    chunks = partial(_chunks, path, layer, encoding, where, source, storage_srid, chunk_rows, ramp)
    return VectorChunks(where, total, read_ahead(lambda: then(chunks())))


def _check_path(path: Path, layer: str | None) -> str:
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if path.suffix.lower() not in VECTOR_SUFFIXES:
        raise IngestError(f"{path}: unsupported format {path.suffix!r} (use GeoJSON, GeoPackage or Shapefile)")
    layers = list_layers(path)
    if layer is not None and layer not in layers:
        raise IngestError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
    return f"{path}" + (f" layer {layer}" if layer else "")


def _seekable_info(path: Path, layer: str | None, encoding: str | None, chunk_rows: int) -> dict | None:
    """The layer's metadata when it is worth reading in chunks (else None: read it whole)."""
    if path.suffix.lower() not in SEEKABLE_SUFFIXES:
        return None
    try:
        info = pyogrio.read_info(path, layer=layer, encoding=encoding, force_total_bounds=True)
    except Exception:
        return None  # the whole read reports what is wrong
    capabilities = info.get("capabilities") or {}
    if (
        int(info.get("features") or 0) <= chunk_rows
        or info.get("geometry_type") is None
        or not capabilities.get("fast_set_next_by_index")
        or info.get("total_bounds") is None
        or not np.all(np.isfinite(np.asarray(info["total_bounds"], dtype=float)))
    ):
        return None
    return dict(info)


def _slices(frame: gpd.GeoDataFrame, chunk_rows: int) -> Iterator[gpd.GeoDataFrame]:
    repairs = frame.attrs.get("geometry_repairs", {})
    problems = frame.attrs.get("geometry_problems", {})
    for start in range(0, len(frame), chunk_rows):
        stop = min(start + chunk_rows, len(frame))
        part = frame.iloc[start:stop]
        part.attrs = {
            "geometry_repairs": {i - start: r for i, r in repairs.items() if start <= i < stop},
            "geometry_problems": {i - start: r for i, r in problems.items() if start <= i < stop},
        }
        yield part


def _chunks(
    path: Path,
    layer: str | None,
    encoding: str | None,
    where: str,
    source: CRS,
    storage_srid: int,
    chunk_rows: int,
    ramp: bool = False,
) -> Iterator[gpd.GeoDataFrame]:
    low = np.full(2, np.inf)
    high = np.full(2, -np.inf)
    start = 0
    # Ramped: the first chunks are smaller, so that the pipeline of reading, checking and loading fills sooner.
    sizes = [max(chunk_rows // 4, 1), max(chunk_rows // 2, 1)] if ramp else []
    while True:  # until a chunk comes back short: the feature count a file declares is only a hint
        count = sizes.pop(0) if sizes else chunk_rows
        frame = _read_frame(path, layer, encoding, where, skip=start, count=count)
        if len(frame) == 0:
            break
        frame = _to_storage(frame.set_crs(source, allow_override=True), source, storage_srid, where)
        bounds = frame.geometry.total_bounds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a chunk of NaN coordinates: seen at the end
            low, high = np.fmin(low, bounds[:2]), np.fmax(high, bounds[2:])
        yield frame
        start += len(frame)
        if len(frame) < count:
            break
    _refuse_unprojected(np.concatenate([low, high]), storage_srid, where)


def _source_crs(crs: str | None, declared: object, where: str) -> CRS:
    """The CRS of the file's coordinates: ``--crs`` if given, else the file's own (which must be known)."""
    if crs is not None:
        return parse_crs(crs, where)
    if declared is None:
        raise IngestError(f"{where}: the file declares no CRS; pass --crs (e.g. --crs EPSG:4547)")
    try:
        source = CRS.from_user_input(declared)
    except ProjCRSError as exc:
        raise IngestError(f"{where}: unknown CRS in the file ({exc})") from exc
    if source.to_epsg() is None and not source.is_bound and source.name.lower() in ("unknown", "undefined"):
        raise IngestError(f"{where}: unknown CRS {source.name!r}; pass --crs")
    return source


def _to_storage(frame: gpd.GeoDataFrame, source: CRS, storage_srid: int, where: str) -> gpd.GeoDataFrame:
    target = CRS.from_epsg(storage_srid)
    if source.equals(target):
        return frame.set_crs(target, allow_override=True)
    try:
        return frame.set_crs(source, allow_override=True).to_crs(target)
    except Exception as exc:
        raise IngestError(f"{where}: cannot transform from {source.name} to EPSG:{storage_srid} ({exc})") from exc


def _refuse_unprojected(bounds: np.ndarray, storage_srid: int, where: str) -> None:
    if not np.all(np.isfinite(bounds)):
        raise IngestError(
            f"{where}: coordinates could not be transformed to EPSG:{storage_srid} (outside the CRS area?)"
        )


def _read_frame(
    path: Path, layer: str | None, encoding: str | None, where: str, skip: int = 0, count: int | None = None
) -> gpd.GeoDataFrame:
    """The features ``skip`` … ``skip + count`` (all by default) of the layer."""
    window: dict[str, int | None] = {"skip_features": skip, "max_features": count} if count is not None else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL's notes on unclosed rings: handled below
            return pyogrio.read_dataframe(path, layer=layer, encoding=encoding, **window)
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{where}: text attributes are not {encoding or 'UTF-8'} ({exc.reason} at byte {exc.start}); "
            "save the file as UTF-8 or pass --encoding (e.g. --encoding GBK)"
        ) from exc
    except shapely.errors.GEOSException:
        return _read_frame_per_feature(path, layer, encoding, where, window)
    except Exception as exc:
        raise IngestError(f"{where}: cannot be read ({str(exc).strip()})") from exc


def _read_frame_per_feature(
    path: Path, layer: str | None, encoding: str | None, where: str, window: dict[str, int | None]
) -> gpd.GeoDataFrame:
    """Slow path for files with malformed geometries: parse each feature's WKB on its own."""
    try:
        attrs = pyogrio.read_dataframe(path, layer=layer, encoding=encoding, read_geometry=False, **window)
        meta, _fids, wkb, _fields = pyogrio.raw.read(path, layer=layer, encoding=encoding, columns=[], **window)
    except Exception as exc:
        raise IngestError(f"{where}: cannot be read ({str(exc).strip()})") from exc
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    repairs: dict[int, str] = {}
    problems: dict[int, str] = {}
    for i in np.flatnonzero(np.array([w is not None for w in wkb]) & shapely.is_missing(geoms)):
        fixed = shapely.from_wkb(wkb[i], on_invalid="fix")
        if fixed is not None and not fixed.is_empty:
            geoms[i] = fixed
            repairs[int(i)] = "malformed geometry (e.g. a ring that is not closed) was closed and fixed"
        else:
            problems[int(i)] = "malformed geometry that cannot be read (e.g. a ring that is not closed)"
    frame = gpd.GeoDataFrame(attrs, geometry=geoms, crs=meta.get("crs"))
    frame.attrs["geometry_repairs"] = repairs
    frame.attrs["geometry_problems"] = problems
    return frame


def _refuse_metres_in_geographic(bounds: np.ndarray, source: CRS, where: str) -> None:
    """GDAL reads a GeoJSON whose ``crs`` member it does not know as CRS84: metres then pose as degrees."""
    if not source.is_geographic:
        return
    minx, miny, maxx, maxy = bounds
    if not (-180 <= minx <= maxx <= 360 and -90 <= miny <= maxy <= 90):
        raise IngestError(
            f"{where}: coordinates ({minx:.0f}, {miny:.0f}) are not longitude/latitude although the CRS is "
            f"{source.name}: the file's CRS is missing or unknown; pass --crs (e.g. --crs EPSG:4547)"
        )


def _refuse_degrees_in_projected(bounds: np.ndarray, source: CRS, where: str) -> None:
    if not source.is_projected:
        return
    minx, miny, maxx, maxy = bounds
    if -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90 and (maxx - minx) < 5:
        raise IngestError(
            f"{where}: coordinates look like longitude/latitude degrees but the CRS is {source.name} "
            "(metres); pass the right --crs (e.g. --crs EPSG:4490)"
        )


def read_csv(path: Path, required: list[str], encoding: str | None = None) -> pd.DataFrame:
    """A CSV table with text columns (codes keep their leading zeros); required columns must be there."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding=encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: the text is not {encoding or 'UTF-8'} ({exc.reason} at byte {exc.start}); save it as UTF-8 "
            "or pass --encoding (e.g. --encoding GBK)"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise IngestError(f"{path}: the file is empty") from exc
    except Exception as exc:
        raise IngestError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    return frame
