"""``cim ingest <layer> PATH…``: read the ordinary city layers (vector files and CSV tables), prepare them,
and load them with the shared load step.

Pipes come as nodes and pipes: a GeoPackage with layers ``pipe_nodes`` and ``pipes``, or one file per layer
(the geometry type tells which). Nodes always load before pipes, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from cim import codes
from cim.settings import Settings, get_settings
from cim.store.merge import MergeOptions
from ingest.errors import IngestError
from ingest.kinds import LAYERS, TABLE_LAYERS
from ingest.layers import PREPARERS
from ingest.load import LayerReport, load_prepared
from ingest.prepare import Checker, GeometryTypes, Prepared, PreparedStream
from ingest.progress import Progress, counter, step
from ingest.vector import CHUNK_ROWS, list_layers, parse_crs, read_csv, read_vector, read_vector_chunks

CSV_REQUIRED = {
    "houses": ["house_code", "storey", "area_m2"],
    "observations": ["device_code", "observed_at", "property", "value"],
}


def prepare_file(
    kind: str, path: Path, crs: str | None, layer: str | None, settings: Settings, encoding: str | None = None
) -> list[Prepared]:
    """Read and check one file of layer ``kind``; returns the stage frames in load order."""
    return [stream.whole() for stream in prepare_streams(kind, path, crs, layer, settings, encoding)]


def prepare_streams(
    kind: str,
    path: Path,
    crs: str | None,
    layer: str | None,
    settings: Settings,
    encoding: str | None = None,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[PreparedStream]:
    """One file of layer ``kind`` as streams of checked chunks, in load order. What the whole file shows
    (a wrong CRS, missing columns, …) raises IngestError here or from the first chunk; ``progress`` counts
    the features read and checked."""
    srid = settings.storage_srid
    if kind in TABLE_LAYERS:
        frame = read_csv(path, CSV_REQUIRED[kind], encoding)
        # Row numbers are file lines: the header is line 1.
        chunks = _slices(frame, chunk_rows)
        return [_stream(kind, str(path), path.name, srid, len(frame), chunks, progress, first_row=2, unit="line")]
    if kind == "pipes":
        return [PreparedStream.of(p) for p in _prepare_pipes(path, crs, layer, settings, encoding)]
    where = f"{path}" + (f" layer {layer}" if layer else "")
    # The checks run where the chunks are read (a process of their own, for a large file): what crosses
    # to this process is the stage frame, already checked.
    check = partial(_checked, kind, where, path.name, srid)
    vector = read_vector_chunks(path, layer, crs, srid, encoding, chunk_rows, then=check, ramp=True)
    return [_counted(kind, vector.total, vector.frames, path.name, progress)]


def _slices(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, max(len(frame), 1), rows):
        yield frame.iloc[start : start + rows]


def _stream(
    kind: str,
    where: str,
    source_file: str,
    srid: int,
    total: int,
    frames: Iterator[pd.DataFrame],
    progress: Progress | None,
    first_row: int = 1,
    unit: str = "feature",
) -> PreparedStream:
    """Chunks of ``frames`` through ``PREPARERS[kind]``, with row numbers running on across chunks."""
    types = GeometryTypes(deferred=True)
    units = "lines" if unit == "line" else "features"

    def chunks() -> Iterator[Prepared]:
        read = counter(progress, f"reading {source_file}", total, units)
        checked = counter(progress, f"checking {source_file}", total, units)
        row = first_row
        for frame in frames:
            read.advance(len(frame))
            prepared = PREPARERS[kind](Checker(frame, where, row, unit, types), srid, source_file)
            checked.advance(len(frame))
            row += len(frame)
            yield prepared
        read.done()
        checked.done()

    return PreparedStream(kind, total, chunks(), unit, types.verify)


def _checked(kind: str, where: str, source_file: str, srid: int, frames: Iterator[pd.DataFrame]) -> Iterator[Prepared]:
    """The feature chunks of a vector layer through ``PREPARERS[kind]`` (row numbers running on across
    chunks); after the last, the layer-wide geometry type check (raises IngestError)."""
    types = GeometryTypes(deferred=True)
    row = 1
    for frame in frames:
        yield PREPARERS[kind](Checker(frame, where, row, "feature", types), srid, source_file)
        row += len(frame)
    types.verify()


def _counted(
    kind: str, total: int, chunks: Iterator[Prepared], source_file: str, progress: Progress | None
) -> PreparedStream:
    """Chunks checked as they were read (``_checked``), counted as read and checked as they arrive."""

    def counted() -> Iterator[Prepared]:
        read = counter(progress, f"reading {source_file}", total, "features")
        checked = counter(progress, f"checking {source_file}", total, "features")
        for prepared in chunks:
            read.advance(prepared.read)
            checked.advance(prepared.read)
            yield prepared
        read.done()
        checked.done()

    return PreparedStream(kind, total, counted())


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
    with codes.city_scope(settings.city_code):  # codes are checked against the settings' city
        parts: list[tuple[Path, PreparedStream]] = []
        for path in paths:
            step(progress, f"opening {path.name}")
            parts += [(path, p) for p in prepare_streams(kind, path, crs, layer, settings, encoding, progress)]
        if len(parts) > 1:
            # Several files or layers: all are read and checked before the load starts, so that a bad one
            # fails before any database work. Nodes before pipes whatever the order of files and layers.
            parts = [(path, PreparedStream.of(stream.whole())) for path, stream in parts]
            parts.sort(key=lambda item: item[1].layer == "pipes")
        # One file is read, checked and loaded chunk by chunk in one pass (the load step overlaps them).
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
