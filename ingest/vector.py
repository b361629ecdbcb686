"""Read vector files (GeoJSON, GeoPackage, Shapefile) and CSV tables into frames in the storage CRS.

Decisions:
- ``--crs`` states the CRS of the file's coordinates and overrides what the file declares (for files whose
  declaration is missing or wrong). A file with neither is refused.
- Coordinates that look like degrees in a file declared projected are refused: that is nearly always a
  missing or wrong CRS, and loading it would put the city in the sea off Africa.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
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


def read_vector(path: Path, layer: str | None, crs: str | None, storage_srid: int) -> gpd.GeoDataFrame:
    """One layer of a vector file, reprojected to the storage CRS. Raises IngestError with the file name."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    if path.suffix.lower() not in VECTOR_SUFFIXES:
        raise IngestError(f"{path}: unsupported format {path.suffix!r} (use GeoJSON, GeoPackage or Shapefile)")
    layers = list_layers(path)
    if layer is not None and layer not in layers:
        raise IngestError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as exc:
        raise IngestError(f"{path}: cannot be read ({exc})") from exc
    where = f"{path}" + (f" layer {layer}" if layer else "")
    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry.name not in frame:
        raise IngestError(f"{where}: has no geometry column")
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


def _refuse_degrees_in_projected(frame: gpd.GeoDataFrame, source: CRS, where: str) -> None:
    if not source.is_projected or not len(frame):
        return
    minx, miny, maxx, maxy = frame.geometry.total_bounds
    if -180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90 and (maxx - minx) < 5:
        raise IngestError(
            f"{where}: coordinates look like longitude/latitude degrees but the CRS is {source.name} "
            "(metres); pass the right --crs (e.g. --crs EPSG:4490)"
        )


def read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    """A CSV table with text columns (codes keep their leading zeros); required columns must be there."""
    if not path.exists():
        raise IngestError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except Exception as exc:
        raise IngestError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise IngestError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(frame.columns)})")
    return frame
