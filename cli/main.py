"""The ``meshsim`` command group.

Commands are loaded lazily, so that ``meshsim --help`` and ``meshsim check`` do not
pay for importing pandas, matplotlib or asyncio machinery they do not use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

import click

from meshsim import __version__

# name -> ("module:attribute", one-line help). One module per command.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("meshsim.cli.run:run", "Simulate a scenario for each of its meshes and summarise."),
    "check": ("meshsim.cli.check:check", "Validate a scenario and print its call graph."),
    "schema": ("meshsim.cli.schema:schema", "Print the scenario JSON Schema (for editors)."),
    "echo": ("meshsim.cli.echo:echo", "Serve a fortio-like echo upstream."),
    "load": ("meshsim.cli.load:load", "Open-loop load generator with corrected latency."),
    "proxy": ("meshsim.cli.proxy:proxy", "Run the real sidecar proxy."),
    "ca": ("meshsim.cli.ca:ca", "A small certificate authority for workload mTLS."),
    "lab": (
        "meshsim.cli.lab:lab",
        "Start a scenario's services as echo upstreams behind sidecars.",
    ),
    "report": ("meshsim.cli.report:report", "Compare saved runs in an HTML and Markdown report."),
    "compare": ("meshsim.cli.compare:compare", "Run a scenario for several meshes and report."),
    "sweep": ("meshsim.cli.sweep:sweep", "Run a parameter sweep locally or on Dask (resumable)."),
    "bench": ("meshsim.cli.bench:bench", "Compare model outputs with a baseline (CI gate)."),
    "calibrate": ("meshsim.cli.calibrate:calibrate", "Fit a cost model from lab or fortio runs."),
    "validate": ("meshsim.cli.validate:validate", "Compare a calibrated model's predictions."),
    "import": ("meshsim.cli.importer:importer", "Write a scenario from manifests and traces."),
    "size": ("meshsim.cli.size:size", "Size proxies and control plane for a load, in seconds."),
    "export-spans": (
        "meshsim.cli.export_spans:export_spans",
        "Export a --records run's requests as OTLP JSON traces.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (target, _) in COMMANDS.items() if _importable(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None
            raise
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _importable(target: str) -> bool:
    module_name = target.split(":")[0]
    return importlib.util.find_spec(module_name) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshsim")
def cli() -> None:
    """meshsim: simulate and benchmark service meshes (Istio, Linkerd) side by side."""


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="meshsim")
