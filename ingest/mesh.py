"""``cim ingest mesh PATH --crs EPSG:x [--origin X,Y,Z] [--up y|z] [--name NAME]``: register a
photogrammetry mesh (OBJ with its MTL and textures, glTF or GLB) in the ``assets`` catalogue for the 3D Tiles
step.

Decisions recorded here:
- **Placement**: mesh coordinates are metres relative to an origin given in a projected CRS:
  world = origin + (east, north, up). ``--origin`` defaults to 0,0,0 (the mesh already holds CRS
  coordinates). Without ``--crs``/``--origin`` a ContextCapture ``metadata.xml`` (``<SRS>EPSG:x</SRS>``,
  ``<SRSOrigin>x,y,z</SRSOrigin>``) in the mesh's folder or the one above is used, as exported with most
  oblique-photogrammetry models in China; its ``ENU:lat,lon`` form is refused (pass the options). A mesh
  with no CRS from either is refused; a geographic CRS is refused (metre offsets cannot be added to degrees).
- **Axes** (``--up``): OBJ from photogrammetry is z-up (x east, y north): ``--up z``, the OBJ default. glTF is
  y-up by its specification (x east, y up, z south): ``--up y``, the glTF/GLB default, maps (x, y, z) to
  (east x, north −z, up y).
- **Validation**: the file loads (trimesh), has vertices and triangles, every vertex is finite and every
  triangle's indices are in range, and its footprint lies in the storage CRS's area of use. Companion files
  (an OBJ's ``mtllib`` files and their texture maps; a glTF's external buffers and images) must exist inside
  the mesh's folder (no absolute paths, no ``..``) and are copied with it; a GLB is self-contained.
- **Bounds** are the 3D min/max of the placed vertices in the CRS (glTF node transforms applied); the
  footprint is their horizontal box in the storage CRS. The files go to ``$CIM_HOME/assets/<name>/``
  unchanged, swapped in with the catalogue row in one step (``ingest.file_catalog``).
"""

from __future__ import annotations

import json
import math
import mmap
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import pyproj
import trimesh
from shapely import to_wkb

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.assets import AssetRecord, upsert_asset
from ingest.errors import IngestError
from ingest.file_catalog import (
    CatalogueError,
    catalogue_name,
    crs_label,
    new_folder,
    stage_folder,
    storage_footprint,
    swapped_in,
    user_crs,
)
from ingest.pointcloud import AssetReport, assets_folder, horizontal

MESH_FORMATS = {".obj": "obj", ".gltf": "gltf", ".glb": "glb"}
DEFAULT_UP = {"obj": "z", "gltf": "y", "glb": "y"}
_MTLLIB = re.compile(rb"^[ \t]*mtllib[ \t]+([^\r\n]+)", re.MULTILINE)
_MTL_MAPS = re.compile(r"^\s*(map_\w+|bump|disp|decal|refl|norm)\s+(.+?)\s*$", re.IGNORECASE)
FloatArray = npt.NDArray[np.float64]


class MeshError(IngestError):
    """A mesh is unreadable, empty, badly placed or misses a companion file; nothing was written."""


