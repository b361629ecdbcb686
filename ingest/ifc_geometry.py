"""IFC element geometry: triangulation with IfcOpenShell, TIN Z as WKB, and the building's footprint.

Decisions recorded here:

- **Triangulation** runs ``ifcopenshell.geom.iterator`` with world coordinates (metres, whatever the project
  unit) and the ``hybrid-cgal-simple-opencascade`` kernel: on FZK-Haus it gives the same triangles as plain
  OpenCASCADE (same counts and volumes, openings subtracted) about twice as fast, where ``cgal-simple`` alone
  drops walls. It runs in one worker process per CPU (at most 8), one thread each, in the background
  while the ingest does its own Python work (``Triangulation``).
- **Openings** (IfcFeatureElementSubtraction) are not elements of the building: they are voids IfcOpenShell
  has already cut out of their hosts, so they are neither triangulated on their own nor stored.
- An element whose geometry IfcOpenShell cannot build keeps its row with no mesh (counted in the report);
  a model where no element can be triangulated is refused.
- **Footprint**: union of the XY projections of the triangles of the *physical* elements (IfcElement, less
  virtual, geographic/terrain and opening elements; site terrain and spaces do not shape the building),
  vertical triangles (projected area < 1 mm²) left out, vectorised with shapely 2. It is snapped to a 1 mm
  grid (float noise between adjacent triangles would otherwise leave hair-line holes), made valid, holes under
  0.05 m² filled and parts under 0.05 m² dropped (unless 1 % or more of the whole); real courtyards are kept.
- Stored meshes are ISO WKB ``TIN Z`` built with numpy for all triangles at once.
"""

from __future__ import annotations

import gc
import multiprocessing
import multiprocessing.connection
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import ifcopenshell
import ifcopenshell.geom
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

GEOMETRY_LIBRARY: Final = "hybrid-cgal-simple-opencascade"
MIN_TRIANGLE_AREA_M2 = 1e-6
FOOTPRINT_GRID_M = 0.001
MIN_FOOTPRINT_PART_M2 = 0.05

NON_PHYSICAL = ("IfcVirtualElement", "IfcGeographicElement", "IfcFeatureElement")

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Mesh:
    """One element's triangles: ``verts`` (n, 3) model world metres, ``faces`` (m, 3) vertex indices."""

    verts: FloatArray
    faces: IndexArray


def iterator_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def triangulate(
    model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], threads: int | None = None
) -> dict[int, Mesh]:
    """Meshes by STEP id of ``products`` in model world metres; elements IfcOpenShell cannot build are absent."""
    return collect_meshes(start_iterator(model, products, threads))


def start_iterator(
    model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], threads: int | None = None
) -> Any:
    """IfcOpenShell's geometry iterator over ``products``, initialised (``collect_meshes`` takes the
    results). None when there is nothing to triangulate. With more than one thread it triangulates on its
    own threads from now on; with one, as the results are taken."""
    if not products:
        return None
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    settings.set("weld-vertices", True)
    settings.set("no-normals", True)
    iterator = ifcopenshell.geom.iterator(
        settings, model, threads or iterator_threads(), include=products, geometry_library=GEOMETRY_LIBRARY
    )
    return iterator if iterator.initialize() else None


class TriangulationError(RuntimeError):
    """A worker could not triangulate (the kernel raised, or the process died)."""


class Triangulation:
    """``products`` triangulated in the background by worker processes, one IfcOpenShell thread each.

    Why processes: IfcOpenShell's iterator with two threads spends 70 % more CPU than with one on FZK-Haus
    (8.6 s against 5.0 s), and with one it works only when asked; forked workers cost what one thread costs,
    run while this process does its own work, and a kernel crash kills a worker, not the ingest. The
    products are shared out by an estimate of their cost (openings, and boolean clippings above all, are
    what takes the time: two clipped gable walls with a window each are 70 % of FZK-Haus), largest first
    to the least loaded worker. A worker is a fork of this process: it reads the parsed model from its copy
    of the memory and leaves with ``os._exit`` (no clean-up of what it inherited). Where processes cannot
    be forked, the iterator runs here, in ``collect``."""

    def __init__(self, model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], workers: int) -> None:
        self._model, self._products = model, products
        self._workers: list[tuple[Any, Any]] = []
        if not products or "fork" not in multiprocessing.get_all_start_methods():
            return
        context = multiprocessing.get_context("fork")
        for group in _shares(products, min(workers, len(products))):
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(target=_triangulate_share, args=(model, group, sender), daemon=True)
            worker.start()
            sender.close()
            self._workers.append((worker, receiver))

    def collect(self, on_mesh: Callable[[], None] | None = None) -> dict[int, Mesh]:
        """Every mesh, by STEP id (waits for the workers); ``on_mesh`` is called as each element is done."""
        if not self._workers:
            return _triangulate_in_one_thread(self._model, self._products, on_mesh)
        meshes: dict[int, Mesh] = {}
        pending: dict[Any, Any] = {receiver: worker for worker, receiver in self._workers}
        while pending:
            ready: list[Any] = multiprocessing.connection.wait(list(pending))
            for receiver in ready:
                try:
                    message: tuple[str, Any] = receiver.recv()
                    kind, payload = message
                except EOFError:
                    worker = pending.pop(receiver)
                    worker.join()
                    raise TriangulationError(f"a triangulation worker died (exit code {worker.exitcode})") from None
                if kind == "mesh" and on_mesh is not None:
                    on_mesh()
                elif kind == "meshes":
                    meshes.update({key: Mesh(verts, faces) for key, (verts, faces) in payload.items()})
                    pending.pop(receiver).join()
                elif kind == "error":
                    raise TriangulationError(payload)
        self.stop()
        return meshes

    def stop(self) -> None:
        """End the workers (at once if still running)."""
        for worker, receiver in self._workers:
            if worker.is_alive():
                worker.kill()
            worker.join()
            receiver.close()
        self._workers = []


