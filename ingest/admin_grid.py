"""``cim admin grid``: a regular management grid for a city that has no address grid of its own.

Chinese cities did exactly this with the 万米单元网格 (square "ten-thousand-square-metre" cells) before their
address grids existed; the code hierarchy then works as anywhere else. The command writes the units as a
GeoPackage under ``$CIM_HOME/admin/`` (temp file + rename) and loads it through the ordinary
``ingest_files('admin', …)`` path, so the grid is checked and stored exactly like a city's own admin file.

Decisions:

- Cells are ``cell_m`` × ``cell_m`` squares in the storage CRS, aligned to multiples of ``cell_m`` (the same
  extent always gives the same cells) and covering the extent: a lon/lat box, or the extent of a file
  (an OSM file's header box, else its nodes; a vector file's bounds in its own CRS).
- One district (the given code and name), one street (``…001``, the whole area), communities of up to 9 × 9
  cells (≤ 81 grids each, the code allows 99) numbered from the north-west corner row by row, and inside each
  community its cells numbered the same way. More than 999 communities is refused: use larger cells.
- Names: the district's is ``--name``; others are derived (``NAME street 1``, ``NAME community 7``,
  ``NAME community 7 grid 12``). Each grid's cell (``R3C5``: row 3 from the north, column 5 from the west
  of the whole grid) and cell size go into its attributes.
- Loading the same grid again changes nothing (the ordinary admin merge skips unchanged units).
"""

from __future__ import annotations

import math
import os
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import osmium
import pyogrio
import shapely

from cim import codes
from cim.crs import CRS84, CRSError, transformer
from cim.settings import Settings, get_settings
from ingest.city_layers import ingest_files
from ingest.errors import IngestError
from ingest.load import LayerReport

BLOCK = 9  # a community is (up to) BLOCK × BLOCK cells
MAX_COMMUNITIES = 999
MIN_CELL_M, MAX_CELL_M = 10.0, 100_000.0
OSM_SUFFIXES = (".pbf", ".osm", ".o5m", ".osc", ".bz2", ".gz")


class AdminGridError(IngestError):
    """The grid cannot be made from these arguments; the message says which one and why."""


@dataclass
class GridResult:
    path: Path
    communities: int
    grids: int
    reports: list[LayerReport]


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """``minlon,minlat,maxlon,maxlat`` (degrees, CRS84) → a checked tuple."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AdminGridError(f"--bbox {text!r}: expected four numbers minlon,minlat,maxlon,maxlat") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise AdminGridError(f"--bbox {text!r}: expected four numbers minlon,minlat,maxlon,maxlat")
    return _checked_bbox((values[0], values[1], values[2], values[3]), f"--bbox {text}")


def _checked_bbox(b: tuple[float, float, float, float], where: str) -> tuple[float, float, float, float]:
    minlon, minlat, maxlon, maxlat = b
    if not (-180 <= minlon < maxlon <= 180 and -90 <= minlat < maxlat <= 90):
        raise AdminGridError(
            f"{where}: not a lon/lat box (need -180 <= minlon < maxlon <= 180, -90 <= minlat < maxlat <= 90)"
        )
    return b


def extent_of(path: Path) -> tuple[float, float, float, float]:
    """The lon/lat (CRS84) extent of an OSM file or a vector file."""
    if not path.exists():
        raise AdminGridError(f"{path}: no such file")
    if path.suffix.lower() in OSM_SUFFIXES:
        return _osm_extent(path)
    try:
        info = pyogrio.read_info(path)
    except Exception as exc:
        raise AdminGridError(f"{path}: cannot be read as an OSM or vector file ({exc})") from exc
    if info.get("crs") is None:
        raise AdminGridError(f"{path}: the file declares no CRS, so its extent cannot be placed")
    minx, miny, maxx, maxy = (float(v) for v in info["total_bounds"])
    try:
        t = transformer(str(info["crs"]), CRS84)
    except CRSError as exc:
        raise AdminGridError(f"{path}: {exc}") from exc
    xs, ys = _ring(minx, miny, maxx, maxy)
    lon, lat = t.transform(xs, ys)
    return _checked_bbox((float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))), str(path))


def _osm_extent(path: Path) -> tuple[float, float, float, float]:
    try:
        reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
        box = reader.header().box()
        reader.close()
        if box.valid():
            b = (box.bottom_left.lon, box.bottom_left.lat, box.top_right.lon, box.top_right.lat)
            return _checked_bbox(b, str(path))
        # No header box: the extent of the nodes (one pass over them, coordinates kept as compact arrays).
        lon, lat = array("d"), array("d")
        for node in osmium.FileProcessor(str(path), osmium.osm.NODE):
            if isinstance(node, osmium.osm.Node) and node.location.valid():
                lon.append(node.location.lon)
                lat.append(node.location.lat)
    except RuntimeError as exc:
        raise AdminGridError(f"{path}: cannot be read as OpenStreetMap data ({exc})") from exc
    if not lon:
        raise AdminGridError(f"{path}: has no nodes, so it has no extent")
    x, y = np.frombuffer(lon), np.frombuffer(lat)
    return _checked_bbox((float(x.min()), float(y.min()), float(x.max()), float(y.max())), str(path))


def _ring(minx: float, miny: float, maxx: float, maxy: float, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Points along a box's boundary: a projected box's extent is not its corners' extent."""
    t = np.linspace(0.0, 1.0, n)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full(n, maxx), maxx - (maxx - minx) * t, np.full(n, minx)])
    ys = np.concatenate([np.full(n, miny), miny + (maxy - miny) * t, np.full(n, maxy), maxy - (maxy - miny) * t])
    return xs, ys


