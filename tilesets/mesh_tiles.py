"""The ``mesh`` layer of ``cim tiles build``: every catalogued photogrammetry mesh (OBJ with MTL and textures,
glTF, GLB, placed by a CRS and an origin; see ingest/mesh.py) becomes a 3D Tiles 1.1 tileset of spatial tiles
with coarser parents, under ``$CIM_HOME/tilesets/mesh/<name>/`` with a layer ``tileset.json`` referencing
them (`tilesets.asset_layer`).

Decisions recorded here:
- **Placement.** A vertex's CRS position is origin + (east, north, up) from the mesh (glTF's y-up files are
  turned as at ingest: (x, y, z) → (x, −z, y)). x, y go to the storage CRS (`cim.crs.to_storage`; nothing to do
  when the mesh is in it) and then with the orthometric height to ECEF through `cim.crs.storage_to_ecef`,
  which adds the height-datum offset. The asset gets one east-north-up frame at the centre of its bounding
  box (`LocalFrame`); every vertex's exact ENU position in it (float64, from its ECEF) is what is tiled.
  Each tile's content is float32 relative to the centre of its own box: the root tile's ``transform`` is the
  ENU→ECEF matrix times a translation to its centre, every other tile's a pure translation from its parent's
  centre to its own, so float32 only ever holds offsets within one tile.
- **Split.** A quadtree in the storage CRS (metres, `tilesets.quadtree`) over the triangles, each triangle
  assigned whole to the leaf holding its centroid (no clipping: no new vertices, no texture seams cut, the
  decoded vertices of the leaves are exactly the source vertices). Neighbouring tiles' boxes may overlap by
  up to one triangle; every box is computed from the vertices actually written, so content is always inside
  its tile. A leaf holds about ``max_tile_bytes`` of geometry, estimated at `BYTES_PER_TRIANGLE` per triangle
  (at least `MIN_LEAF_TRIANGLES`); ``max_features`` does not apply (a mesh has no features).
- **Levels of detail.** Every tile above the leaves holds a simplified copy of its children's content
  (refinement REPLACE), made by fast-simplification (Fast Quadric Mesh Simplification) per material, down to
  the leaf budget, after welding the children's shared border vertices; ``preserve_border`` keeps the outline
  of each tile's patch (and texture seams) where it is, so neighbouring tiles stay crack-free at every level.
  Each simplified vertex takes the texture coordinate of the nearest input vertex collapsed into it.
- **Geometric error.** Leaves 0. A parent: ε = max(ε of its children) + δ, where δ is the largest distance
  from a vertex of the simplification's input (the children's content) to the simplified surface, measured
  over the triangles around the output vertex it was collapsed into (the collapse history replayed by
  ``fast_simplification.replay_simplification``). Distances add along the chain of simplifications, so ε
  bounds (vertex-sampled) how far the full-detail surface lies from what the tile draws; it is never less
  than a child's. The tileset's
  ``geometricError`` is the larger of the root's and the root box's diagonal (the error of drawing nothing).
- **Textures** are kept: each tile's part of a texture is cropped to the texture coordinates it uses (plus
  one pixel), so a tile carries only its own texels; parents are downscaled by 2 per level above their
  deepest leaf (so all levels carry a similar number of texels), and no side exceeds `MAX_TEXTURE_PX`.
  JPEG sources stay JPEG (quality 90), anything else is written as PNG. Texture coordinates outside 0..1
  (repeating textures) keep the whole image and a repeating sampler. Textured parts are unlit
  (``KHR_materials_unlit``, the lighting is baked into photogrammetry textures); untextured parts keep their
  base colour and get smooth normals. Vertex colours are dropped.
- Memory: the whole mesh is held while it is tiled (photogrammetry blocks of a few million triangles);
  tiles are written one at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj

from cim.crs import CRSError, as_3dtiles_transform, crs_id, to_storage
from cim.settings import get_settings
from cim.store.assets import AssetRecord
from tilesets.asset_gltf import Y_UP_FROM_Z_UP, MeshPart, Texture, mesh_glb
from tilesets.asset_layer import AssetLayer, AssetTileset, build_asset_layer, horizontal
from tilesets.layer_build import BuildOptions, TilesBuildError, content_uri
from tilesets.meshes import storage_to_local
from tilesets.quadtree import Cell, QuadGrid, internal_cells, plan
from tilesets.tileset import (
    BOX_MARGIN_M,
    LocalFrame,
    Tile,
    aligned_box,
    box_corners,
    tileset_document,
    write_bytes,
    write_json,
)

CONTENT_FORMAT = 1
BYTES_PER_TRIANGLE = 40  # float32 position + uv per vertex (~0.5 vertex per triangle) and three indices, rounded up
MIN_LEAF_TRIANGLES = 256
MAX_TEXTURE_PX = 4096
GENERATOR = "cim-twin tilesets (mesh)"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class SourceGroup:
    """One material of the source mesh: vertices in the asset's CRS, triangles, texture coordinates (trimesh's
    convention: v up) with the texture image, or a base colour."""

    positions: FloatArray
    faces: IntArray
    uv: FloatArray | None
    image: Any  # PIL.Image.Image | None
    rgba: tuple[float, float, float, float]


@dataclass
class Part:
    """One material's share of a tile: asset-frame ENU positions, texture coordinates, local triangles."""

    group: int
    positions: FloatArray
    uv: FloatArray | None
    faces: IntArray


