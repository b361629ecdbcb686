"""``cim ingest raster``: real GeoTIFFs become valid COGs in their own CRS with a catalogue row whose footprint is
the raster's bounds transformed independently with pyproj; bad rasters change nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.errors import IngestError
from ingest.file_catalog import staging_path, swapped_in, sweep_stale
from ingest.raster import ingest_raster

from cliharness import run_cli
from conftest import new_database
from dbcheck import fingerprint

DATA = Path(__file__).parents[2] / "shared" / "data" / "raster"


@pytest.fixture(scope="module")
def world_db(settings: Settings, cluster_url: str) -> Iterator[Settings]:
    """A database of this module storing in EPSG:3857 (the test rasters lie in America and Europe)."""
    with new_database(settings, cluster_url) as fresh:
        s = fresh.model_copy(update={"storage_srid": 3857})
        ensure_database(s)
        yield s


@pytest.fixture()
def world(world_db: Settings, tmp_path: Path) -> Settings:
    """The module's database with a $CIM_HOME of the test's own (names differ between tests)."""
    return world_db.model_copy(update={"home": tmp_path / "home"})


def catalogue(settings: Settings, name: str) -> tuple[Any, ...]:
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT kind, path, crs, bands, dtype, nodata, width, height, resolution, "
            "ST_AsBinary(footprint), ST_SRID(footprint) FROM rasters WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None, f"raster {name} not registered"
    return tuple(row)


def home_listing(settings: Settings) -> list[str]:
    root = settings.home
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_valid_cog(path: Path, overviews: int) -> None:
    with rasterio.open(path) as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert all(shape == (512, 512) for shape in ds.block_shapes)
        assert len(ds.overviews(1)) == overviews
    # GDAL's COG layout: the IFDs come first, and the ghost header says so.
    head = path.read_bytes()[:1024]
    assert b"LAYOUT=IFDS_BEFORE_DATA" in head


def independent_bounds(src_crs: str, bounds: tuple[float, ...], dst: int) -> tuple[float, ...]:
    t = pyproj.Transformer.from_crs(pyproj.CRS(src_crs), pyproj.CRS.from_epsg(dst), always_xy=True)
    return tuple(t.transform_bounds(bounds[0], bounds[1], bounds[2], bounds[3], densify_pts=21))


@pytest.mark.parametrize(
    ("file", "kind", "crs", "dtype", "bands", "overviews"),
    [
        ("RGB.byte.tif", "ortho", "EPSG:32618", "uint8", 3, 1),
        ("float_raster_with_nodata.tif", "dsm", "IGNF:ETRS89LAEA", "float32", 1, 0),
        ("shade.tif", "dtm", "EPSG:3857", "uint8", 1, 1),
    ],
)
def test_real_rasters_become_cogs_with_their_footprint(
    world: Settings, file: str, kind: str, crs: str, dtype: str, bands: int, overviews: int
) -> None:
    source = DATA / file
    report = ingest_raster(source, kind, settings=world)
    name = source.stem
    assert report.written and not report.replaced and report.name == name
    out = world.home / "rasters" / f"{name}.tif"
    assert report.path == str(out)
    assert_valid_cog(out, overviews)
    with rasterio.open(source) as src, rasterio.open(out) as cog:
        # Same grid, same CRS, same pixels (lossless), same nodata.
        assert cog.crs == src.crs and cog.transform == src.transform
        assert (cog.width, cog.height, cog.count, cog.nodata) == (src.width, src.height, src.count, src.nodata)
        assert np.array_equal(cog.read(), src.read())
        bounds = tuple(src.bounds)
        res = (abs(src.transform.a) * abs(src.transform.e)) ** 0.5  # non-square pixels: geometric mean
        width, height, nodata = src.width, src.height, src.nodata
    row = catalogue(world, name)
    assert row[:8] == (kind, str(out), crs, bands, dtype, nodata, width, height)
    assert row[8] == pytest.approx(res)
    footprint = shapely.from_wkb(bytes(row[9]))
    assert row[10] == 3857 and footprint.is_valid
    expected = independent_bounds(crs, bounds, 3857)
    assert footprint.bounds == pytest.approx(expected, abs=0.01)
    # The four corners, transformed by pyproj, are vertices of the footprint.
    t = pyproj.Transformer.from_crs(pyproj.CRS(crs), pyproj.CRS.from_epsg(3857), always_xy=True)
    cx, cy = t.transform([bounds[0], bounds[2], bounds[2], bounds[0]], [bounds[1], bounds[1], bounds[3], bounds[3]])
    verts = shapely.get_coordinates(footprint)
    for x, y in zip(cx, cy, strict=True):
        assert np.min(np.hypot(verts[:, 0] - x, verts[:, 1] - y)) < 1e-6
    assert len(verts) > 40  # densified edges
    assert home_listing(world) == ["rasters", f"rasters/{name}.tif"]


def test_reregistering_a_name_replaces_file_and_row(world: Settings) -> None:
    ingest_raster(DATA / "shade.tif", "ortho", name="base", settings=world)
    report = ingest_raster(DATA / "RGB.byte.tif", "ortho", name="base", settings=world)
    assert report.replaced
    row = catalogue(world, "base")
    assert row[2:8] == ("EPSG:32618", 3, "uint8", 0.0, 791, 718)
    with rasterio.open(world.home / "rasters" / "base.tif") as ds:
        assert (ds.width, ds.count) == (791, 3)
    with connect(world) as conn:
        assert conn.execute("SELECT count(*) FROM rasters WHERE name = %s", ("base",)).fetchone() == (1,)
    assert home_listing(world) == ["rasters", "rasters/base.tif"]


def test_corrupt_tiff_fails_cleanly_and_leaves_everything_as_it_was(world: Settings) -> None:
    ingest_raster(DATA / "shade.tif", "ortho", name="corrupt", settings=world)
    before, files_before = fingerprint(world), home_listing(world)
    cog_before = (world.home / "rasters" / "corrupt.tif").read_bytes()
    with pytest.raises(IngestError) as err:
        ingest_raster(DATA / "corrupt.tif", "ortho", settings=world)
    message = str(err.value)
    assert "corrupt.tif" in message and "cannot read the pixel data" in message and "\n" not in message
    assert fingerprint(world) == before
    assert home_listing(world) == files_before
    assert (world.home / "rasters" / "corrupt.tif").read_bytes() == cog_before


def test_first_failure_leaves_no_rasters_folder(world: Settings) -> None:
    before = fingerprint(world)
    with pytest.raises(IngestError, match=r"corrupt\.tif"):
        ingest_raster(DATA / "corrupt.tif", "dtm", name="x", settings=world)
    with pytest.raises(IngestError, match=r"corrupt\.tif.*pixel data"):
        ingest_raster(DATA / "corrupt.tif", "ortho", settings=world)
    assert fingerprint(world) == before
    assert home_listing(world) == []


def write_tif(path: Path, data: np.ndarray, crs: str | None, transform: object = None) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2], "count": data.shape[0]}
    profile.update(dtype=data.dtype.name, crs=crs, transform=transform or from_origin(500_000, 2_500_000, 1, 1))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


BAD_RASTERS = [
    (lambda p: write_tif(p, np.zeros((1, 8, 8), "float32"), None), "dsm", "declares no CRS"),
    (lambda p: write_tif(p, np.zeros((3, 8, 8), "float32"), "EPSG:4547"), "dtm", "one band of heights"),
    (lambda p: write_tif(p, np.zeros((1, 8, 8), "complex64"), "EPSG:4547"), "dsm", "not an integer or"),
    (lambda p: p.write_bytes(b""), "ortho", "not a readable raster"),
    (lambda p: p.write_bytes(b"II*\x00" + b"\xff" * 60), "ortho", "not a readable raster"),
    (lambda p: sparse_tif(p, 60_000), "dsm", r"claims 13\.4 GiB of pixels in a 0\.\d MiB file"),
]


def sparse_tif(path: Path, side: int) -> None:
    """A header claiming side x side float32 pixels with (almost) no data written."""
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "float32", "crs": "EPSG:4547"}
    profile.update(transform=from_origin(500_000, 2_500_000, 0.1, 0.1), tiled=True, sparse_ok=True)
    with rasterio.open(path, "w", **profile):
        pass


def test_bad_rasters_are_refused(world: Settings, tmp_path: Path) -> None:
    before = fingerprint(world)
    for k, (make, kind, message) in enumerate(BAD_RASTERS):
        path = tmp_path / f"bad{k}.tif"
        make(path)
        with pytest.raises(IngestError, match=message) as err:
            ingest_raster(path, kind, settings=world)
        assert str(err.value).startswith(f"{path}: ")
    assert fingerprint(world) == before and home_listing(world) == []


def test_raster_far_from_the_storage_crs_is_refused(fresh_settings: Settings, tmp_path: Path) -> None:
    s = fresh_settings.model_copy(update={"home": tmp_path / "home"})  # EPSG:4547, Shenzhen
    ensure_database(s)
    before = fingerprint(s)
    with pytest.raises(IngestError, match=r"RGB.byte.tif: it lies at lon -7\d\.\d+.*outside the area of.*EPSG:4547"):
        ingest_raster(DATA / "RGB.byte.tif", "ortho", settings=s)
    # Damage is reported before location (corrupt.tif lies in Korea), also by a dry run.
    for dry_run in (True, False):
        with pytest.raises(IngestError, match=r"corrupt\.tif: cannot read the pixel data \(.*TIFFReadEncodedTile"):
            ingest_raster(DATA / "corrupt.tif", "ortho", dry_run=dry_run, settings=s)
    assert fingerprint(s) == before and home_listing(s) == []
    # A DSM in Shenzhen, in a UTM CRS on WGS84, is fine: CGCS2000 and WGS84 are treated as one datum.
    grid = from_origin(190_000, 2_500_000, 0.5, 0.5)
    dsm = write_tif(tmp_path / "dsm.tif", np.full((1, 20, 30), 12.5, "float32"), "EPSG:32650", grid)
    report = ingest_raster(dsm, "dsm", settings=s)
    assert report.written and report.crs == "EPSG:32650"
    x0, y0, x1, y1 = report.footprint_bounds
    assert 400_000 < x0 < x1 < 600_000 and 2_400_000 < y0 < y1 < 2_600_000


def test_cli_reports_corrupt_file_in_one_line_and_dry_run_writes_nothing(
    world: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update(CIM_HOME=str(world.home), CIM_DATABASE_URL=str(world.database_url), CIM_STORAGE_SRID="3857")
    cim = str(Path(sys.executable).parent / "cim")
    before = fingerprint(world)
    bad = subprocess.run(
        [cim, "ingest", "raster", str(DATA / "corrupt.tif"), "--kind", "ortho"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1 and "corrupt.tif" in bad.stderr
    report = world.home.parent / "report.json"
    dry = run_cli(
        world,
        monkeypatch,
        "ingest",
        "raster",
        str(DATA / "shade.tif"),
        "--kind",
        "dtm",
        "--dry-run",
        "--report",
        str(report),
    )
    assert dry.exit_code == 0, dry.stderr
    assert "valid (dry run)" in dry.stdout
    assert '"written": false' in report.read_text()
    assert fingerprint(world) == before and home_listing(world) == []


def test_killed_ingest_leaves_catalogue_unchanged_and_is_swept_by_the_next(world: Settings, tmp_path: Path) -> None:
    big = tmp_path / "big.tif"
    noise = np.random.default_rng(5).normal(10.0, 3.0, (1, 4000, 4000)).astype("float32")
    write_tif(big, noise, "EPSG:4547", from_origin(500_000, 2_500_000, 0.5, 0.5))
    ingest_raster(DATA / "shade.tif", "ortho", name="big", settings=world)
    before, files_before = fingerprint(world), home_listing(world)
    cog_before = (world.home / "rasters" / "big.tif").read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update(CIM_HOME=str(world.home), CIM_DATABASE_URL=str(world.database_url), CIM_STORAGE_SRID="3857")
    cim = str(Path(sys.executable).parent / "cim")
    proc = subprocess.Popen(
        [cim, "ingest", "raster", str(big), "--kind", "dsm", "--name", "big"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    folder = world.home / "rasters"
    deadline = time.monotonic() + 120
    try:
        while not any(p.name.startswith(".big.") for p in folder.iterdir()):
            assert proc.poll() is None, "the ingest ended before it was killed"
            assert time.monotonic() < deadline, "the ingest never started writing"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Killed while writing: the catalogue and the registered file are as they were; only hidden scratch is left.
    assert fingerprint(world) == before
    assert (folder / "big.tif").read_bytes() == cog_before
    leftovers = sorted(set(home_listing(world)) - set(files_before))
    assert leftovers and all(Path(p).name.startswith(f".big.tif.{proc.pid}.tmp") for p in leftovers), leftovers
    # The next ingest into the folder removes the dead process's scratch files.
    ingest_raster(DATA / "float_raster_with_nodata.tif", "dsm", name="small", settings=world)
    assert home_listing(world) == sorted([*files_before, "rasters/small.tif"])


def test_a_failure_after_the_swap_puts_the_previous_version_back(tmp_path: Path) -> None:
    final, staged = tmp_path / "r.tif", staging_path(tmp_path / "r.tif")
    final.write_bytes(b"old")
    staged.write_bytes(b"new")
    with pytest.raises(RuntimeError), swapped_in(staged, final):
        assert final.read_bytes() == b"new"
        raise RuntimeError("the transaction failed")
    assert final.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.tif"]
    # A process killed between its two renames left only the backup: the next sweep restores it.
    dead = tmp_path / ".r.tif.999999999.old"
    final.rename(dead)
    sweep_stale(tmp_path)
    assert final.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.tif"]
