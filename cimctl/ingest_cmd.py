"""``cim ingest <kind> …``: one subcommand per source kind. The ordinary vector layers share one command
shape; other kinds (IFC, rasters, OSM, …) register their own subcommand on ``ingest``."""

from __future__ import annotations

from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail, progress_reporter, write_json_atomically
from cimctl.lazy import LazyGroup
from ingest.errors import IngestError
from ingest.kinds import LAYERS, TABLE_LAYERS

# Kinds with their own command modules, imported when used.
OTHER_KINDS = {
    "raster": "cimctl.photogrammetry:raster_command",
    "pointcloud": "cimctl.photogrammetry:pointcloud_command",
    "mesh": "cimctl.photogrammetry:mesh_command",
    "ifc": "cimctl.ifc:ifc_command",
    "osm": "cimctl.osm:osm_command",
}


@click.group(cls=LazyGroup, lazy_subcommands=OTHER_KINDS)
def ingest() -> None:
    """Load city data into PostGIS (every load is one transaction: all or nothing)."""


def _layer_command(layer: str) -> click.Command:
    kind = "CSV" if layer in TABLE_LAYERS else "GeoJSON, GeoPackage or Shapefile"
    extra = ""
    if layer == "pipes":
        extra = " Pass nodes and pipes as one GeoPackage (layers pipe_nodes, pipes) or as two files (also CSV)."

    @click.command(layer, help=f"Load {layer} from {kind} (columns: docs/input-formats.md).{extra}")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
    @click.option("--crs", default=None, help="CRS of the file's coordinates (overrides the file's own).")
    @click.option("--layer", "layer_name", default=None, help="Layer inside a multi-layer file (GeoPackage).")
    @click.option("--allow-rejects", is_flag=True, help="Load the valid features and report the rejected ones.")
    @click.option("--encoding", default=None, help="Text encoding of the attributes when not UTF-8 (e.g. GBK).")
    @click.option("--dry-run", is_flag=True, help="Check everything (database checks included), write nothing.")
    @click.option("--report", "report_file", type=click.Path(path_type=Path), help="Also write the report as JSON.")
    @click.option(
        "--snap-m",
        type=float,
        default=0.5,
        show_default=True,
        hidden=layer != "pipes",
        help="Pipe ends within this distance of their node are snapped onto it.",
    )
    @click.option(
        "--survey-date",
        default=None,
        hidden=layer != "buildings",
        help="YYYY-MM-DD: treat the file as a change survey of the area it covers.",
    )
    @click.option(
        "--extent",
        "survey_extent",
        type=click.Path(path_type=Path),
        default=None,
        hidden=layer != "buildings",
        help="Polygon file: the area the survey covers (default: its hull).",
    )
    def command(
        paths: tuple[Path, ...],
        crs: str | None,
        layer_name: str | None,
        allow_rejects: bool,
        encoding: str | None,
        dry_run: bool,
        report_file: Path | None,
        snap_m: float,
        survey_date: str | None,
        survey_extent: Path | None,
    ) -> None:
        # Imported here: the readers (GDAL, pandas, geopandas) are not for `cim ingest ifc|raster|…`.
        from ingest.city_layers import ingest_files

        try:
            ensure_database()
            with progress_reporter() as progress:
                reports = ingest_files(
                    layer,
                    list(paths),
                    crs=crs,
                    layer=layer_name,
                    allow_rejects=allow_rejects,
                    snap_m=snap_m,
                    survey_date=survey_date,
                    survey_extent=survey_extent,
                    dry_run=dry_run,
                    progress=progress,
                )
        except (IngestError, ClusterError, DatabaseError, MigrationError) as exc:
            if report_file:
                write_json_atomically(report_file, {"ok": False, "error": str(exc), "layers": []})
            fail(str(exc), getattr(exc, "details", ()))
        for report in reports:
            click.echo(report.summary())
        if report_file:
            write_json_atomically(report_file, {"ok": True, "layers": [r.to_dict() for r in reports]})
        if dry_run:
            click.echo("dry run: nothing was written")

    return command


for _layer in LAYERS:
    ingest.add_command(_layer_command(_layer))