def parse_origin(text: str, where: str) -> tuple[float, float, float]:
    """``X,Y,Z`` (commas or spaces) as three finite numbers; raises MeshError."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise MeshError(f"{where}: origin {text!r} is not three numbers X,Y,Z")
    return values[0], values[1], values[2]


def _inside(folder: Path, reference: str, where: str, what: str) -> tuple[Path, str]:
    """A companion file named in the mesh, resolved inside ``folder``; returns (path, relative name)."""
    relative = PurePosixPath(reference.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise MeshError(f"{where}: {what} {reference!r} points outside the mesh's folder")
    path = folder / Path(*relative.parts)
    if not path.is_file():
        raise MeshError(f"{where}: {what} {reference!r} is missing (expected {path})")
    return path, relative.as_posix()


def _obj_companions(path: Path, where: str) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    folder = path.parent
    # A regular-expression scan of the mapped file, not a Python loop over millions of vertex lines.
    with path.open("rb") as obj_file, mmap.mmap(obj_file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        libraries = [m.group(1).decode("utf-8", "replace").strip() for m in _MTLLIB.finditer(data)]
    for library in libraries:
        mtl, rel = _inside(folder, library, where, "material library")
        found.append((mtl, rel))
        with mtl.open("r", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = _MTL_MAPS.match(line)
                if m:
                    texture = m.group(2).split()[-1]  # options (-s, -o, …) come before the file name
                    base = mtl.parent.relative_to(folder).as_posix()
                    ref = texture if base == "." else f"{base}/{texture}"
                    found.append(_inside(folder, ref, where, "texture"))
    return found


def _gltf_companions(path: Path, where: str) -> list[tuple[Path, str]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeshError(f"{where}: not a glTF JSON file ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise MeshError(f"{where}: not a glTF JSON file (top level is not an object)")
    found: list[tuple[Path, str]] = []
    for section, what in (("buffers", "buffer"), ("images", "image")):
        for item in document.get(section) or []:
            uri = item.get("uri") if isinstance(item, dict) else None
            if isinstance(uri, str) and not uri.startswith("data:"):
                found.append(_inside(path.parent, unquote(uri), where, what))
    return found


def context_capture_metadata(path: Path) -> tuple[str, tuple[float, float, float] | None, Path] | None:
    """(SRS, SRSOrigin, file) from a ContextCapture ``metadata.xml`` beside the mesh or one folder up."""
    for folder in (path.parent, path.parent.parent):
        meta = folder / "metadata.xml"
        if not meta.is_file():
            continue
        try:
            root = ET.parse(meta).getroot()
        except ET.ParseError as exc:
            raise MeshError(f"{meta}: not readable XML ({exc})") from None
        srs = (root.findtext("SRS") or "").strip()
        origin_text = (root.findtext("SRSOrigin") or "").strip()
        origin = parse_origin(origin_text, str(meta)) if origin_text else None
        return srs, origin, meta
    return None


def _load(path: Path, fmt: str, where: str) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    try:
        mesh = trimesh.load(path, file_type=fmt, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many kinds for damaged files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeshError(f"{where}: not a readable {fmt.upper()} mesh ({text})") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{where}: holds no triangle mesh (read as {type(mesh).__name__})")
    vertices = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        raise MeshError(f"{where}: holds no triangles")
    if len(vertices) == 0:
        raise MeshError(f"{where}: holds no vertices")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"{where}: a triangle refers to a vertex that does not exist")
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        raise MeshError(f"{where}: vertex {int(np.argmin(finite))} has a non-finite coordinate")
    return vertices, faces


def _placement(
    path: Path, crs: str | None, origin: tuple[float, float, float] | None, where: str
) -> tuple[pyproj.CRS, tuple[float, float, float], str]:
    """The mesh's CRS and origin (from the options, else ContextCapture metadata) and where they came from."""
    source = "options"
    if crs is None or origin is None:
        meta = context_capture_metadata(path)
        if meta is not None:
            srs, meta_origin, meta_file = meta
            if crs is None and srs:
                if not re.fullmatch(r"(EPSG:)?[0-9]+", srs, re.IGNORECASE):
                    raise MeshError(f"{where}: {meta_file} gives SRS {srs!r}; pass --crs and --origin instead")
                crs, source = srs, str(meta_file)
            if origin is None and meta_origin is not None:
                origin, source = meta_origin, str(meta_file)
    if crs is None:
        raise CatalogueError(f"{where}: the mesh declares no CRS; pass --crs (e.g. --crs EPSG:4547) and --origin X,Y,Z")
    parsed = user_crs(crs, where)
    if not horizontal(parsed).is_projected:
        raise MeshError(f"{where}: CRS {parsed.name} is not projected; mesh offsets are metres, use a projected CRS")
    return parsed, origin or (0.0, 0.0, 0.0), source


