"""The JSON Schema of the config file, and what each field allows in words.

`finetune-pipeline check-config --schema > configs/pipeline.schema.json`
writes the committed schema (editors validate and complete the YAML files with
it, through their `# yaml-language-server: $schema=...` line); a test fails
when it is out of date. The same words describe a field in error messages and
in docs/configuration.md, so they cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config.pipeline import PipelineConfig

SCHEMA_FILE = PROJECT_ROOT / "configs" / "pipeline.schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


@functools.cache
def pipeline_schema() -> dict[str, Any]:
    """PipelineConfig's JSON Schema, with descriptions and bounds; base_dir is internal and not in it."""
    schema = PipelineConfig.model_json_schema()
    _drop_field_titles(schema)
    return {"$schema": DIALECT, **schema, "title": "finetune_pipeline run config"}


def schema_text() -> str:
    return json.dumps(pipeline_schema(), indent=2, ensure_ascii=False) + "\n"


def _drop_field_titles(node: Any) -> None:
    """"Learning Rate" above "learning_rate" says nothing; sections keep their class names."""
    if isinstance(node, dict):
        for prop in node.get("properties", {}).values():
            prop.pop("title", None)
        for value in node.values():
            _drop_field_titles(value)
    elif isinstance(node, list):
        for value in node:
            _drop_field_titles(value)


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """The node itself, or the definition its $ref points at (with the referring node's description)."""
    if "$ref" in node:
        target = pipeline_schema()["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def is_section(node: dict[str, Any]) -> bool:
    return "properties" in resolve(node)


def node_at(path: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], dict[str, Any]]:
    """The deepest schema node along `path` (section fields, mapping keys, list items) and how far it got.

    A path element that is none of these (a union member's tag in a pydantic
    error) ends the walk: the error is then about the field as a whole.
    """
    node, walked = pipeline_schema(), ()
    for part in path:
        node = resolve(node)
        if isinstance(part, str) and part in node.get("properties", {}):
            child = node["properties"][part]
        elif isinstance(part, str) and isinstance(node.get("additionalProperties"), dict):
            child = node["additionalProperties"]
        elif isinstance(part, int) and isinstance(node.get("items"), dict):
            child = node["items"]
        else:
            break
        node, walked = child, (*walked, part)
    return walked, resolve(node)


def number_text(value: float) -> str:
    """1, 0.5, 1e-05; a float bound of 0 reads 0, not 0.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def bounds(node: dict[str, Any]) -> str:
    """"> 0", ">= 1", "in [0, 1)", "1 to 64 characters long", or "" for a field without bounds."""
    low = ("[", node["minimum"]) if "minimum" in node else ("(", node["exclusiveMinimum"]) \
        if "exclusiveMinimum" in node else None
    high = ("]", node["maximum"]) if "maximum" in node else (")", node["exclusiveMaximum"]) \
        if "exclusiveMaximum" in node else None
    if low and high:
        return f"in {low[0]}{number_text(low[1])}, {number_text(high[1])}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {number_text(low[1])}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {number_text(high[1])}"
    if "minLength" in node and "maxLength" in node:
        return f"{node['minLength']} to {node['maxLength']} characters long"
    if node.get("minLength") == 1:
        return "non-empty"
    if "maxLength" in node:
        return f"at most {node['maxLength']} characters long"
    return ""


def _choices(values: list[Any]) -> str:
    words = [json.dumps(v) if v is None or isinstance(v, bool) else str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + f" or {words[-1]}"


_NOUN = {"string": ("a string", "strings"), "integer": ("an integer", "integers"),
         "number": ("a number", "numbers"), "boolean": ("true or false", "booleans"), "null": ("null", "nulls")}


def allowed(node: dict[str, Any], plural: bool = False) -> str:
    """What a field allows, in words: "an integer > 0", "lora, qlora or full", "a list of strings"..."""
    node = resolve(node)
    if "enum" in node or "const" in node:
        return _choices(node["enum"] if "enum" in node else [node["const"]])
    if "examples" in node and node.get("type") == "string":
        return _choices(node["examples"])  # a registry's names (data.mapping.format), checked by a validator
    if "anyOf" in node:
        members = [resolve(m) for m in node["anyOf"]]
        # true / false / auto read as one list of choices; other members keep their own words.
        choices = [v for m in members for v in ([True, False] if m.get("type") == "boolean" and len(m) == 1
                                                else m.get("enum", [m["const"]] if "const" in m else []))]
        others = [allowed(m, plural) for m in members
                  if not ("enum" in m or "const" in m or (m.get("type") == "boolean" and len(m) == 1))]
        return " or ".join(([_choices(choices)] if choices else []) + others)
    kind = node.get("type")
    if "properties" in node:
        return "mappings" if plural else "a mapping"
    if kind == "array":
        return f"{'lists' if plural else 'a list'} of {allowed(node.get('items', {}), plural=True)}"
    if kind == "object":
        values = node.get("additionalProperties")
        of = f" of names to {allowed(values, plural=True)}" if isinstance(values, dict) else ""
        return f"{'mappings' if plural else 'a mapping'}{of}"
    if kind in _NOUN:
        noun = _NOUN[kind][1 if plural else 0]
        rule = bounds(node)
        if rule == "non-empty":
            return f"non-empty {noun}" if plural else f"a non-empty {noun.removeprefix('a ')}"
        if kind == "string" and rule:
            return f"{noun} {rule}"
        return f"{noun} {rule}".strip()
    return "a value"  # an Any field: nothing to say

