"""The structural checker (tests/tileset_checks.py) passes a good hand-assembled tileset and finds each defect put
into a copy of it: a checker that never complains would fail here. Real layers are checked where they are built
(tests/test_tiles_buildings.py, tests/test_cesium_loads.py)."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, box

from cim.store.tiles import BuildingRows
from tilesets.buildings import building_tile

import tinycity
from tile_reader import Glb, to_ecef
from tileset_checks import Volume, check_tileset

X0, Y0 = tinycity.X0, tinycity.Y0
TO_LONLAT = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)


def rows(offsets: list[tuple[float, float]], heights: list[float]) -> BuildingRows:
    n = len(offsets)
    return BuildingRows(
        building_code=[f"440305007001010{i + 1:04d}" for i in range(n)],
        name=[None] * n,
        use=["office"] * n,
        height_m=np.array(heights),
        storeys=np.full(n, 3),
        ground_elevation_m=np.full(n, 4.0),
        grid_code=["44030500700101"] * n,
        parcel_code=[None] * n,
        height_source=["survey"] * n,
        version=np.ones(n, dtype=np.int64),
        footprint_wkb=[
            shapely.to_wkb(MultiPolygon([box(X0 + x, Y0 + y, X0 + x + 30, Y0 + y + 12)])) for x, y in offsets
        ],
    )


def glb_parts(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (json_len,) = struct.unpack_from("<I", data, 12)
    return json.loads(data[20 : 20 + json_len]), data[20 + json_len :]


def write_glb(path: Path, doc: dict[str, Any], bin_chunk: bytes) -> None:
    text = json.dumps(doc).encode()
    text += b" " * ((-(20 + len(text))) % 8)  # BIN chunk 8-byte aligned, as the writer does
    body = struct.pack("<I4s", len(text), b"JSON") + text + bin_chunk
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body)


def make_tileset(folder: Path, compress_a: bool) -> Path:
    """Two leaves with their own ENU frames (a: two buildings, b: one; plain GLBs, or ``a`` meshopt-compressed)
    under a middle region and a root sphere."""
    leaves, corners = [], []
    for name, offsets, compress in (("a", [(0.0, 0.0), (60.0, 0.0)], compress_a), ("b", [(300.0, 200.0)], False)):
        tile = building_tile(rows(offsets, [20.0 + 5 * i for i in range(len(offsets))]), compress=compress)
        (folder / f"{name}.glb").write_bytes(tile.glb)
        leaves.append(
            {
                "boundingVolume": {"box": tile.box},
                "geometricError": 0,
                "transform": tile.frame.transform(),
                "content": {"uri": f"{name}.glb"},
            }
        )
        world = np.array(tile.frame.transform()).reshape(4, 4, order="F")
        c, axes = np.array(tile.box[:3]), np.array(tile.box[3:]).reshape(3, 3)
        signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        corners.append((c + signs @ axes) @ world[:3, :3].T + world[:3, 3])
    pts = np.concatenate(corners)
    lon, lat, h = TO_LONLAT.transform(pts[:, 0], pts[:, 1], pts[:, 2], radians=True)
    region = [lon.min() - 1e-7, lat.min() - 1e-7, lon.max() + 1e-7, lat.max() + 1e-7, h.min() - 0.1, h.max() + 0.1]
    centre = pts.mean(axis=0)
    radius = float(np.linalg.norm(pts - centre, axis=1).max()) + 0.1
    doc = {
        "asset": {"version": "1.1", "tilesetVersion": "7"},
        "geometricError": 500,
        "root": {
            "boundingVolume": {"sphere": [*centre.tolist(), radius]},
            "geometricError": 400,
            "refine": "ADD",
            "children": [{"boundingVolume": {"region": region}, "geometricError": 50, "children": leaves}],
        },
    }
    (folder / "tileset.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tileset(tmp_path_factory.mktemp("good"), compress_a=False)


@pytest.fixture(scope="module")
def good_compressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tileset(tmp_path_factory.mktemp("compressed"), compress_a=True)


def test_a_good_tileset_has_no_problems(good: Path, good_compressed: Path) -> None:
    assert check_tileset(good) == []
    assert check_tileset(good_compressed / "tileset.json") == []
    # The y-up → z-up turn matters: the leaf boxes are tight around the content, which is 30 × 12 × 20-25 m, and
    # glTF y (up) not turned to z would stick out of them by metres.
    doc = json.loads((good / "tileset.json").read_text())
    leaf = doc["root"]["children"][0]["children"][1]
    pos, _ = Glb(good / leaf["content"]["uri"]).vertices()
    world = np.array(leaf["transform"]).reshape(4, 4, order="F")
    box_ = Volume("box", tuple(leaf["boundingVolume"]["box"]), world, "leaf")
    assert not box_.outside(to_ecef(pos, world), 0.001).any()
    assert box_.outside(pos @ world[:3, :3].T + world[:3, 3], 0.001).any()


def tileset_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        doc = json.loads((folder / "tileset.json").read_text())
        edit(doc)
        (folder / "tileset.json").write_text(json.dumps(doc))

    return apply


def glb_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        doc, rest = glb_parts(folder / name)
        edit(doc)
        write_glb(folder / name, doc, rest)

    return apply


def leaf(doc: dict[str, Any], i: int = 1) -> dict[str, Any]:
    tile: dict[str, Any] = doc["root"]["children"][0]["children"][i]
    return tile


def _shrink_leaf_box(doc: dict[str, Any]) -> None:
    leaf(doc)["boundingVolume"]["box"][11] *= 0.9  # 10 % off the height


def _move_leaf(doc: dict[str, Any]) -> None:
    leaf(doc)["transform"][12] += 200.0  # the whole tile 200 m along ECEF x: out of the region and sphere


def _shrink_root(doc: dict[str, Any]) -> None:
    doc["root"]["boundingVolume"]["sphere"][3] -= 5.0


def _lower_region_top(doc: dict[str, Any]) -> None:
    doc["root"]["children"][0]["boundingVolume"]["region"][5] -= 3.0


def _drop_declaration(doc: dict[str, Any]) -> None:
    doc["extensionsUsed"].remove("EXT_mesh_features")


def _drop_quantization_requirement(doc: dict[str, Any]) -> None:
    doc["extensionsRequired"].remove("KHR_mesh_quantization")


def _wrong_feature_count(doc: dict[str, Any]) -> None:
    doc["meshes"][0]["primitives"][0]["extensions"]["EXT_mesh_features"]["featureIds"][0]["featureCount"] += 1


def _short_property_table(doc: dict[str, Any]) -> None:
    doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]["count"] = 0


def _node_turn(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["rotation"] = [-(0.5**0.5), 0.0, 0.0, 0.5**0.5]  # -90° about x: glTF up becomes north


def _node_offset(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["translation"] = [0.0, 0.0, -50.0]  # 50 m north in the tile frame (glTF -z)


def _not_a_glb(folder: Path) -> None:
    (folder / "b.glb").write_bytes(b"glTF nonsense")


DEFECTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "version 1.0": (tileset_edit(lambda d: d["asset"].update(version="1.0")), "asset.version must be '1.1'"),
    "no tilesetVersion": (tileset_edit(lambda d: d["asset"].pop("tilesetVersion")), "tilesetVersion is missing"),
    "no root refine": (tileset_edit(lambda d: d["root"].pop("refine")), "the root needs refine"),
    "lower-case refine": (tileset_edit(lambda d: leaf(d).update(refine="add")), "refine must be 'ADD' or 'REPLACE'"),
    "no geometricError": (tileset_edit(lambda d: d.pop("geometricError")), "geometricError must be a number"),
    "child error above parent": (
        tileset_edit(lambda d: d["root"]["children"][0].update(geometricError=450)),
        "exceeds its parent's 400",
    ),
    "root error above tileset": (tileset_edit(lambda d: d.update(geometricError=300)), "exceeds the tileset's 300"),
    "leaf error": (tileset_edit(lambda d: leaf(d).update(geometricError=1.5)), "leaf geometricError 1.5"),
    "no bounding volume": (tileset_edit(lambda d: leaf(d).pop("boundingVolume")), "must hold exactly one of"),
    "box of 11": (tileset_edit(lambda d: leaf(d)["boundingVolume"]["box"].pop()), "box must be 12 finite numbers"),
    "region in degrees": (
        tileset_edit(lambda d: d["root"]["children"][0]["boundingVolume"]["region"].__setitem__(0, 113.9)),
        "region angles must be radians",
    ),
    "not affine": (tileset_edit(lambda d: leaf(d)["transform"].__setitem__(3, 1.0)), "not an affine column-major"),
    "empty children": (tileset_edit(lambda d: leaf(d).update(children=[])), "children must be a non-empty list"),
    "missing content": (tileset_edit(lambda d: leaf(d)["content"].update(uri="gone.glb")), "gone.glb does not exist"),
    "undeclared tileset extension": (
        tileset_edit(lambda d: d["root"].update(extensions={"MAXAR_content_geojson": {}})),
        "extensions used but not in extensionsUsed: ['MAXAR_content_geojson']",
    ),
    "required not used": (
        tileset_edit(lambda d: d.update(extensionsRequired=["3DTILES_bounding_volume_S2"])),
        "extensionsRequired not in extensionsUsed",
    ),
    "box too low": (tileset_edit(_shrink_leaf_box), "vertices outside the bounding volume of tileset.json root/0/1"),
    "leaf moved": (tileset_edit(_move_leaf), "outside the bounding volume of tileset.json root/0 "),
    "root sphere too small": (tileset_edit(_shrink_root), "outside the bounding volume of tileset.json root "),
    "region too low": (tileset_edit(_lower_region_top), "outside the bounding volume of tileset.json root/0 "),
    "undeclared EXT_mesh_features": (
        glb_edit("b.glb", _drop_declaration),
        "b.glb: extensions used but not in extensionsUsed: ['EXT_mesh_features']",
    ),
    "quantization not required": (
        glb_edit("b.glb", _drop_quantization_requirement),
        "without KHR_mesh_quantization in extensionsRequired",
    ),
    "featureCount off": (glb_edit("b.glb", _wrong_feature_count), "featureCount 2 but 1 distinct feature ids"),
    "ids beyond the table": (glb_edit("b.glb", _short_property_table), "feature ids outside property table 0"),
    "node translation": (glb_edit("b.glb", _node_offset), "outside the bounding volume of tileset.json root/0/1"),
    "node turned": (glb_edit("b.glb", _node_turn), "outside the bounding volume of tileset.json root/0/1"),
    "not a glb": (_not_a_glb, "b.glb: not a valid GLB"),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_is_found(defect: str, good: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tileset"
    shutil.copytree(good, broken)
    edit, expected = DEFECTS[defect]
    edit(broken)
    problems = check_tileset(broken)
    assert any(expected in p for p in problems), problems


def test_a_compressed_tile_is_checked_as_decoded(good_compressed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tileset"
    shutil.copytree(good_compressed, broken)
    glb_edit("a.glb", _node_offset)(broken)
    assert any(
        "a.glb: " in p and "outside the bounding volume of tileset.json root/0/0" in p for p in check_tileset(broken)
    )
    (broken / "a.glb").write_bytes((broken / "a.glb").read_bytes()[:-64])  # the compressed stream cut short
    assert any("a.glb: " in p for p in check_tileset(broken))
