"""JSON Schemas of the OGC API – Features responses, for the OpenAPI document (``components/schemas``).

Written after the schemas of the OGC API – Features Part 1 OpenAPI fragments, reduced to what this service
returns; GeoJSON geometry is left open (any GeoJSON geometry object).
"""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


LINK = {
    "type": "object",
    "required": ["href", "rel"],
    "properties": {
        "href": {"type": "string"},
        "rel": {"type": "string"},
        "type": {"type": "string"},
        "title": {"type": "string"},
    },
}

_LINKS = {"type": "array", "items": _ref("Link")}

GEOMETRY = {
    "type": "object",
    "description": "A GeoJSON geometry object (coordinates in the response's Content-Crs, its axis order).",
    "required": ["type"],
    "properties": {
        "type": {
            "type": "string",
            "enum": [
                "Point",
                "MultiPoint",
                "LineString",
                "MultiLineString",
                "Polygon",
                "MultiPolygon",
                "GeometryCollection",
            ],
        },
        "coordinates": {"type": "array", "items": {}},
        "geometries": {"type": "array", "items": {"type": "object"}},
    },
}

FEATURE = {
    "type": "object",
    "required": ["type", "geometry", "properties"],
    "properties": {
        "type": {"type": "string", "enum": ["Feature"]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "geometry": {"allOf": [_ref("GeometryGeoJSON")], "nullable": True},
        "properties": {"type": "object", "nullable": True},
        "links": _LINKS,
    },
}

FEATURE_COLLECTION = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {"type": "array", "items": _ref("FeatureGeoJSON")},
        "links": _LINKS,
        "timeStamp": {"type": "string", "format": "date-time"},
        "numberMatched": {"type": "integer", "minimum": 0},
        "numberMatchedExact": {
            "type": "boolean",
            "description": "false when numberMatched is the database's estimate (more than 10,000 matches)",
        },
        "numberReturned": {"type": "integer", "minimum": 0},
    },
}

LANDING_PAGE = {
    "type": "object",
    "required": ["links"],
    "properties": {"title": {"type": "string"}, "description": {"type": "string"}, "links": _LINKS},
}

CONF_CLASSES = {
    "type": "object",
    "required": ["conformsTo"],
    "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}, "links": _LINKS},
}

EXTENT = {
    "type": "object",
    "properties": {
        "spatial": {
            "type": "object",
            "properties": {
                "bbox": {
                    "type": "array",
                    "items": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
                },
                "crs": {"type": "string"},
            },
        },
        "temporal": {
            "type": "object",
            "properties": {
                "interval": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 2,
                        "items": {"type": "string", "format": "date-time", "nullable": True},
                    },
                },
                "trs": {"type": "string"},
            },
        },
    },
}

COLLECTION = {
    "type": "object",
    "required": ["id", "links"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "links": _LINKS,
        "extent": _ref("Extent"),
        "itemType": {"type": "string"},
        "crs": {"type": "array", "items": {"type": "string"}},
        "storageCrs": {"type": "string"},
    },
}

COLLECTIONS = {
    "type": "object",
    "required": ["links", "collections"],
    "properties": {
        "links": _LINKS,
        "collections": {"type": "array", "items": _ref("Collection")},
        "crs": {"type": "array", "items": {"type": "string"}},
    },
}

QUERYABLES = {
    "type": "object",
    "description": "A JSON Schema (draft 2020-12) of the properties usable in filter, sortby and as parameters.",
    "required": ["properties"],
    "properties": {
        "$schema": {"type": "string"},
        "$id": {"type": "string"},
        "type": {"type": "string"},
        "title": {"type": "string"},
        "properties": {"type": "object", "additionalProperties": {"type": "object"}},
        "additionalProperties": {"type": "boolean"},
    },
}

EXCEPTION = {
    "type": "object",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "description": "InvalidParameterValue, NotFound or ServiceUnavailable"},
        "description": {"type": "string"},
        "parameter": {"type": "string", "description": "The query parameter that was wrong (400 only)"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Link": LINK,
    "GeometryGeoJSON": GEOMETRY,
    "FeatureGeoJSON": FEATURE,
    "FeatureCollectionGeoJSON": FEATURE_COLLECTION,
    "LandingPage": LANDING_PAGE,
    "ConfClasses": CONF_CLASSES,
    "Extent": EXTENT,
    "Collection": COLLECTION,
    "Collections": COLLECTIONS,
    "Queryables": QUERYABLES,
    "Exception": EXCEPTION,
}


def response(media_type: str, schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": _ref(schema)}}}


def geojson_response(schema: str, description: str) -> dict[str, Any]:
    """A GeoJSON 200 with its ``Content-Crs`` header (OGC API – Features Part 2); ``f=json`` sends the same
    document as ``application/json``."""
    content = {media: {"schema": _ref(schema)} for media in ("application/geo+json", "application/json")}
    return {
        "description": description,
        "content": content,
        "headers": {
            "Content-Crs": {"description": "The CRS of the coordinates, as <URI>", "schema": {"type": "string"}}
        },
    }


def error(description: str) -> dict[str, Any]:
    return response("application/json", "Exception", description)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error responses of an endpoint: 400 bad parameter, 404 unknown id, 503 statement timeout."""
    text = {
        400: "A query parameter is wrong; `parameter` names it",
        404: "The collection or feature does not exist",
        503: "The database query took too long; retry after Retry-After seconds",
    }
    return {c: error(text[c]) for c in codes}