def make_grid(
    district_code: str,
    name: str,
    cell_m: float,
    bbox: tuple[float, float, float, float],
    srid: int,
) -> gpd.GeoDataFrame:
    """District, street, communities and grids covering ``bbox`` (CRS84), in the storage CRS ``srid``.

    ``district_code`` must be a district code of the active city (``cim.codes.city_scope``)."""
    try:
        codes.validate(district_code, "district")
    except codes.CodeError as exc:
        raise AdminGridError(f"--district-code: {exc}") from None
    if not name.strip():
        raise AdminGridError("--name must not be empty")
    if not MIN_CELL_M <= cell_m <= MAX_CELL_M:
        raise AdminGridError(f"--cell-m {cell_m:g}: a cell is {MIN_CELL_M:g} to {MAX_CELL_M:g} m wide")
    xs, ys = _ring(*bbox)
    px, py = transformer(CRS84, f"EPSG:{srid}").transform(xs, ys)
    if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
        raise AdminGridError(f"the extent {bbox} lies outside the area of the storage CRS EPSG:{srid}")
    x0, x1 = math.floor(np.min(px) / cell_m) * cell_m, math.ceil(np.max(px) / cell_m) * cell_m
    y0, y1 = math.floor(np.min(py) / cell_m) * cell_m, math.ceil(np.max(py) / cell_m) * cell_m
    cols, rows = round((x1 - x0) / cell_m), round((y1 - y0) / cell_m)
    block_cols, block_rows = math.ceil(cols / BLOCK), math.ceil(rows / BLOCK)
    if block_cols * block_rows > MAX_COMMUNITIES:
        raise AdminGridError(
            f"{cols} × {rows} cells of {cell_m:g} m need {block_cols * block_rows} communities of up to "
            f"{BLOCK}×{BLOCK} cells; the code allows {MAX_COMMUNITIES}: use a larger --cell-m"
        )
    # Rows are counted from the north so numbers read like text.
    row, col = np.divmod(np.arange(rows * cols), cols)
    community = (row // BLOCK) * block_cols + col // BLOCK + 1
    in_block = (row % BLOCK) * BLOCK + col % BLOCK
    # Number the cells of each community 1..n in reading order.
    order = np.lexsort((in_block, community))
    number = np.empty(rows * cols, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(community[order])) + 1]
    counts = np.diff(np.r_[starts, order.size])
    number[order] = np.arange(order.size) - np.repeat(starts, counts) + 1

    street = f"{district_code}001"
    cells = shapely.box(x0 + col * cell_m, y1 - (row + 1) * cell_m, x0 + (col + 1) * cell_m, y1 - row * cell_m)
    community_codes = np.char.add(street, np.char.zfill(community.astype(str), 3))
    grid_codes = np.char.add(community_codes, np.char.zfill(number.astype(str), 2))
    area = shapely.box(x0, y0, x1, y1)
    ids = np.unique(community)
    community_geoms = [shapely.union_all(cells[community == c]) for c in ids]  # few communities
    frame = gpd.GeoDataFrame(
        {
            "code": [district_code, street, *(f"{street}{c:03d}" for c in ids), *grid_codes],
            "name": [
                name,
                f"{name} street 1",
                *(f"{name} community {c}" for c in ids),
                *(f"{name} community {c} grid {n}" for c, n in zip(community, number, strict=True)),
            ],
            # Text, so the attributes read back as written ("R3C5": row 3 from the north, column 5 from the west).
            "cell": [None, None, *([None] * len(ids)), *(f"R{r + 1}C{c + 1}" for r, c in zip(row, col, strict=True))],
            "cell_m": [None, None, *([None] * len(ids)), *([float(cell_m)] * len(cells))],
        },
        geometry=[area, area, *community_geoms, *cells],
        crs=srid,
    )
    return frame


def write_grid(frame: gpd.GeoDataFrame, settings: Settings, district_code: str) -> Path:
    """Write the grid GeoPackage under ``$CIM_HOME/admin/`` via a temp file in the same folder."""
    folder = settings.home / "admin"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"grid_{district_code}.gpkg"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".gpkg", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()  # GDAL creates the file itself
        pyogrio.write_dataframe(frame, tmp, layer="admin_units", driver="GPKG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def build_admin_grid(
    district_code: str,
    name: str,
    cell_m: float = 500.0,
    bbox: tuple[float, float, float, float] | None = None,
    source: Path | None = None,
    settings: Settings | None = None,
) -> GridResult:
    """Make, write and load a management grid over ``bbox`` or the extent of ``source`` (one of them)."""
    settings = settings or get_settings()
    if (bbox is None) == (source is None):
        raise AdminGridError("give exactly one of --bbox and --from")
    extent = bbox if bbox is not None else extent_of(source)  # type: ignore[arg-type]
    with codes.city_scope(settings.city_code):
        frame = make_grid(district_code, name, cell_m, extent, settings.storage_srid)
        path = write_grid(frame, settings, district_code)
        reports = ingest_files("admin", [path], settings=settings)
    levels = frame["code"].str.len()
    return GridResult(path, int((levels == 12).sum()), int((levels == 14).sum()), reports)
