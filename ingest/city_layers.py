"""``cim ingest <layer> PATH…``: read the ordinary city layers (vector files and CSV tables), prepare them,
and load them with the shared load step.

Pipes come as nodes and pipes: a GeoPackage with layers ``pipe_nodes`` and ``pipes``, or one file per layer
(the geometry type tells which). Nodes always load before pipes, in the same transaction.
"""

from __future__ import annotations

from pathlib import Path

from cim.settings import Settings, get_settings
from ingest.errors import IngestError
from ingest.layers import PREPARERS
from ingest.load import LayerReport, load_prepared
from ingest.prepare import Checker, Prepared
from ingest.vector import list_layers, read_csv, read_vector

VECTOR_LAYERS = ("admin", "parcels", "buildings", "pipes", "devices", "events")
TABLE_LAYERS = ("houses", "observations")
LAYERS = VECTOR_LAYERS + TABLE_LAYERS
CSV_REQUIRED = {
    "houses": ["house_code", "storey", "area_m2"],
    "observations": ["device_code", "observed_at", "property", "value"],
}


def prepare_file(kind: str, path: Path, crs: str | None, layer: str | None, settings: Settings) -> list[Prepared]:
    """Read and check one file of layer ``kind``; returns the stage frames in load order."""
    srid = settings.storage_srid
    if kind in TABLE_LAYERS:
        frame = read_csv(path, CSV_REQUIRED[kind])
        # Row numbers are file lines: the header is line 1.
        return [PREPARERS[kind](Checker(frame, str(path), first_row=2, unit="line"), srid, path.name)]
    if kind == "pipes":
        return _prepare_pipes(path, crs, layer, settings)
    frame = read_vector(path, layer, crs, srid)
    where = f"{path}" + (f" layer {layer}" if layer else "")
    return [PREPARERS[kind](Checker(frame, where), srid, path.name)]


def _prepare_pipes(path: Path, crs: str | None, layer: str | None, settings: Settings) -> list[Prepared]:
    srid = settings.storage_srid
    names = [layer] if layer else list_layers(path)
    parts: list[Prepared] = []
    for name in names:
        frame = read_vector(path, name, crs, srid)
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


def ingest_files(
    kind: str,
    paths: list[Path],
    crs: str | None = None,
    layer: str | None = None,
    allow_rejects: bool = False,
    settings: Settings | None = None,
) -> list[LayerReport]:
    """Ingest files of one layer kind in one transaction. Raises IngestError (nothing written) on failure."""
    settings = settings or get_settings()
    if kind not in LAYERS:
        raise IngestError(f"unknown layer {kind!r}; use one of {', '.join(LAYERS)}")
    parts: list[tuple[Path, Prepared]] = []
    for path in paths:
        parts += [(path, p) for p in prepare_file(kind, path, crs, layer, settings)]
    # Nodes before pipes whatever the order of files and layers.
    parts.sort(key=lambda item: item[1].layer == "pipes")
    return load_prepared(parts, allow_rejects=allow_rejects, settings=settings)
