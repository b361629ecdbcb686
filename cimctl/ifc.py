"""``cim ingest ifc PATH``: a BIM model (IFC2X3, IFC4, IFC4X3) as a building with its elements."""

from __future__ import annotations

import atexit
import dataclasses
import gc
from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail, progress_reporter, write_json_atomically
from ingest.errors import IngestError

# The interpreter's garbage collections at exit walk every object left (the parsed model, the imported
# modules): ~0.25 s of a 4 s ingest. Frozen objects are skipped, and the OS frees the memory anyway (in a test
# process that runs the command in-process, this only takes effect when that process exits).
atexit.register(gc.freeze)


@click.command("ifc")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--building-code",
    default=None,
    help="19-digit code of the building (default: the next free number "
    "in the grid the model lies in, or the code an earlier ingest of the same file got).",
)
@click.option(
    "--anchor",
    default=None,
    metavar="LON,LAT,H",
    help="Put the model's origin at this longitude, latitude (degrees) and orthometric height (m); "
    "overrides the file's georeference.",
)
@click.option(
    "--rotation",
    type=float,
    default=None,
    metavar="DEG",
    help="With --anchor: azimuth of the model's +Y axis, degrees clockwise from true north "
    "(default: the file's TrueNorth, else 0).",
)
@click.option(
    "--crs",
    default=None,
    help="CRS of the file's IfcMapConversion when its IfcProjectedCRS is missing or unnamed (overrides the file's).",
)
@click.option("--dry-run", is_flag=True, help="Check and place everything, then roll back: nothing is written.")
@click.option("--report", "report_file", type=click.Path(path_type=Path), help="Also write the report as JSON.")
def ifc_command(
    path: Path,
    building_code: str | None,
    anchor: str | None,
    rotation: float | None,
    crs: str | None,
    dry_run: bool,
    report_file: Path | None,
) -> None:
    """Load an IFC model: its building (footprint, height, storeys, code, grid and parcel links) and every
    element with a body (mesh, class, storey, property sets, quantities), in one transaction. Placement:
    IfcMapConversion, else IfcSite latitude/longitude, else --anchor."""
    # Imported here: IfcOpenShell takes ~0.4 s to load, which no other `cim` command should pay.
    from ingest.ifc_source import open_ifc

    try:
        if rotation is not None and anchor is None:
            raise IngestError("--rotation needs --anchor (a file's own georeference carries its rotation)")
        with progress_reporter() as progress:
            progress(f"reading {path.name}")
            source = open_ifc(path)
            # Triangulating starts now, in worker processes: the imports of the rest of the ingest (PROJ,
            # the database layer) and the database check below run meanwhile.
            source.start_triangulation()
            try:
                from ingest.ifc import ingest_ifc
                from ingest.ifc_georef import parse_anchor

                placed = parse_anchor(anchor, rotation) if anchor is not None else None
                ensure_database()
                report = ingest_ifc(
                    source, building_code=building_code, anchor=placed, crs=crs, dry_run=dry_run, progress=progress
                )
            finally:
                source.stop_triangulation()  # no worker outlives the command
    except (IngestError, ClusterError, DatabaseError, MigrationError) as exc:
        if report_file:
            write_json_atomically(report_file, {"ok": False, "error": str(exc)})
        fail(str(exc))
    click.echo(report.summary())
    if report_file:
        write_json_atomically(report_file, {"ok": True, **dataclasses.asdict(report)})
