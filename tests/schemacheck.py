"""A small strict validator for the JSON Schema subset ``vkscraper/service/openapi.py`` uses
(no ``jsonschema`` in the dev requirements): ``$ref`` (local), ``type`` (a name or a list),
``enum``, ``const``, ``properties``, ``required``, ``additionalProperties`` (bool or schema),
``items``, ``minItems``, ``maxItems``, ``minimum``, ``maximum``, ``oneOf``, ``format:
date-time``. A keyword it does not know is an error, so the document cannot silently rely on
one it does not check."""

from __future__ import annotations

import re
from typing import Any

KNOWN = {
    "$ref", "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "minItems", "maxItems", "minimum", "maximum", "oneOf", "format", "description", "default",
}  # fmt: skip
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def errors(
    value: Any, schema: dict[str, Any], document: dict[str, Any], at: str = "$"
) -> list[str]:
    """Every way ``value`` breaks ``schema`` (empty: it conforms)."""
    unknown = set(schema) - KNOWN
    if unknown:
        return [f"{at}: schema keyword(s) the checker does not know: {sorted(unknown)}"]
    if "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return errors(value, target, document, at)
    out: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[n](value) for n in names):
            return [f"{at}: {value!r:.80} is not of type {'/'.join(names)}"]
    if "const" in schema and (
        value != schema["const"] or type(value) is not type(schema["const"])
    ):
        out.append(f"{at}: {value!r:.80} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{at}: {value!r:.80} is not one of {schema['enum']}")
    if schema.get("format") == "date-time" and isinstance(value, str):
        if not _DATE_TIME.fullmatch(value):
            out.append(f"{at}: {value!r} is not a date-time")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        out.append(f"{at}: {value} < {schema['minimum']}")
    if "maximum" in schema and _TYPES["number"](value) and value > schema["maximum"]:
        out.append(f"{at}: {value} > {schema['maximum']}")
    if "oneOf" in schema:
        fits = [s for s in schema["oneOf"] if not errors(value, s, document, at)]
        if len(fits) != 1:
            out.append(f"{at}: matches {len(fits)} of the oneOf schemas, not exactly one")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                out.append(f"{at}: '{name}' is missing")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                out += errors(item, properties[name], document, f"{at}.{name}")
            elif extra is False:
                out.append(f"{at}: '{name}' is not in the document")
            elif isinstance(extra, dict):
                out += errors(item, extra, document, f"{at}.{name}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{at}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{at}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += errors(item, schema["items"], document, f"{at}[{i}]")
    return out
