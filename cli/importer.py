"""``meshsim import``: write a scenario from a cluster's manifests, traces and metrics."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from meshsim.files import write_atomic, write_error
from meshsim.scenario.model import MESH_NAMES

from .common import user_errors


@click.command("import")
@click.argument("paths", nargs=-1, required=True, metavar="DIR_OR_FILE...")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Scenario file to write.",
)
@click.option(
    "--traces",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="OTLP JSON, Jaeger JSON or Zipkin v2 JSON traces: call graph, service times.",
)
@click.option(
    "--metrics",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Prometheus text or query JSON of Istio's or Linkerd's request metrics.",
)
@click.option(
    "--mesh",
    "meshes",
    multiple=True,
    type=click.Choice(MESH_NAMES[1:]),
    help="Meshes to compare (default: those the manifests turn on).",
)
@click.option("--name", default=None, help="Scenario name (default: the first path's name).")
@click.option("--quiet", "-q", is_flag=True, help="Do not list the warnings.")
@user_errors
def importer(
    paths: tuple[str, ...],
    out: Path,
    traces: tuple[Path, ...],
    metrics: tuple[Path, ...],
    meshes: tuple[str, ...],
    name: str | None,
    quiet: bool,
) -> None:
    """Write a scenario from Kubernetes, Istio, Gateway API and Linkerd manifests.

    Every generated value carries a comment saying where it came from; what the scenario
    format cannot express is listed as a warning at the top of the file.
    """
    from meshsim.scenario.importers import import_cluster

    command = "meshsim import " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    result = import_cluster(
        paths,
        traces=traces,
        metrics=metrics,
        meshes=meshes or None,
        name=name,
        command=command if sys.argv[1:2] == ["import"] else "meshsim import",
    )
    try:
        write_atomic(out, result.text.encode("utf-8"))
    except OSError as exc:
        raise write_error(out, exc) from None
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    sc = result.scenario
    pods = sum(s.total_replicas for s in sc.services)
    console.print(
        f"wrote {out}: {len(sc.services)} services, {pods} pods, {len(sc.workloads)} workloads, "
        f"{len(sc.traffic)} traffic rules; {len(result.warnings)} warnings, "
        f"{len(result.skipped)} objects skipped",
        markup=False,
    )
    if not quiet:
        for w in result.warnings:
            console.print(f"warning: {w}", markup=False)
    console.print(f"next: meshsim check {out}  then  meshsim run {out}", markup=False)
