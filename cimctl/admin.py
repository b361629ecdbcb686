"""``cim admin grid``: a regular management grid for a city without an address grid of its own."""

from __future__ import annotations

from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail
from ingest.admin_grid import build_admin_grid, parse_bbox
from ingest.errors import IngestError


@click.group()
def admin() -> None:
    """Administrative units the city does not supply itself."""


@admin.command("grid")
@click.option("--district-code", required=True, help="6-digit district code (starts with CIM_CITY_CODE).")
@click.option("--name", required=True, help="The district's name; streets, communities and grids are named from it.")
@click.option("--cell-m", type=float, default=500.0, show_default=True, help="Side of a square grid cell, metres.")
@click.option("--bbox", default=None, help="Extent as minlon,minlat,maxlon,maxlat (degrees).")
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path),
    default=None,
    help="Cover the extent of this OSM or vector file.",
)
def grid(district_code: str, name: str, cell_m: float, bbox: str | None, source: Path | None) -> None:
    """Make district > street > communities > square grids over an extent and load them (GeoPackage kept
    under $CIM_HOME/admin/). Running it again with the same arguments changes nothing."""
    try:
        box = parse_bbox(bbox) if bbox is not None else None
        ensure_database()
        result = build_admin_grid(district_code, name, cell_m, bbox=box, source=source)
    except (IngestError, ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc), getattr(exc, "details", ()))
    click.echo(f"grid file: {result.path}")
    communities = f"{result.communities} communit{'y' if result.communities == 1 else 'ies'}"
    click.echo(f"1 district, 1 street, {communities}, {result.grids} grids of {cell_m:g} m")
    for report in result.reports:
        click.echo(report.summary())