@dataclass
class _Node:
    parts: list[Part]
    error: float
    lo: FloatArray  # bounds in the asset frame, margins included
    hi: FloatArray


# --------------------------------------------------------------------------------------------------
# Reading the source


def load_groups(asset: AssetRecord) -> list[SourceGroup]:
    """The mesh's triangles per material, placed in the asset's CRS (origin + axes as at ingest)."""
    import trimesh

    path = Path(asset.path)
    try:
        scene = trimesh.load_scene(path, file_type=asset.format, process=False)
    except Exception as exc:  # trimesh raises many kinds for damaged files
        raise TilesBuildError(f"{asset.name}: {path} cannot be read ({type(exc).__name__}: {exc})") from None
    origin = np.asarray(asset.origin or (0.0, 0.0, 0.0), dtype=np.float64)
    groups: list[SourceGroup] = []
    for mesh in scene.dump(concatenate=False):
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        v = np.asarray(mesh.vertices, dtype=np.float64)
        local = v if asset.up_axis != "y" else np.column_stack([v[:, 0], -v[:, 2], v[:, 1]])
        visual = mesh.visual
        material = getattr(visual, "material", None)
        uv = getattr(visual, "uv", None) if getattr(visual, "kind", None) == "texture" else None
        image = None
        if material is not None:
            pbr = material if isinstance(material, trimesh.visual.material.PBRMaterial) else material.to_pbr()
            image = pbr.baseColorTexture
            color = np.asarray(material.main_color, dtype=np.float64) / 255.0
        else:
            color = np.array([0.8, 0.8, 0.8, 1.0])
        if uv is None or image is None or len(uv) != len(v):
            uv, image = None, None
        groups.append(
            SourceGroup(
                positions=local + origin,
                faces=np.asarray(mesh.faces, dtype=np.int64),
                uv=None if uv is None else np.asarray(uv, dtype=np.float64),
                image=image,
                rgba=(float(color[0]), float(color[1]), float(color[2]), float(color[3])),
            )
        )
    if not groups:
        raise TilesBuildError(f"{asset.name}: {path} holds no triangles")
    return groups


