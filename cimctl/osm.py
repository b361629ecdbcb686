"""``cim ingest osm PATH``: buildings, the walkable road network and service/device POIs from OpenStreetMap."""

from __future__ import annotations

from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail, progress_reporter, write_json_atomically
from ingest.errors import IngestError
from ingest.osm import ingest_osm


@click.command("osm")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--report", "report_file", type=click.Path(path_type=Path), help="Also write the report as JSON.")
def osm_command(path: Path, report_file: Path | None) -> None:
    """Load an OpenStreetMap extract (.osm.pbf, .osm): buildings with heights, the walkable road network
    (pgRouting-ready) and POIs of device/service kinds, in one transaction. Features outside every grid, or
    cut by the extract's edge, are skipped and counted (make a grid first with `cim admin grid --from PATH`
    if the city has none)."""
    try:
        ensure_database()
        with progress_reporter() as progress:
            report = ingest_osm(path, progress=progress)
    except (IngestError, ClusterError, DatabaseError, MigrationError) as exc:
        if report_file:
            write_json_atomically(report_file, {"ok": False, "error": str(exc)})
        fail(str(exc), getattr(exc, "details", ()))
    click.echo(report.summary())
    if report_file:
        write_json_atomically(report_file, {"ok": True, **report.to_dict()})
