"""JSON Schema (draft 2020-12) of command parameters: checked when a template is saved and
used to validate every command's parameters, with jsonschema-rs.

Remote ``$ref`` retrieval is off (a retriever that refuses every URI: files and HTTP), and
patterns use the linear-time ``regex`` engine (no backtracking, so no catastrophic pattern),
both for the schema's own ``pattern`` keywords and for ``format: regex``. A problem is a
(field path, description) pair, ready to become a BadRequest field violation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema_rs

DIALECT = "https://json-schema.org/draft/2020-12/schema"
MAX_SCHEMA_BYTES = 64 * 1024
MAX_PARAMETERS_BYTES = 16 * 1024

Problem = tuple[str, str]


def _refuse(uri: str) -> Any:
    raise ValueError(f"remote $ref retrieval is off ({uri}): keep every subschema in $defs")


def _compile(schema: Mapping[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        dict(schema),
        retriever=_refuse,
        pattern_options=jsonschema_rs.RegexOptions(),
        validate_formats=True,
    )


@functools.lru_cache(maxsize=512)
def _cached(schema_text: str) -> jsonschema_rs.Validator:
    return _compile(json.loads(schema_text))


def validator_for(schema: Mapping[str, Any]) -> jsonschema_rs.Validator:
    """A compiled validator, cached by the schema's canonical text."""
    return _cached(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def _path(prefix: str, parts: list[str | int]) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def check_schema(field: str, schema: Any) -> list[Problem]:
    """Problems that keep ``schema`` from being a parameters schema: it must be a draft
    2020-12 JSON Schema (meta-validated) of an object, compilable without remote references."""
    if not isinstance(schema, dict):
        return [(field, "must be a JSON Schema object")]
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        return [(field, f"must be at most {MAX_SCHEMA_BYTES} bytes as JSON")]
    problems: list[Problem] = []
    dialect = schema.get("$schema", DIALECT)
    if dialect != DIALECT:
        problems.append((f"{field}.$schema", f"must be {DIALECT} (or absent)"))
    if schema.get("type") != "object":
        problems.append((f"{field}.type", 'must be "object": parameters are a JSON object'))
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        problems.append((_path(field, list(exc.instance_path)), exc.message))
        return problems
    if problems:
        return problems
    try:
        validator_for(schema)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = getattr(exc, "message", str(exc)).splitlines()[0]
        problems.append((field, f"cannot be compiled: {message}"))
    return problems


def validate_parameters(
    field: str, schema: Mapping[str, Any], parameters: Mapping[str, Any]
) -> list[Problem]:
    """Every way ``parameters`` fails ``schema``, one problem per bad field path."""
    if len(json.dumps(parameters)) > MAX_PARAMETERS_BYTES:
        return [(field, f"must be at most {MAX_PARAMETERS_BYTES} bytes as JSON")]
    problems: list[Problem] = []
    for error in validator_for(schema).iter_errors(dict(parameters)):
        path = list(error.instance_path)
        kind = error.kind.name
        detail = error.kind.as_dict()
        if kind == "required" and "property" in detail:
            problems.append((_path(field, [*path, detail["property"]]), "required"))
        elif kind == "additionalProperties" and detail.get("unexpected"):
            for name in detail["unexpected"]:
                problems.append((_path(field, [*path, name]), "is not a parameter of this command"))
        else:
            problems.append((_path(field, path), error.message))
    return problems


def merge_defaults(defaults: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The template's defaults with the caller's parameters over them (top level)."""
    return {**defaults, **parameters}