def _triangulate_share(model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], sender: Any) -> None:
    """In a worker: triangulate, tell each element done (small messages, so the pipe never fills before
    the end), then send every mesh at once."""
    gc.disable()  # nothing inherited may be finalised here (the parent's connections, files)
    try:
        meshes = _triangulate_in_one_thread(model, products, lambda: sender.send(("mesh", None)))
        sender.send(("meshes", {key: (m.verts, m.faces) for key, m in meshes.items()}))
    except BaseException as exc:
        sender.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()
        os._exit(0)


def _shares(products: list[ifcopenshell.entity_instance], n: int) -> list[list[ifcopenshell.entity_instance]]:
    """``products`` in ``n`` groups of about equal estimated cost (largest first to the least loaded)."""
    groups: list[list[ifcopenshell.entity_instance]] = [[] for _ in range(max(n, 1))]
    loads = [0.0] * len(groups)
    for product in sorted(products, key=lambda p: (-_estimated_cost(p), p.id())):
        k = loads.index(min(loads))
        groups[k].append(product)
        loads[k] += _estimated_cost(product)
    return [g for g in groups if g]


def _estimated_cost(product: ifcopenshell.entity_instance) -> float:
    """Relative triangulation cost: openings are subtracted one boolean operation each, and on a body that
    is itself a boolean result (a wall clipped by the roof) that operation is the slow kind."""
    openings = len(getattr(product, "HasOpenings", None) or ())
    clipped = any(
        item.is_a("IfcBooleanResult")
        for representation in (product.Representation.Representations if product.Representation else ())
        for item in representation.Items or ()
    )
    return (1.0 + openings) * (10.0 if clipped and openings else 1.0)


def collect_meshes(iterator: Any, on_mesh: Callable[[], None] | None = None) -> dict[int, Mesh]:
    """The meshes of a started iterator, by STEP id (waits for those not done yet); ``on_mesh`` is called
    after each element."""
    meshes: dict[int, Mesh] = {}
    for key, mesh in _shapes(iterator):
        if mesh is not None:
            meshes[key] = mesh
        if on_mesh is not None:
            on_mesh()
    return meshes


def _shapes(iterator: Any) -> Iterator[tuple[int, Mesh | None]]:
    """(STEP id, mesh) of each element the iterator built; the mesh is None when it has no triangle with
    an area, or coordinates that are not finite."""
    if iterator is None:
        return
    while True:
        shape = iterator.get()
        geometry = shape.geometry
        verts = np.asarray(geometry.verts, dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3)
        # Triangles repeating a vertex have no area and no use.
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        faces = faces[keep]
        yield int(shape.id), (Mesh(verts, faces) if len(faces) and np.isfinite(verts).all() else None)
        if not iterator.next():
            break


def _triangulate_in_one_thread(
    model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], on_mesh: Callable[[], None] | None
) -> dict[int, Mesh]:
    """Meshes by STEP id, with one IfcOpenShell thread. Its single-threaded iterator gives up at an element
    it cannot build (before the first, it does not start), where the multithreaded one skips it: the
    elements it did not reach are tried one by one (an iterator costs ~3 ms), so the same elements get a
    mesh either way."""
    meshes: dict[int, Mesh] = {}
    done: set[int] = set()

    def take(iterator: Any) -> None:
        for key, mesh in _shapes(iterator):
            done.add(key)
            if mesh is not None:
                meshes[key] = mesh
            if on_mesh is not None:
                on_mesh()

    take(start_iterator(model, products, 1))
    for product in products:
        if product.id() not in done:
            take(start_iterator(model, [product], 1))
            if product.id() not in done and on_mesh is not None:
                on_mesh()  # counted as done: IfcOpenShell cannot build it
    return meshes