def storage_xy(asset: AssetRecord, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Asset-CRS x, y → storage CRS (the policy of `cim.crs`: no guessed datum shifts)."""
    plane = horizontal(pyproj.CRS.from_user_input(asset.crs))
    if plane.to_epsg() == get_settings().storage_srid:
        return x, y
    try:
        return to_storage(x, y, crs_id(plane))
    except CRSError as exc:
        if plane.to_authority() is not None:
            raise TilesBuildError(f"{asset.name}: {exc}") from None
    target = pyproj.CRS.from_epsg(get_settings().storage_srid)
    try:
        t = pyproj.Transformer.from_crs(plane, target, always_xy=True, allow_ballpark=False)
    except pyproj.exceptions.ProjError:
        raise TilesBuildError(f"{asset.name}: no datum transformation from {plane.name} to the storage CRS") from None
    sx, sy = t.transform(x, y)
    return np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Levels of detail


def weld(
    positions: FloatArray, uv: FloatArray | None, faces: IntArray
) -> tuple[FloatArray, FloatArray | None, IntArray]:
    """Merge vertices equal in position and texture coordinate (children's shared borders); drop triangles
    that collapse."""
    key = positions if uv is None else np.column_stack([positions, uv])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    f = inverse.reshape(-1)[faces]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return positions[first], None if uv is None else uv[first], f[keep]


def surface_deviation(
    points: FloatArray, out_points: FloatArray, out_faces: IntArray, mapping: IntArray, moved: FloatArray
) -> float:
    """The largest distance from an input vertex to the simplified surface around the vertex it was collapsed
    into (the triangles incident to ``mapping[i]``): a vertex-sampled upper bound of the one-sided Hausdorff
    distance from the input to the output. ``moved`` (distance to that vertex) stands in where it has no
    triangle left."""
    from trimesh.triangles import closest_point

    n_out = len(out_points)
    corner_vertex = out_faces.reshape(-1)
    order = np.argsort(corner_vertex, kind="stable")
    face_of_corner = (np.arange(len(corner_vertex)) // 3)[order]
    counts = np.bincount(corner_vertex, minlength=n_out)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    degree = counts[mapping]
    pair_vertex = np.repeat(np.arange(len(points)), degree)
    within = np.arange(len(pair_vertex)) - np.repeat(np.cumsum(degree) - degree, degree)
    pair_face = face_of_corner[starts[mapping[pair_vertex]] + within]
    nearest = closest_point(out_points[out_faces[pair_face]], points[pair_vertex])
    gaps = np.linalg.norm(nearest - points[pair_vertex], axis=1)
    distance = np.where(degree > 0, np.inf, moved)
    np.minimum.at(distance, pair_vertex, gaps)
    return float(distance.max()) if len(distance) else 0.0


def simplify_part(part: Part, target: int) -> tuple[Part, float]:
    """``part`` reduced to about ``target`` triangles, and its deviation (`surface_deviation`)."""
    import fast_simplification as fs

    if len(part.faces) <= target:
        return part, 0.0
    points = np.ascontiguousarray(part.positions, dtype=np.float64)
    faces = np.ascontiguousarray(part.faces, dtype=np.int32)
    out_points, out_faces, collapses = fs.simplify(
        points, faces, target_count=max(1, target), return_collapses=True, preserve_border=True
    )
    if len(collapses) == 0 or len(out_faces) == 0:
        return part, 0.0
    _, _, mapping = fs.replay_simplification(points, faces, collapses)
    mapping = np.asarray(mapping, dtype=np.int64)
    out_points = np.asarray(out_points, dtype=np.float64)
    if len(mapping) != len(points) or mapping.min() < 0 or mapping.max() >= len(out_points):
        raise TilesBuildError("fast-simplification returned an inconsistent collapse history")
    moved = np.linalg.norm(points - out_points[mapping], axis=1)
    out_faces = np.asarray(out_faces, dtype=np.int64)
    deviation = surface_deviation(points, out_points, out_faces, mapping, moved)
    uv = None
    if part.uv is not None:
        order = np.lexsort((moved, mapping))  # per output vertex, its nearest input vertex first
        targets, first = np.unique(mapping[order], return_index=True)
        uv = np.zeros((len(out_points), 2), dtype=np.float64)
        uv[targets] = part.uv[order[first]]
    return Part(part.group, out_points, uv, out_faces), deviation


def merge_parts(children: list[list[Part]]) -> list[Part]:
    """The children's parts concatenated per material, shared vertices welded."""
    by_group: dict[int, list[Part]] = {}
    for parts in children:
        for p in parts:
            by_group.setdefault(p.group, []).append(p)
    merged = []
    for group, parts in sorted(by_group.items()):
        offsets = np.cumsum([0] + [len(p.positions) for p in parts[:-1]])
        positions = np.concatenate([p.positions for p in parts])
        faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)])
        uv = None if parts[0].uv is None else np.concatenate([p.uv for p in parts if p.uv is not None])
        merged.append(Part(group, *weld(positions, uv, faces)))
    return merged


def simplified(children: list[list[Part]], target: int) -> tuple[list[Part], float]:
    """A parent's content: the children's merged and reduced to about ``target`` triangles in all (shared
    among materials by their triangle counts); and the largest vertex displacement."""
    merged = merge_parts(children)
    total = sum(len(p.faces) for p in merged)
    out, moved = [], 0.0
    for p in merged:
        reduced, d = simplify_part(p, max(1, round(target * len(p.faces) / total)))
        moved = max(moved, d)
        if len(reduced.faces):
            out.append(reduced)
    return out, moved


# --------------------------------------------------------------------------------------------------
# Content


