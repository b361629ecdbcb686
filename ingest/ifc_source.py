"""An opened IFC file: the parsed model, its elements, and their triangulation, which starts in the
background (worker processes, ``ingest.ifc_geometry.Triangulation``) so that the ingest does its Python work
(georeference, properties, the database) meanwhile.

Kept apart from ``ingest.ifc`` so that the command line can open the file and start triangulating before
it imports the rest of the ingest (pandas, the database layer): every import and query after
``start_triangulation`` runs while the model is triangulated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import ifcopenshell
import ifcopenshell.util.unit

from ingest.errors import IngestError
from ingest.ifc_geometry import Mesh, Triangulation, iterator_threads

SCHEMAS = ("IFC2X3", "IFC4", "IFC4X3")


class IfcError(IngestError):
    """An IFC file was refused; the one-line message names the file (and element) and the problem."""


class IfcSource:
    """An opened IFC file: the parsed model and its elements; triangulated when `start_triangulation` is
    called (or on first use of `meshes`): expensive, so a file that cannot be placed fails before it, and
    tests can reuse one source. `stop_triangulation` (also done when the source is dropped) ends a
    triangulation no longer wanted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        if not path.is_file():
            raise IfcError(f"{path}: no such file")
        _check_complete(path)
        try:
            self.model: ifcopenshell.file = ifcopenshell.open(str(path))
        except Exception as exc:  # IfcOpenShell raises several types for unreadable input
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IfcError(f"{self.name}: cannot be read as IFC ({reason})") from None
        self.schema = str(self.model.schema)
        if self.schema not in SCHEMAS:
            raise IfcError(f"{self.name}: IFC schema {self.schema} is not supported (use {', '.join(SCHEMAS)})")
        self.unit_m = float(ifcopenshell.util.unit.calculate_unit_scale(self.model))
        products = [p for p in self.model.by_type("IfcProduct") if isinstance(p, ifcopenshell.entity_instance)]
        self.elements: list[ifcopenshell.entity_instance] = sorted(
            (p for p in products if _has_body(p) and not p.is_a("IfcFeatureElementSubtraction")),
            key=lambda p: str(p.GlobalId),
        )
        self._meshes: dict[int, Mesh] | None = None
        self._triangulation: Triangulation | None = None

    @cached_property
    def sha256(self) -> str:
        """SHA-256 of the file (read when first asked: after the triangulation has started)."""
        from ingest.file_catalog import file_sha256  # imports pyproj: not before the workers start

        return file_sha256(self.path)

    @property
    def triangulated(self) -> bool:
        """Whether the meshes are there already."""
        return self._meshes is not None

    def start_triangulation(self) -> None:
        """Start triangulating the elements in the background (once; nothing if already done)."""
        if self._meshes is None and self._triangulation is None:
            self._triangulation = Triangulation(self.model, self.elements, iterator_threads())

    def meshes(self, on_mesh: Callable[[], None] | None = None) -> dict[int, Mesh]:
        """Element meshes in model world metres by STEP id (computed once; waits for a running
        triangulation). ``on_mesh`` is called after each element as it comes."""
        if self._meshes is None:
            if self._triangulation is None:
                self._triangulation = Triangulation(self.model, self.elements, iterator_threads())
            try:
                self._meshes = self._triangulation.collect(on_mesh)
            except Exception as exc:  # the geometry kernel's own failures
                raise IfcError(f"{self.name}: IfcOpenShell failed to triangulate the model ({exc})") from None
            finally:
                self.stop_triangulation()
        return self._meshes

    def stop_triangulation(self) -> None:
        """Abandon a running triangulation (its workers end at once). A later `meshes` starts again."""
        triangulation = getattr(self, "_triangulation", None)  # None too when __init__ failed
        if triangulation is not None:
            triangulation.stop()
            self._triangulation = None


def open_ifc(path: Path) -> IfcSource:
    """Open an IFC file; raises IfcError when it cannot be read or has an unsupported schema."""
    return IfcSource(path)


def _check_complete(path: Path) -> None:
    """Refuse an empty or cut-off STEP file: IfcOpenShell reads what is there, so a truncated transfer would
    otherwise load as a smaller building."""
    size = path.stat().st_size
    if size == 0:
        raise IfcError(f"{path.name}: the file is empty")
    with path.open("rb") as fh:
        head = fh.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
        fh.seek(max(0, size - 1024))
        tail = fh.read().rstrip()
    if head.startswith(b"ISO-10303-21") and not tail.endswith(b"END-ISO-10303-21;"):
        raise IfcError(f"{path.name}: the file is cut off: it does not end with END-ISO-10303-21;")


def _has_body(product: ifcopenshell.entity_instance) -> bool:
    shape = product.Representation
    if shape is None:
        return False
    return any(r.RepresentationIdentifier == "Body" for r in shape.Representations or ())
