"""``cim ingest <kind> …``: one subcommand per source kind. The ordinary vector layers share one command
shape; other kinds (IFC, rasters, OSM, …) register their own subcommand on ``ingest``."""

from __future__ import annotations

from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail
from ingest.city_layers import LAYERS, TABLE_LAYERS, ingest_files
from ingest.errors import IngestError


@click.group()
def ingest() -> None:
    """Load city data into PostGIS (every load is one transaction: all or nothing)."""


def _layer_command(layer: str) -> click.Command:
    kind = "CSV" if layer in TABLE_LAYERS else "GeoJSON, GeoPackage or Shapefile"

    @click.command(layer, help=f"Load {layer} from {kind} (columns: docs/input-formats.md).")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("--crs", default=None, help="CRS of the file's coordinates (overrides the file's own).")
    @click.option("--layer", "layer_name", default=None, help="Layer inside a multi-layer file (GeoPackage).")
    @click.option("--allow-rejects", is_flag=True, help="Load the valid features and report the rejected ones.")
    def command(paths: tuple[Path, ...], crs: str | None, layer_name: str | None, allow_rejects: bool) -> None:
        try:
            ensure_database()
            reports = ingest_files(layer, list(paths), crs=crs, layer=layer_name, allow_rejects=allow_rejects)
        except (IngestError, ClusterError, DatabaseError, MigrationError) as exc:
            fail(str(exc))
        for report in reports:
            click.echo(report.summary())

    return command


for _layer in LAYERS:
    ingest.add_command(_layer_command(_layer))
