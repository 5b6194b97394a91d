"""``meshsim schema``: the scenario format's JSON Schema, for editors."""

from __future__ import annotations

import json
from typing import Any

import click

from meshsim.scenario.base import MAX_QUANTITY, MIN_QUANTITY
from meshsim.scenario.model import Scenario

_DISTRIBUTION = {"$ref": "#/$defs/Distribution"}
_SHORTHAND = {
    "type": "number",
    "minimum": MIN_QUANTITY,
    "maximum": MAX_QUANTITY,
    "description": "A constant (shorthand).",
}


def _with_number_shorthand(doc: dict[str, Any]) -> dict[str, Any]:
    """Let distribution-valued keys also take a number (`cpu_ms: 2` means a constant 2 ms),
    as the loader does; pydantic's schema shows only the mapping form."""
    for definition in doc.get("$defs", {}).values():
        for name, prop in definition.get("properties", {}).items():
            if prop.get("$ref") == _DISTRIBUTION["$ref"]:
                rest = {k: v for k, v in prop.items() if k != "$ref"}
                definition["properties"][name] = {"anyOf": [_DISTRIBUTION, _SHORTHAND], **rest}
            elif _DISTRIBUTION in prop.get("anyOf", []):
                prop["anyOf"] = [*prop["anyOf"], _SHORTHAND]
    return doc


@click.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (format version 1).

    Point your editor's YAML language server at it, e.g. with a first line
    `# yaml-language-server: $schema=meshsim-scenario.schema.json`.
    """
    doc = _with_number_shorthand(Scenario.model_json_schema(by_alias=True))
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "meshsim scenario, format version 1"
    click.echo(json.dumps(doc, indent=2))
