"""``cim``: database, sample data, ingest and serving commands.

Every command that needs the database calls ``ensure_database`` first, so the embedded cluster starts (and
migrations apply) on first use; ``cim db down`` stops it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cim.cluster import ClusterError, EmbeddedCluster
from cim.db import DatabaseError, connect, ensure_database
from cim.migrate import MigrationError, schema_version
from cim.settings import get_settings
from cim.store.catalog import load_summary
from cimctl.common import fail
from cimctl.lazy import LazyGroup

# ---- command registry: one line per command module (imported when the command runs) ---------------------
COMMANDS = {
    "ingest": "cimctl.ingest_cmd:ingest",
    "changes": "cimctl.changes:changes",
    "heights": "cimctl.photogrammetry:heights",
    "admin": "cimctl.admin:admin",
    "tiles": "cimctl.tiles:tiles",
}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS)
def main() -> None:
    """CIM digital-twin service: ingest city geodata into PostGIS, build 3D Tiles, serve OGC APIs."""


# ---- database -------------------------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The database: embedded PostGIS under $CIM_HOME/pg, or CIM_DATABASE_URL."""


@db.command("up")
def db_up() -> None:
    """Initialise (once) and start the embedded cluster, create the database, apply migrations."""
    try:
        status = ensure_database()
    except (ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc))
        return
    where = "embedded cluster" if status.embedded else "CIM_DATABASE_URL"
    click.echo(f"database ready ({where}): {status.url}")
    click.echo(
        f"schema version {status.schema_version}, PostGIS {status.postgis_version}, "
        f"extensions: {', '.join(status.extensions)}"
    )


@db.command("down")
def db_down() -> None:
    """Stop the embedded cluster cleanly."""
    settings = get_settings()
    if settings.database_url:
        click.echo("CIM_DATABASE_URL is set: no embedded cluster to stop")
        return
    try:
        stopped = EmbeddedCluster(settings).stop()
    except ClusterError as exc:
        fail(str(exc))
        return
    click.echo("stopped" if stopped else "not running")


@db.command("status")
def db_status() -> None:
    """Where the database runs, whether it is up, and its schema version."""
    settings = get_settings()
    if settings.database_url:
        click.echo("database: CIM_DATABASE_URL (no embedded cluster)")
    else:
        cluster = EmbeddedCluster(settings)
        if not cluster.initialised:
            click.echo(f"embedded cluster: not initialised (would live in {cluster.root}); run `cim db up`")
            sys.exit(3)
        info = cluster.info()
        running = cluster.is_running()
        click.echo(f"embedded cluster: {cluster.data_dir}")
        click.echo(f"  state:  {'running' if running else 'stopped'}")
        click.echo(f"  socket: {info.socket_dir}")
        click.echo(f"  tcp:    127.0.0.1:{info.port} (user cim, password in {cluster.state_file})")
        click.echo(f"  url:    {info.url}")
        if not running:
            sys.exit(3)
    try:
        with connect(settings) as conn:
            click.echo(f"schema version: {schema_version(conn)}")
    except Exception as exc:  # report, do not crash: status is for diagnosis
        fail(f"cannot connect: {exc}")


@db.command("reset")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def db_reset(yes: bool) -> None:
    """Delete the embedded cluster and all its data, then create it anew (migrated, empty)."""
    settings = get_settings()
    if settings.database_url:
        fail("CIM_DATABASE_URL is set: reset only deletes the embedded cluster; drop that database yourself")
    if not yes and not click.confirm(f"delete every table and row in {settings.home / 'pg'}?"):
        sys.exit(1)
    try:
        EmbeddedCluster(settings).destroy()
        status = ensure_database(settings)
    except (ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc))
        return
    click.echo(f"reset: empty database at schema version {status.schema_version}")


# ---- sample data ----------------------------------------------------------------------------------------
@main.group()
def sample() -> None:
    """The demo district (Nanshan, Houhai), generated deterministically."""


@sample.command("generate")
@click.option(
    "--scale",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="1 ≈ 5,000 buildings; 10 ≈ 50k; 100 ≈ 500k.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Output folder (default $CIM_HOME/sample[-scale-N])."
)
@click.option("--seed", type=int, default=20261121, show_default=True)
def sample_generate(scale: int, out: Path | None, seed: int) -> None:
    """Write the demo district's files (GeoPackage, GeoJSON, CSV)."""
    from sample_data.generate import generate

    out = out or default_sample_dir(scale)
    files = generate(out, scale=scale, seed=seed)
    for name, path in sorted(files.items()):
        click.echo(f"{name:<13} {path}")


def default_sample_dir(scale: int) -> Path:
    home = get_settings().home
    return home / ("sample" if scale == 1 else f"sample-scale-{scale}")


# ---- demo -----------------------------------------------------------------------------------------------
@main.group()
def demo() -> None:
    """The demo city: generate, load, serve."""


@demo.command("load")
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True)
def demo_load(scale: int) -> None:
    """Generate the demo district (if not there yet) and load every layer; prints what is loaded."""
    load_demo(scale)


def load_demo(scale: int) -> None:
    from ingest.city_layers import ingest_files
    from ingest.errors import IngestError
    from sample_data.generate import LAYER_FILES, generate

    try:
        ensure_database()
    except (ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc))
    out = default_sample_dir(scale)
    if not all((out / f).exists() for f in LAYER_FILES.values()):
        click.echo(f"generating the demo district into {out} …")
        generate(out, scale=scale)
    for layer, name in LAYER_FILES.items():  # in load order
        try:
            reports = ingest_files(layer, [out / name])
        except IngestError as exc:
            fail(str(exc))
            return
        for report in reports:
            click.echo(report.summary())
    print_summary()


def print_summary() -> None:
    with connect() as conn:
        rows = load_summary(conn)
    click.echo("")
    click.echo(f"{'layer':<14}{'rows':>10}  measure")
    click.echo("-" * 44)
    for row in rows:
        value = row["measure"]
        if value is None:
            measure = ""
        elif float(value).is_integer() and row["unit"] in ("kinds", "properties", "open"):
            measure = f"{int(value):,} {row['unit']}"
        else:
            measure = f"{value:,.2f} {row['unit']}"
        click.echo(f"{row['layer']:<14}{row['rows']:>10,}  {measure}")


# ---- serve ----------------------------------------------------------------------------------------------
@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every request (about a tenth of the server's CPU per request under load).",
)
def serve(host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the API (api.app:app) until Ctrl-C."""
    import uvicorn

    try:
        ensure_database()
    except (ClusterError, DatabaseError, MigrationError) as exc:
        fail(str(exc))
    click.echo(f"serving http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run("api.app:app", host=host, port=port, workers=workers, log_level="info", access_log=access_log)


if __name__ == "__main__":
    main()
