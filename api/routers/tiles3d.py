"""3D Tiles: ``GET /3dtiles/{layer}/{path}`` serves the files of a built tileset (``cim tiles build``).

Decisions recorded here:
- **Which folder**: the one the tileset catalogue (``tilesets.path``) names for the layer, so ``--out DIR``
  builds are served too; a layer without a catalogue row is 404.
- **Path safety**: the path must be relative, without ``.``/``..`` segments, empty segments, backslashes or
  NUL (else 400 naming ``path``); hidden files and the build manifest are not served; the file's real path
  (symlinks resolved) must lie inside the layer folder's real path, and only tileset file types are served
  (else 404). Paths arrive percent-decoded, so ``..%2f`` is caught like ``../``.
- **Media types**: ``.json`` application/json, ``.glb`` model/gltf-binary, ``.gltf`` model/gltf+json,
  ``.b3dm/.i3dm/.pnts/.cmpt/.subtree/.bin`` application/octet-stream, images by their type.
- **Cache-Control**: the root ``tileset.json`` is short-lived (``CIM_TILESET_JSON_MAX_AGE_S``, 10 s): a
  rebuild changes its tilesetVersion. Other files requested with ``?v=`` equal to the current tilesetVersion
  (CesiumJS appends it to every request below the root) are immutable for a year; without it, or with an old
  one, ``CIM_TILESET_CONTENT_MAX_AGE_S`` (600 s) and revalidation by ETag.
- ETag, 304, Range/206/416 and gzip come from `api.http_cache.static_file_response`.
"""

from __future__ import annotations

import os
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from api.errors import bad_parameter, not_found, single_valued
from api.http_cache import IMMUTABLE, StaticKind, max_age, static_file_response
from api.routers.tiles import ERROR_RESPONSES
from api.tile_state import tile_state

router = APIRouter(tags=["tiles"], dependencies=[Depends(single_valued)])

_OCTETS = "application/octet-stream"
STATIC_KINDS = {
    ".json": StaticKind("application/json", True),
    ".glb": StaticKind("model/gltf-binary", True),
    ".gltf": StaticKind("model/gltf+json", True),
    ".b3dm": StaticKind(_OCTETS, True),
    ".i3dm": StaticKind(_OCTETS, True),
    ".pnts": StaticKind(_OCTETS, True),
    ".cmpt": StaticKind(_OCTETS, True),
    ".subtree": StaticKind(_OCTETS, True),
    ".bin": StaticKind(_OCTETS, True),
    ".png": StaticKind("image/png", False),
    ".jpg": StaticKind("image/jpeg", False),
    ".jpeg": StaticKind("image/jpeg", False),
    ".webp": StaticKind("image/webp", False),
    ".ktx2": StaticKind("image/ktx2", False),
}
NOT_SERVED = frozenset({"build-manifest.json"})
LAYER_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
ROOT_DOCUMENT = "tileset.json"


def safe_relative_path(path: str) -> str:
    """``path`` if it is a plain relative path (see the module docstring); raises 400 otherwise."""
    segments = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(seg in ("", ".", "..") for seg in segments)
    ):
        raise bad_parameter("path", "must be a relative path inside the tileset, without '.', '..' or empty segments")
    return path


def resolve_inside(root: str, relative: str) -> str | None:
    """The real path of ``root/relative`` if it is a regular file inside ``root``'s real path, else None."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real_root, target]) != real_root or target == real_root:
        return None
    return target if os.path.isfile(target) else None


@router.get(
    "/3dtiles/{layer}/{path:path}",
    summary="A file of a built 3D Tiles tileset (tileset.json, .glb content, …)",
    response_class=Response,
    responses={
        200: {
            "content": {"application/json": {}, "model/gltf-binary": {}, _OCTETS: {}},
            "description": "The file",
        },
        206: {"description": "The requested byte range (Content-Range)"},
        416: {"description": "The byte range starts past the end of the file"},
        **ERROR_RESPONSES,
    },
)
def tileset_file(
    request: Request,
    layer: Annotated[
        str,
        Path(
            description="Tileset layer, e.g. buildings",
            examples=["buildings"],
            json_schema_extra={"pattern": f"^{LAYER_RE.pattern}$"},
        ),
    ],
    path: Annotated[str, Path(description="File inside the tileset, e.g. tileset.json", examples=["tileset.json"])],
    v: Annotated[str | None, Query(description="tilesetVersion the client loaded (CesiumJS adds it)")] = None,
) -> Response:
    state = tile_state()
    entry = None
    if LAYER_RE.fullmatch(layer):
        entry = state.tileset(layer, state.current_versions_blocking().get("tilesets", 0))
    if entry is None:
        raise not_found(f"3D tileset {layer!r}")
    relative = safe_relative_path(path)
    name = relative.rsplit("/", 1)[-1]
    kind = STATIC_KINDS.get(os.path.splitext(name)[1].lower())
    target = None
    if kind is not None and not any(seg.startswith(".") for seg in relative.split("/")) and name not in NOT_SERVED:
        target = resolve_inside(str(entry["path"]), relative)
    if target is None or kind is None:
        raise not_found(f"file {relative!r} of 3D tileset {layer!r}")
    if relative == ROOT_DOCUMENT:
        cache_control = max_age(state.settings.tileset_json_max_age_s)
    elif v is not None and v == str(entry["tileset_version"]):
        cache_control = IMMUTABLE
    else:
        cache_control = max_age(state.settings.tileset_content_max_age_s)
    try:
        return static_file_response(request, target, kind, cache_control, state.cache)
    except FileNotFoundError:  # replaced by a rebuild between the checks and the open
        raise not_found(f"file {relative!r} of 3D tileset {layer!r}") from None


# HEAD answers like GET without the body (the server drops it); left out of the OpenAPI document.
router.add_api_route("/3dtiles/{layer}/{path:path}", tileset_file, methods=["HEAD"], include_in_schema=False)