def ingest_mesh(
    path: Path,
    crs: str | None = None,
    origin: tuple[float, float, float] | None = None,
    up: str | None = None,
    name: str | None = None,
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
) -> AssetReport:
    """Validate the mesh ``path``, copy it (with its companion files) to ``$CIM_HOME/assets/<name>/`` and
    register it. Raises MeshError (or another IngestError) with a one-line message naming the file; then
    neither the catalogue nor ``$CIM_HOME/assets`` changed."""
    settings = settings or get_settings()
    step = progress or (lambda _text: None)
    where = str(path)
    fmt = MESH_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise MeshError(f"{where}: unsupported mesh format {path.suffix!r} (use OBJ, glTF or GLB)")
    if not path.is_file():
        raise MeshError(f"{where}: no such file")
    if path.stat().st_size == 0:
        raise MeshError(f"{where}: is empty")
    up_axis = up or DEFAULT_UP[fmt]
    if up_axis not in ("y", "z"):
        raise MeshError(f"{where}: up axis {up_axis!r} is not y or z")
    name = catalogue_name(path, name)
    source_crs, xyz0, placed_by = _placement(path, crs, origin, where)
    companions = (
        _obj_companions(path, where) if fmt == "obj" else _gltf_companions(path, where) if fmt == "gltf" else []
    )
    step(f"reading {path.name}")
    vertices, faces = _load(path, fmt, where)
    local = vertices if up_axis == "z" else np.column_stack([vertices[:, 0], -vertices[:, 2], vertices[:, 1]])
    lo_arr = local.min(axis=0) + np.asarray(xyz0)
    hi_arr = local.max(axis=0) + np.asarray(xyz0)
    lo = (float(lo_arr[0]), float(lo_arr[1]), float(lo_arr[2]))
    hi = (float(hi_arr[0]), float(hi_arr[1]), float(hi_arr[2]))
    footprint = storage_footprint((lo[0], lo[1], hi[0], hi[1]), horizontal(source_crs), settings.storage_srid, where)
    label, srid = crs_label(source_crs)
    folder = assets_folder(settings) / name
    files = [(path, path.name), *companions]
    seen: dict[str, Path] = {}
    for source, relative in files:
        seen.setdefault(relative, source)
    report = AssetReport(
        name=name,
        kind="mesh",
        format=fmt,
        source=where,
        path=str(folder / path.name),
        crs=label,
        bounds_min=lo,
        bounds_max=hi,
        footprint_bounds=tuple(float(v) for v in footprint.bounds),  # type: ignore[arg-type]
        vertex_count=len(vertices),
        triangle_count=len(faces),
        origin=xyz0,
        files=list(seen),
    )
    if dry_run:
        return report
    with new_folder(assets_folder(settings)):
        step(f"copying {len(seen)} file(s)")
        staged, hashes = stage_folder(folder, [(src, rel) for rel, src in seen.items()])
        attributes: dict[str, Any] = {
            "source_file": str(path.resolve()),
            "placed_by": placed_by,
            "file_sha256": hashes,
        }
        record = AssetRecord(
            name=name,
            kind="mesh",
            format=fmt,
            path=report.path,
            files=report.files,
            crs=label,
            srid=srid,
            bounds_min=lo,
            bounds_max=hi,
            footprint_wkb=to_wkb(footprint),
            size_bytes=sum(src.stat().st_size for src in seen.values()),
            sha256=hashes[path.name],
            vertex_count=len(vertices),
            triangle_count=len(faces),
            origin=xyz0,
            up_axis=up_axis,
            attributes=attributes,
        )
        with swapped_in(staged, folder), transaction(settings) as conn:
            report.replaced = upsert_asset(conn, record)
    report.written = True
    return report