def vertex_normals(positions: FloatArray, faces: IntArray) -> FloatArray:
    """Area-weighted smooth unit normals; (0, 1, 0) (glTF up) where undefined."""
    p = positions
    face_n = np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]])
    n = np.zeros_like(p)
    for k in range(3):
        for axis in range(3):
            n[:, axis] += np.bincount(faces[:, k], weights=face_n[:, axis], minlength=len(p))
    length = np.linalg.norm(n, axis=1)
    bad = ~(length > 1e-12)
    n[bad], length[bad] = (0.0, 1.0, 0.0), 1.0
    return np.asarray(n / length[:, None], dtype=np.float64)


def texture_for(image: Any, uv: FloatArray, scale: float) -> tuple[Texture, FloatArray]:
    """The part of ``image`` the texture coordinates ``uv`` (v up) use, scaled, and the glTF coordinates into
    it (v down)."""
    from PIL import Image

    width, height = image.size
    px, py = uv[:, 0] * width, (1.0 - uv[:, 1]) * height
    inside = bool(((uv >= -1e-6) & (uv <= 1 + 1e-6)).all())
    if inside:
        x0 = max(0, int(np.floor(px.min())) - 1)
        y0 = max(0, int(np.floor(py.min())) - 1)
        x1 = min(width, int(np.ceil(px.max())) + 1)
        y1 = min(height, int(np.ceil(py.max())) + 1)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        crop = image.crop((x0, y0, x1, y1))
        coords = np.column_stack([(px - x0) / (x1 - x0), (py - y0) / (y1 - y0)])
    else:
        crop = image
        coords = np.column_stack([uv[:, 0], 1.0 - uv[:, 1]])
    w, h = crop.size
    factor = min(scale, MAX_TEXTURE_PX / max(w, h))
    if factor < 1.0:
        crop = crop.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    jpeg = (getattr(image, "format", None) or "").upper() in ("JPEG", "JPG")
    buffer = io.BytesIO()
    if jpeg:
        crop.convert("RGB").save(buffer, format="JPEG", quality=90)
    else:
        mode = crop.mode if crop.mode in ("RGB", "RGBA", "L", "LA") else "RGBA"
        crop.convert(mode).save(buffer, format="PNG")
    mime = "image/jpeg" if jpeg else "image/png"
    return Texture(buffer.getvalue(), mime, clamp=inside), coords


def tile_glb(parts: list[Part], groups: list[SourceGroup], centre: FloatArray, texture_scale: float) -> bytes:
    mesh_parts = []
    for p in parts:
        g = groups[p.group]
        positions = (p.positions - centre) @ Y_UP_FROM_Z_UP.T
        if g.image is not None and p.uv is not None:
            texture, coords = texture_for(g.image, p.uv, texture_scale)
            mesh_parts.append(MeshPart(positions, p.faces, uv=coords, texture=texture))
        else:
            normals = vertex_normals(positions, p.faces)
            mesh_parts.append(MeshPart(positions, p.faces, normals=normals, rgba=g.rgba))
    return mesh_glb(mesh_parts, generator=GENERATOR)


def _bounds(parts: list[Part]) -> tuple[FloatArray, FloatArray]:
    pts = np.concatenate([p.positions for p in parts])
    return pts.min(axis=0) - BOX_MARGIN_M, pts.max(axis=0) + BOX_MARGIN_M


def _translation(offset: FloatArray) -> FloatArray:
    m = np.eye(4)
    m[:3, 3] = offset
    return m


# --------------------------------------------------------------------------------------------------
# One mesh


