"""``cim tiles``: build the 3D Tiles 1.1 tilesets of the city model (see tilesets/build.py)."""

from __future__ import annotations

from pathlib import Path

import click

from cim.cluster import ClusterError
from cim.db import DatabaseError, ensure_database
from cim.migrate import MigrationError
from cimctl.common import fail
from tilesets.build import LAYERS, BuildOptions, NothingToTileError, TilesBuildError
from tilesets.tileset import TilesetBusyError


@click.group()
def tiles() -> None:
    """3D Tiles 1.1 tilesets under $CIM_HOME/tilesets/<layer>/."""


@tiles.command("build")
@click.option(
    "--layer",
    type=click.Choice([*LAYERS, "all"]),
    default="all",
    show_default=True,
    help="Which tileset to build.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding the layer folders: writes DIR/<layer>/tileset.json (default $CIM_HOME/tilesets).",
)
@click.option("--incremental", is_flag=True, help="Rewrite only the tiles whose features changed since the last build.")
@click.option("--max-features", type=click.IntRange(1), default=1000, show_default=True, help="Features per tile.")
@click.option(
    "--max-tile-bytes", type=click.IntRange(1), default=1_000_000, show_default=True, help="Raw bytes per tile."
)
def tiles_build(layer: str, out: Path | None, incremental: bool, max_features: int, max_tile_bytes: int) -> None:
    """Build (or update) tilesets from the database and register them in the tileset catalogue. With
    ``--layer all`` (the default) layers without data are skipped; a layer named explicitly must have data."""
    try:
        ensure_database()
    except (ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc))
    options = BuildOptions(max_features=max_features, max_tile_bytes=max_tile_bytes)
    names = list(LAYERS) if layer == "all" else [layer]
    for name in names:
        folder = out / name if out is not None else None
        try:
            report = LAYERS[name](out=folder, incremental=incremental, options=options, progress=click.echo)
        except NothingToTileError as exc:
            if layer != "all":
                fail(f"{name}: {exc}")
            click.echo(f"{name}: skipped, {exc}")
            continue
        except (TilesBuildError, TilesetBusyError) as exc:
            fail(f"{name}: {exc}")
        click.echo(report.summary())
