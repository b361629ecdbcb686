"""Read vector files (GeoJSON, GeoPackage, Shapefile) and CSV tables into frames in the storage CRS.

Decisions:
- ``--crs`` states the CRS of the file's coordinates and overrides what the file declares (for files whose
  declaration is missing or wrong). A file with neither is refused.
- Coordinates that look like degrees in a file declared projected are refused: that is nearly always a
  missing or wrong CRS, and loading it would put the city in the sea off Africa.
"""

from __future__ import annotations

import warnings
from pathlib import Path

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

VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".fgb"}


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
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if path.suffix.lower() not in VECTOR_SUFFIXES:
        raise IngestError(f"{path}: unsupported format {path.suffix!r} (use GeoJSON, GeoPackage or Shapefile)")
    layers = list_layers(path)
    if layer is not None and layer not in layers:
        raise IngestError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
    where = f"{path}" + (f" layer {layer}" if layer else "")
    frame = _read_frame(path, layer, encoding, where)
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise IngestError(f"{where}: has no geometry column")
    if len(frame) == 0:
        raise IngestError(f"{where}: contains no features")
    if crs is not None:
        source = parse_crs(crs, where)
        frame = frame.set_crs(source, allow_override=True)
    elif frame.crs is None:
        raise IngestError(f"{where}: the file declares no CRS; pass --crs (e.g. --crs EPSG:4547)")
    else:
        try:
            source = CRS.from_user_input(frame.crs)
        except ProjCRSError as exc:
            raise IngestError(f"{where}: unknown CRS in the file ({exc})") from exc
        if source.to_epsg() is None and not source.is_bound and source.name.lower() in ("unknown", "undefined"):
            raise IngestError(f"{where}: unknown CRS {source.name!r}; pass --crs")
    _refuse_degrees_in_projected(frame, source, where)
    _refuse_metres_in_geographic(frame, source, where)
    target = CRS.from_epsg(storage_srid)
    if not source.equals(target):
        try:
            frame = frame.to_crs(target)
        except Exception as exc:
            raise IngestError(f"{where}: cannot transform from {source.name} to EPSG:{storage_srid} ({exc})") from exc
    else:
        frame = frame.set_crs(target, allow_override=True)
    bounds = frame.geometry.total_bounds if len(frame) else np.zeros(4)
    if not np.all(np.isfinite(bounds)):
        raise IngestError(
            f"{where}: coordinates could not be transformed to EPSG:{storage_srid} (outside the CRS area?)"
        )
    return frame


def _read_frame(path: Path, layer: str | None, encoding: str | None, where: str) -> gpd.GeoDataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # GDAL's notes on unclosed rings: handled below
            return pyogrio.read_dataframe(path, layer=layer, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{where}: text attributes are not {encoding or 'UTF-8'} ({exc.reason} at byte {exc.start}); "
            "save the file as UTF-8 or pass --encoding (e.g. --encoding GBK)"
        ) from exc
    except shapely.errors.GEOSException:
        return _read_frame_per_feature(path, layer, encoding, where)
    except Exception as exc:
        raise IngestError(f"{where}: cannot be read ({str(exc).strip()})") from exc


def _read_frame_per_feature(path: Path, layer: str | None, encoding: str | None, where: str) -> gpd.GeoDataFrame:
    """Slow path for files with malformed geometries: parse each feature's WKB on its own."""
    try:
        attrs = pyogrio.read_dataframe(path, layer=layer, encoding=encoding, read_geometry=False)
        meta, _fids, wkb, _fields = pyogrio.raw.read(path, layer=layer, encoding=encoding, columns=[])
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


def _refuse_metres_in_geographic(frame: gpd.GeoDataFrame, source: CRS, where: str) -> None:
    """GDAL reads a GeoJSON whose ``crs`` member it does not know as CRS84: metres then pose as degrees."""
    if not source.is_geographic or not len(frame):
        return
    minx, miny, maxx, maxy = frame.geometry.total_bounds
    if not (-180 <= minx <= maxx <= 360 and -90 <= miny <= maxy <= 90):
        raise IngestError(
            f"{where}: coordinates ({minx:.0f}, {miny:.0f}) are not longitude/latitude although the CRS is "
            f"{source.name}: the file's CRS is missing or unknown; pass --crs (e.g. --crs EPSG:4547)"
        )


def _refuse_degrees_in_projected(frame: gpd.GeoDataFrame, source: CRS, where: str) -> None:
    if not source.is_projected or not len(frame):
        return
    minx, miny, maxx, maxy = frame.geometry.total_bounds
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