def tile_mesh(
    asset: AssetRecord, folder: Path, options: BuildOptions, tileset_version: int, progress: Callable[[str], None]
) -> AssetTileset:
    """Tile one catalogued mesh into ``folder`` (see the module docstring)."""
    groups = load_groups(asset)
    sizes = [len(g.positions) for g in groups]
    starts = np.cumsum([0, *sizes])
    crs_pos = np.concatenate([g.positions for g in groups])
    sx, sy = storage_xy(asset, crs_pos[:, 0], crs_pos[:, 1])
    if not (np.isfinite(sx).all() and np.isfinite(sy).all()):
        raise TilesBuildError(f"{asset.name}: some vertices cannot be placed in the storage CRS")
    frame = LocalFrame.at_storage_point(
        float(sx.min() + sx.max()) / 2,
        float(sy.min() + sy.max()) / 2,
        float(crs_pos[:, 2].min() + crs_pos[:, 2].max()) / 2,
    )
    enu = storage_to_local(frame, sx, sy, crs_pos[:, 2])
    uv_all = np.zeros((len(enu), 2))
    for g, s in zip(groups, starts[:-1], strict=True):
        if g.uv is not None:
            uv_all[s : s + len(g.uv)] = g.uv
    tri = np.concatenate([g.faces + s for g, s in zip(groups, starts[:-1], strict=True)])
    tri_group = np.repeat(np.arange(len(groups)), [len(g.faces) for g in groups])
    cx, cy = sx[tri].mean(axis=1), sy[tri].mean(axis=1)

    budget = max(MIN_LEAF_TRIANGLES, options.max_tile_bytes // BYTES_PER_TRIANGLE)
    grid = QuadGrid.around(cx, cy)
    leaves = plan(grid, cx, cy, np.full(len(tri), float(BYTES_PER_TRIANGLE)), budget, budget * BYTES_PER_TRIANGLE)
    progress(f"mesh: {asset.name}: {len(tri):,} triangles in {len(leaves):,} leaves")

    nodes: dict[Cell, _Node] = {}
    for cell, members in leaves.items():
        parts = []
        for group in np.unique(tri_group[members]):
            faces = tri[members[tri_group[members] == group]]
            verts, inverse = np.unique(faces, return_inverse=True)
            uv = uv_all[verts] if groups[group].uv is not None else None
            parts.append(Part(int(group), enu[verts], uv, inverse.reshape(-1, 3).astype(np.int64)))
        nodes[cell] = _Node(parts, 0.0, *_bounds(parts))
    children: dict[Cell, list[Cell]] = {}
    inner = sorted(internal_cells(leaves), key=lambda c: (-c.level, c.x, c.y))
    for cell in list(leaves) + inner:
        if cell.level > 0:
            children.setdefault(cell.parent(), []).append(cell)
    for cell in inner:  # deepest first: children are done
        kids = sorted(children[cell])
        parts, moved = simplified([nodes[k].parts for k in kids], budget)
        lo, hi = _bounds(parts)
        lo = np.minimum.reduce([lo, *(nodes[k].lo for k in kids)])
        hi = np.maximum.reduce([hi, *(nodes[k].hi for k in kids)])
        nodes[cell] = _Node(parts, max(nodes[k].error for k in kids) + moved, lo, hi)

    deepest: dict[Cell, int] = {c: c.level for c in leaves}
    for cell in inner:
        deepest[cell] = max(deepest[k] for k in children[cell])
    files: list[str] = []
    written = 0

    def build(cell: Cell, parent_centre: FloatArray | None) -> Tile:
        nonlocal written
        node = nodes[cell]
        centre = (node.lo + node.hi) / 2
        data = tile_glb(node.parts, groups, centre, 0.5 ** (deepest[cell] - cell.level))
        uri = content_uri(cell)
        (folder / uri).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(folder / uri, data)
        files.append(uri)
        written += len(data)
        matrix = frame.matrix @ _translation(centre) if parent_centre is None else _translation(centre - parent_centre)
        kids = [build(k, centre) for k in sorted(children.get(cell, []))]
        return Tile(
            box=aligned_box(node.lo - centre, node.hi - centre, margin=0.0),
            geometric_error=node.error,
            content_uri=uri,
            transform=as_3dtiles_transform(matrix),
            children=kids,
        )

    root_cell = min(nodes, key=lambda c: c.level)
    root = build(root_cell, None)
    top = nodes[root_cell]
    error = max(top.error, float(np.linalg.norm(top.hi - top.lo)))
    doc = tileset_document(root, geometric_error=error, tileset_version=str(tileset_version), refine="REPLACE")
    write_json(folder / "tileset.json", doc)
    files.append("tileset.json")
    world = frame.matrix @ _translation((top.lo + top.hi) / 2)
    corners = box_corners(root.box) @ world[:3, :3].T + world[:3, 3]
    textured = sum(1 for g in groups if g.image is not None)
    return AssetTileset(
        files=files,
        corners_ecef=np.asarray(corners).tolist(),
        geometric_error=error,
        tile_count=len(nodes),
        bytes=written,
        features=len(tri),
        info={"crs": asset.crs, "materials": len(groups), "textured_materials": textured, "leaves": len(leaves)},
    )


LAYER = AssetLayer(
    name="mesh",
    kind="mesh",
    tile_one=tile_mesh,
    content_format=CONTENT_FORMAT,
    attributes={"format": "3D Tiles 1.1 glb meshes: textures (KHR_materials_unlit), quadtree, simplified parents"},
)


build_mesh = partial(build_asset_layer, LAYER)
"""Build (or update) the photogrammetry mesh layer: ``build_mesh(settings, out, incremental, options, progress)``."""
