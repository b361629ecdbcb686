"""Oblique-photogrammetry and scanning commands: ``cim ingest raster|pointcloud|mesh`` and
``cim heights from-dsm``. Each validates, writes files atomically and changes the catalogue in one
transaction; a user error prints one line and exits 1 with nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail, progress_reporter, write_json_atomically
from ingest.errors import IngestError
from ingest.heights_from_dsm import DEFAULT_STATISTIC, MIN_PIXELS, heights_from_dsm
from ingest.mesh import ingest_mesh, parse_origin
from ingest.pointcloud import ingest_pointcloud
from ingest.raster import RASTER_KINDS, ingest_raster

_USER_ERRORS = (IngestError, ClusterError, DatabaseError, MigrationError)


def _run(report_file: Path | None, work: Callable[[Callable[[str], None]], Any]) -> Any:
    """Run ``work(progress)`` with the database ready; report a user error in one line (and in the JSON
    report when one was asked for)."""
    try:
        ensure_database()
        with progress_reporter() as progress:
            result = work(progress)
    except _USER_ERRORS as exc:
        if report_file:
            write_json_atomically(report_file, {"ok": False, "error": str(exc)})
        fail(str(exc))
    click.echo(result.summary())
    if report_file:
        write_json_atomically(report_file, {"ok": True, **result.as_dict()})
    return result


_dry_run = click.option("--dry-run", is_flag=True, help="Validate and report; write nothing.")
_report = click.option("--report", "report_file", type=click.Path(path_type=Path), help="Also write a JSON report.")
_name = click.option("--name", default=None, help="Catalogue name (default: the file name without extension).")


@click.command("raster")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(RASTER_KINDS), required=True, help="Orthophoto, surface or terrain model.")
@_name
@_dry_run
@_report
def raster_command(path: Path, kind: str, name: str | None, dry_run: bool, report_file: Path | None) -> None:
    """Store a GeoTIFF (or any GDAL raster) as a Cloud-Optimized GeoTIFF and register it."""
    _run(report_file, lambda progress: ingest_raster(path, kind, name, dry_run=dry_run, progress=progress))


@click.command("pointcloud")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--crs", default=None, help="CRS of the coordinates (needed unless a LAS/LAZ file declares one).")
@_name
@_dry_run
@_report
def pointcloud_command(path: Path, crs: str | None, name: str | None, dry_run: bool, report_file: Path | None) -> None:
    """Register a point cloud (LAS/LAZ, PLY, XYZ text) for the 3D Tiles step."""
    _run(report_file, lambda progress: ingest_pointcloud(path, crs, name, dry_run=dry_run, progress=progress))


@click.command("mesh")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--crs", default=None, help="CRS of the origin and mesh axes (else from a ContextCapture metadata.xml).")
@click.option("--origin", default=None, help="X,Y,Z of the mesh's local 0,0,0 in that CRS (default 0,0,0).")
@click.option(
    "--up",
    type=click.Choice(["y", "z"]),
    default=None,
    help="Up axis of the mesh: z for OBJ (x east, y north), y for glTF (x east, z south); default by format.",
)
@_name
@_dry_run
@_report
def mesh_command(
    path: Path,
    crs: str | None,
    origin: str | None,
    up: str | None,
    name: str | None,
    dry_run: bool,
    report_file: Path | None,
) -> None:
    """Register a photogrammetry mesh (OBJ with its MTL and textures, glTF or GLB) placed at an origin."""

    def work(progress: Callable[[str], None]) -> Any:
        xyz = parse_origin(origin, str(path)) if origin is not None else None
        return ingest_mesh(path, crs, xyz, up, name, dry_run=dry_run, progress=progress)

    _run(report_file, work)


@click.group()
def heights() -> None:
    """Building heights measured from rasters."""


@heights.command("from-dsm")
@click.option("--dsm", required=True, help="Catalogue name of the surface model (kind dsm).")
@click.option("--dtm", required=True, help="Catalogue name of the terrain model (kind dtm).")
@click.option(
    "--statistic",
    default=DEFAULT_STATISTIC,
    show_default=True,
    help="Robust statistic of DSM-DTM inside each footprint: pNN (percentile), median, mean or max.",
)
@click.option(
    "--min-pixels",
    type=click.IntRange(1),
    default=MIN_PIXELS,
    show_default=True,
    help="Valid pixels a footprint needs to be measured.",
)
@_dry_run
@_report
def heights_from_dsm_command(
    dsm: str, dtm: str, statistic: str, min_pixels: int, dry_run: bool, report_file: Path | None
) -> None:
    """Set each covered building's height to a statistic of DSM - DTM over its footprint (height_source dsm)."""
    _run(
        report_file,
        lambda progress: heights_from_dsm(
            dsm, dtm, statistic=statistic, min_pixels=min_pixels, dry_run=dry_run, progress=progress
        ),
    )