def is_physical(product: ifcopenshell.entity_instance) -> bool:
    """Whether an element shapes the building's footprint and height (see the module docstring)."""
    if not product.is_a("IfcElement"):
        return False
    return not any(_is_a(product, cls) for cls in NON_PHYSICAL)


def _is_a(product: ifcopenshell.entity_instance, cls: str) -> bool:
    try:
        return bool(product.is_a(cls))
    except RuntimeError:  # a class the file's schema does not have (IfcGeographicElement in IFC2X3)
        return False


# --------------------------------------------------------------------------------------------------------
# WKB

_TRIANGLE_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xyz", "<f8", (4, 3))]
)  # packed: 109 bytes per triangle
_TIN_Z = 1016
_TRIANGLE_Z = 1017


def triangle_records(corners: FloatArray) -> npt.NDArray[np.void]:
    """ISO WKB ``TRIANGLE Z`` records for (m, 3, 3) triangle corners (closed rings), all at once."""
    records = np.empty(len(corners), dtype=_TRIANGLE_WKB)
    records["order"] = 1
    records["type"] = _TRIANGLE_Z
    records["rings"] = 1
    records["points"] = 4
    records["xyz"][:, :3] = corners
    records["xyz"][:, 3] = corners[:, 0]
    return records


def tin_wkb(records: npt.NDArray[np.void]) -> bytes:
    """ISO WKB ``TIN Z`` of triangle records (see `triangle_records`)."""
    header = np.array([(1, _TIN_Z, len(records))], dtype=[("order", "u1"), ("type", "<u4"), ("n", "<u4")])
    return header.tobytes() + records.tobytes()


# --------------------------------------------------------------------------------------------------------
# Footprint


def footprint(corners: FloatArray, element_of: IndexArray) -> MultiPolygon | None:
    """The union of the XY projections of (m, 3, ≥2) triangle corners, cleaned (module docstring).

    ``element_of`` gives each triangle's element (sorted). The projection of a closed, consistently oriented
    mesh is covered by its upward-facing triangles alone (their signed projected areas sum to that of the
    downward ones), so such elements contribute only those: half the work. Others contribute all their
    non-vertical triangles. Each element is unioned on its own first (small unions are cheap), then all
    elements together on the 1 mm grid. Returns None when nothing of area is left."""
    xy = np.ascontiguousarray(corners[:, :, :2])
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    signed = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))
    up, down = signed >= MIN_TRIANGLE_AREA_M2, signed <= -MIN_TRIANGLE_AREA_M2
    n_elements = int(element_of.max()) + 1 if len(element_of) else 0
    up_area = np.bincount(element_of, weights=np.where(up, signed, 0.0), minlength=n_elements)
    down_area = np.bincount(element_of, weights=np.where(down, -signed, 0.0), minlength=n_elements)
    closed = np.isclose(up_area, down_area, rtol=1e-6, atol=1e-6) & (up_area > 0)
    keep = np.where(closed[element_of], up, up | down)
    if not keep.any():
        return None
    flat = xy[keep]
    rings = np.concatenate([flat, flat[:, :1]], axis=1)
    triangles = shapely.polygons(rings)
    owner = element_of[keep]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    parts = [shapely.union_all(group) for group in np.split(triangles, starts[1:])]
    merged = shapely.union_all(parts, grid_size=FOOTPRINT_GRID_M)
    return clean_polygons(merged)


def clean_polygons(geom: BaseGeometry) -> MultiPolygon | None:
    """A valid MultiPolygon of ``geom``'s polygons: holes under 0.05 m² filled, parts under 0.05 m² dropped
    unless they are 1 % or more of the whole (a model of one column is a small but real footprint).
    None when nothing of area is left."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon)]
    if not parts:
        parts = [q for p in shapely.get_parts(geom) if hasattr(p, "geoms") for q in p.geoms if isinstance(q, Polygon)]
    total = sum(p.area for p in parts)
    kept = []
    for part in parts:
        holes = [r for r in part.interiors if Polygon(r).area >= MIN_FOOTPRINT_PART_M2]
        polygon = Polygon(part.exterior, holes)
        if polygon.area >= min(MIN_FOOTPRINT_PART_M2, 0.01 * total) and polygon.area > 0:
            kept.append(polygon)
    if not kept:
        return None
    out = MultiPolygon(kept)
    if not out.is_valid:
        fixed = shapely.make_valid(out)
        polygons = [p for p in shapely.get_parts(fixed) if isinstance(p, Polygon) and p.area > 0]
        if not polygons:
            return None
        out = MultiPolygon(polygons)
    return out
