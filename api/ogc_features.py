"""OGC API – Features semantics in one framework-neutral module: conformance, the landing page, collection
documents, queryables, and the FeatureCollection envelope with its paging links.

Decisions recorded here:
- **Conformance**: Part 1 core, GeoJSON, OpenAPI 3.0; Part 2 CRS by reference; Part 3 queryables,
  queryables as query parameters, filter and features-filter; CQL2 text and JSON with basic and advanced
  comparison, case-insensitive comparison, arithmetic, basic and full spatial functions and temporal
  functions (those of `cim.store.cql2_filter`).
- **The envelope is assembled as bytes** around the features' GeoJSON texts from PostGIS: nothing is parsed.
  ``numberMatched`` is exact up to ``COUNT_EXACT_UP_TO`` (`cim.store.features`); past it it is PostgreSQL's
  estimate, and the response says so in ``numberMatchedExact: false`` and in the ``next`` link's title.
- **Links are absolute**, built from the request's own URL, so they work behind any host name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from cim.store.collections import Collection, Prop
from cim.store.feature_crs import CRS84_URI, FeatureCrs
from cim.store.features import Extent

GEOJSON = "application/geo+json"
JSON = "application/json"
SCHEMA_JSON = "application/schema+json"
OPENAPI_JSON = "application/vnd.oai.openapi+json;version=3.0"

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/arithmetic",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
)


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    return out


def landing_page(base: str) -> dict[str, Any]:
    return {
        "title": "CIM digital-twin service",
        "description": (
            "City Information Modeling: the city's administrative units, parcels, buildings, houses, BIM, "
            "pipe networks, IoT devices and events as OGC API – Features."
        ),
        "links": [
            _link(f"{base}/", "self", JSON, "This document"),
            _link(f"{base}/api", "service-desc", OPENAPI_JSON, "The API definition (OpenAPI 3.0)"),
            _link(f"{base}/docs", "service-doc", "text/html", "The API documentation"),
            _link(f"{base}/conformance", "conformance", JSON, "Conformance classes implemented"),
            _link(f"{base}/collections", "data", JSON, "The feature collections"),
        ],
    }


def conformance(base: str) -> dict[str, Any]:
    return {"conformsTo": list(CONFORMANCE), "links": [_link(f"{base}/conformance", "self", JSON)]}


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def collection_doc(
    base: str, c: Collection, extent: Extent, crs_list: tuple[FeatureCrs, ...], storage_uri: str
) -> dict[str, Any]:
    url = f"{base}/collections/{c.id}"
    doc: dict[str, Any] = {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "links": [
            _link(url, "self", JSON, "This collection"),
            _link(f"{url}/items", "items", GEOJSON, f"The {c.id} as GeoJSON"),
            _link(
                f"{url}/queryables",
                "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                SCHEMA_JSON,
                "Properties usable in filter and as query parameters",
            ),
        ],
        "crs": [x.uri for x in crs_list],
        "storageCrs": storage_uri,
    }
    ext: dict[str, Any] = {}
    if extent.bbox is not None:
        ext["spatial"] = {"bbox": [list(extent.bbox)], "crs": CRS84_URI}
    if c.temporal is not None:
        start, end = extent.interval or (None, None)
        ext["temporal"] = {
            "interval": [[_iso(start), _iso(end)]],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
    if ext:
        doc["extent"] = ext
    return doc


def collections_doc(base: str, docs: list[dict[str, Any]], crs_list: tuple[FeatureCrs, ...]) -> dict[str, Any]:
    return {
        "links": [_link(f"{base}/collections", "self", JSON, "The feature collections")],
        "collections": docs,
        "crs": [x.uri for x in crs_list],
    }


_JSON_SCHEMA_TYPES: dict[str, dict[str, str]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "date-time": {"type": "string", "format": "date-time"},
}


def _prop_schema(p: Prop) -> dict[str, Any]:
    out: dict[str, Any] = {"title": p.title, **_JSON_SCHEMA_TYPES[p.type]}
    if p.enum:
        out["enum"] = list(p.enum)
    return out


def queryables_doc(base: str, c: Collection) -> dict[str, Any]:
    """A JSON Schema of the properties usable in ``filter``, ``sortby`` and as query parameters."""
    props: dict[str, Any] = {
        "geometry": {
            "title": "Geometry (also as " + repr(c.geometry_column) + ")",
            "format": f"geometry-{c.geometry_type.lower()}",
            "x-ogc-role": "primary-geometry",
        }
    }
    props.update({p.name: _prop_schema(p) for p in c.properties if p.queryable})
    if c.temporal is not None:
        props[c.temporal.start]["x-ogc-role"] = "primary-instant"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{base}/collections/{c.id}/queryables",
        "type": "object",
        "title": c.title,
        "properties": props,
        "additionalProperties": False,
    }


# ------------------------------------------------------------------------------------------------------
# Items


def page_links(
    url: str,
    query: list[tuple[str, str]],
    collection_url: str,
    *,
    offset: int,
    limit: int,
    returned: int,
    more: bool,
    exact: bool,
) -> list[dict[str, str]]:
    """self, alternate, collection and (when there are such pages) next and prev links of an items page."""

    def with_params(**changes: str) -> str:
        kept = [(k, v) for k, v in query if k not in changes]
        return url + "?" + urlencode(kept + list(changes.items())) if kept or changes else url

    self_href = url + ("?" + urlencode(query) if query else "")
    links = [
        _link(self_href, "self", GEOJSON, "This page"),
        _link(with_params(f="json"), "alternate", JSON, "This page as plain JSON"),
        _link(collection_url, "collection", JSON, "The collection"),
    ]
    if more:
        title = "Next page" if exact else "Next page (numberMatched is an estimate)"
        links.append(_link(with_params(offset=str(offset + returned)), "next", GEOJSON, title))
    if offset > 0:
        links.append(_link(with_params(offset=str(max(0, offset - limit))), "prev", GEOJSON, "Previous page"))
    return links


def feature_collection(
    features: list[str], matched: int, exact: bool, links: list[dict[str, str]], timestamp: datetime
) -> bytes:
    """The FeatureCollection document around the features' GeoJSON texts."""
    head = '{"type":"FeatureCollection","timeStamp":' + json.dumps(_iso(timestamp)) + ',"features":['
    tail = (
        f'],"numberMatched":{matched},"numberMatchedExact":{"true" if exact else "false"},'
        f'"numberReturned":{len(features)},"links":{json.dumps(links, ensure_ascii=False)}}}'
    )
    return (head + ",".join(features) + tail).encode()
