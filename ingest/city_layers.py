"""``cim ingest <layer> PATH…``: read the ordinary city layers (vector files and CSV tables), prepare them,
and load them with the shared load step.

Pipes come as nodes and pipes: a GeoPackage with layers ``pipe_nodes`` and ``pipes``, or one file per layer
(the geometry type tells which). Nodes always load before pipes, in the same transaction.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cim import codes
from cim.settings import Settings, get_settings
from cim.store.merge import MergeOptions
from ingest.errors import IngestError
from ingest.layers import PREPARERS
from ingest.load import LayerReport, Progress, load_prepared
from ingest.prepare import Checker, Prepared
from ingest.vector import list_layers, parse_crs, read_csv, read_vector

VECTOR_LAYERS = ("admin", "parcels", "buildings", "pipes", "devices", "events")
TABLE_LAYERS = ("houses", "observations")
LAYERS = VECTOR_LAYERS + TABLE_LAYERS
CSV_REQUIRED = {
    "houses": ["house_code", "storey", "area_m2"],
    "observations": ["device_code", "observed_at", "property", "value"],
}


def prepare_file(
    kind: str, path: Path, crs: str | None, layer: str | None, settings: Settings, encoding: str | None = None
) -> list[Prepared]:
    """Read and check one file of layer ``kind``; returns the stage frames in load order."""
    srid = settings.storage_srid
    if kind in TABLE_LAYERS:
        frame = read_csv(path, CSV_REQUIRED[kind], encoding)
        # Row numbers are file lines: the header is line 1.
        return [PREPARERS[kind](Checker(frame, str(path), first_row=2, unit="line"), srid, path.name)]
    if kind == "pipes":
        return _prepare_pipes(path, crs, layer, settings, encoding)
    frame = read_vector(path, layer, crs, srid, encoding)
    where = f"{path}" + (f" layer {layer}" if layer else "")
    return [PREPARERS[kind](Checker(frame, where), srid, path.name)]


def _prepare_pipes(
    path: Path, crs: str | None, layer: str | None, settings: Settings, encoding: str | None
) -> list[Prepared]:
    srid = settings.storage_srid
    if path.suffix.lower() == ".csv":
        return [_prepare_pipes_csv(path, crs, settings, encoding)]
    names = [layer] if layer else list_layers(path)
    parts: list[Prepared] = []
    for name in names:
        frame = read_vector(path, name, crs, srid, encoding)
        types = set(frame.geometry.geom_type.dropna())
        if name == "pipe_nodes" or (name != "pipes" and types <= {"Point", "MultiPoint"}):
            kind = "pipe_nodes"
        elif name == "pipes" or types <= {"LineString", "MultiLineString"}:
            kind = "pipes"
        else:
            raise IngestError(
                f"{path} layer {name}: neither pipe nodes (points) nor pipes (lines); found {sorted(types)}"
            )
        parts.append(PREPARERS[kind](Checker(frame, f"{path} layer {name}"), srid, path.name))
    return parts


def _prepare_pipes_csv(path: Path, crs: str | None, settings: Settings, encoding: str | None) -> Prepared:
    """A CSV of pipes (has from_node: lines are drawn between the nodes) or of nodes (x, y columns in the
    CRS given with --crs)."""
    srid = settings.storage_srid
    frame = read_csv(path, [], encoding)
    where = str(path)
    if "from_node" in frame.columns:
        table = gpd.GeoDataFrame(frame, geometry=[None] * len(frame), crs=srid)
        return PREPARERS["pipes"](Checker(table, where, first_row=2, unit="line"), srid, path.name)
    missing = [c for c in ("x", "y") if c not in frame.columns]
    if missing:
        raise IngestError(f"{path}: a node CSV needs x and y columns (missing {', '.join(missing)})")
    if crs is None:
        raise IngestError(f"{path}: a CSV declares no CRS; pass --crs (e.g. --crs EPSG:4547)")
    x = pd.to_numeric(frame["x"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(frame["y"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    points = np.full(len(frame), None, dtype=object)
    points[ok] = shapely.points(x[ok], y[ok])
    table = gpd.GeoDataFrame(frame.drop(columns=["x", "y"]), geometry=points, crs=parse_crs(crs, where))
    table = table.to_crs(srid)
    return PREPARERS["pipe_nodes"](Checker(table, where, first_row=2, unit="line"), srid, path.name)


def ingest_files(
    kind: str,
    paths: list[Path],
    crs: str | None = None,
    layer: str | None = None,
    allow_rejects: bool = False,
    settings: Settings | None = None,
    *,
    snap_m: float = 0.5,
    survey_date: str | None = None,
    survey_extent: Path | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    encoding: str | None = None,
) -> list[LayerReport]:
    """Ingest files of one layer kind in one transaction. Raises IngestError (nothing written) on failure.

    ``survey_date`` (buildings only) treats the files as a change survey of the area they cover (or of
    ``survey_extent``, a polygon file): changed buildings get a new version dated then, buildings missing
    from the survey are demolished then, new ones are added. Rejects are never allowed in a survey: a
    rejected building would otherwise count as demolished."""
    settings = settings or get_settings()
    if kind not in LAYERS:
        raise IngestError(f"unknown layer {kind!r}; use one of {', '.join(LAYERS)}")
    if survey_date is not None:
        if kind != "buildings":
            raise IngestError("--survey-date applies to buildings only")
        if allow_rejects:
            raise IngestError(
                "--allow-rejects cannot be used with --survey-date (a rejected building would be taken as demolished)"
            )
        survey_date = _survey_date(survey_date)
    try:
        options = MergeOptions(
            snap_m=snap_m,
            survey_date=survey_date,
            survey_extent_wkb=_extent_wkb(survey_extent, crs, settings) if survey_extent else None,
        )
    except ValueError as exc:
        raise IngestError(str(exc)) from exc
    parts: list[tuple[Path, Prepared]] = []
    with codes.city_scope(settings.city_code):  # codes are checked against the settings' city
        for path in paths:
            if progress:
                progress(f"reading and checking {path.name}")
            parts += [(path, p) for p in prepare_file(kind, path, crs, layer, settings, encoding)]
    # Nodes before pipes whatever the order of files and layers.
    parts.sort(key=lambda item: item[1].layer == "pipes")
    return load_prepared(
        parts, allow_rejects=allow_rejects, settings=settings, options=options, dry_run=dry_run, progress=progress
    )


def _survey_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat() + "T00:00:00+08:00"
    except ValueError:
        raise IngestError(f"--survey-date {text!r} is not a date (YYYY-MM-DD)") from None


def _extent_wkb(path: Path, crs: str | None, settings: Settings) -> str:
    """The survey extent: the union of a polygon file's features, as hex WKB in the storage CRS."""
    frame = read_vector(path, None, crs, settings.storage_srid)
    polygons = [g for g in frame.geometry if g is not None and g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        raise IngestError(f"{path}: the survey extent needs polygons")
    return str(shapely.to_wkb(shapely.union_all(polygons), hex=True))
