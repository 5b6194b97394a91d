"""``meshsim schema``: the scenario format's JSON Schema, for editors."""

from __future__ import annotations

import json

import click

from meshsim.scenario.model import Scenario


@click.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (format version 1).

    Point your editor's YAML language server at it, e.g. with a first line
    `# yaml-language-server: $schema=meshsim-scenario.schema.json`.
    """
    doc = Scenario.model_json_schema(by_alias=True)
    doc["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    doc["title"] = "meshsim scenario, format version 1"
    click.echo(json.dumps(doc, indent=2))
