"""``meshsim size``: cores, memory, control plane and added latency for a mesh at a load."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshsim.errors import InputError, Problem

from .common import user_errors

MESHES = ("istio", "linkerd", "istio-ambient")


class _Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    name: str
    rps: float = Field(ge=0, le=1e9)
    pods: int = Field(ge=1, le=150_000)
    calls: float = Field(0.0, ge=0, le=1000)


class SizeFile(BaseModel):
    """The short YAML ``meshsim size --input`` reads (command-line options win)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    meshes: list[str] | None = None
    rps: float | None = Field(None, gt=0, le=1e9)
    workloads: list[_Workload] | None = None
    services: int | None = Field(None, ge=1, le=150_000)
    pods: int | None = Field(None, ge=1, le=150_000)
    calls_per_request: float | None = Field(None, ge=0, le=1000)
    connections: int | None = Field(None, ge=1, le=10_000_000)
    request_bytes: int | None = Field(None, ge=0, le=2**31 - 1)
    response_bytes: int | None = Field(None, ge=0, le=2**31 - 1)
    churn_per_s: float | None = Field(None, ge=0, le=1e6)
    mtls: bool | None = None
    workers: int | None = Field(None, ge=1, le=1024)
    sidecar_scoping: bool | None = None
    view_services: int | None = Field(None, ge=1, le=150_000)
    istiod_replicas: int | None = Field(None, ge=1, le=1000)
    nodes: int | None = Field(None, ge=1, le=5000)
    node_cores: int | None = Field(None, ge=1, le=1024)
    waypoints: int | None = Field(None, ge=0, le=10_000)


def _read_file(path: Path) -> SizeFile:
    from meshsim.scenario.loader import explain_error, locate
    from meshsim.scenario.yaml_input import field_path, parse_yaml, read_text

    data, node = parse_yaml(read_text(path), str(path))
    try:
        return SizeFile.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            parts, target = locate(tuple(err["loc"]), data, node)
            line = target.start_mark.line + 1 if target is not None else None
            problems.append(Problem(field_path(parts), explain_error(err), line=line))
        raise InputError(problems, str(path), kind="sizing input") from None


def _workload_option(text: str) -> tuple[str, float, int | None, float | None]:
    try:
        name, rest = text.split("=", 1)
        parts = rest.split(":")
        rps = float(parts[0])
        pods = int(parts[1]) if len(parts) > 1 and parts[1] else None
        calls = float(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError:
        raise InputError(
            [Problem("--workload", f"expected NAME=RPS[:PODS[:CALLS]], got {text!r}")]
        ) from None
    if (
        not (math.isfinite(rps) and rps >= 0)
        or (pods is not None and pods < 1)
        or (calls is not None and not (math.isfinite(calls) and calls >= 0))
    ):
        raise InputError([Problem("--workload", f"rps >= 0, pods >= 1, calls >= 0: {text!r}")])
    return name, rps, pods, calls


OPTION_NAMES = {"churn_per_s": "--churn"}


def _models_option(values: tuple[str, ...]) -> dict[str, str]:
    from meshsim.models import load_model

    out = {}
    for text in values:
        mesh, _, file = text.partition("=")
        if mesh not in MESHES or not file:
            raise InputError(
                [Problem("--model", f"expected MESH=FILE with MESH one of {', '.join(MESHES)}, "
                         f"got {text!r}")]
            )  # fmt: skip
        load_model(file)  # a clear error now, naming the file, rather than mid-answer
        out[mesh] = file
    return out


def _check_options(values: dict[str, Any]) -> None:
    """The command-line values against the same bounds as the input file's."""
    from meshsim.scenario.loader import explain_error

    given = {k: v for k, v in values.items() if v is not None}
    try:
        SizeFile.model_validate(given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0])
            option = OPTION_NAMES.get(key, "--" + key.replace("_", "-"))
            problems.append(Problem(option, explain_error(err)))
        raise InputError(problems, kind="sizing option") from None


def _pick(cli_value: Any, file_value: Any, default: Any) -> Any:
    if cli_value is not None:
        return cli_value
    return file_value if file_value is not None else default


@click.command("size")
@click.option(
    "--input",
    "input_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A short YAML of the options below (options given here win).",
)
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Take services, pods, rates and calls from a scenario (an imported one).",
)
@click.option(
    "--mesh",
    "meshes",
    multiple=True,
    type=click.Choice(MESHES),
    help="Mesh(es) to size (default: istio and linkerd).",
)
@click.option("--rps", type=float, default=None, help="Client requests per second, in total.")
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    metavar="NAME=RPS[:PODS[:CALLS]]",
    help="A workload's own rate into its pods, its pods and the calls it makes per "
    "request (repeat).",
)
@click.option("--services", type=int, default=None, help="Services in the mesh.")
@click.option("--pods", type=int, default=None, help="Meshed pods (with --rps).")
@click.option(
    "--calls-per-request",
    type=float,
    default=None,
    help="Service-to-service calls one client request causes (default 1).",
)
@click.option("--connections", type=int, default=None, help="Open connections per proxy (8).")
@click.option("--request-bytes", type=int, default=None, help="Request payload (1024).")
@click.option("--response-bytes", type=int, default=None, help="Response payload (1024).")
@click.option(
    "--churn",
    "churn_per_s",
    type=float,
    default=None,
    help="Pods replaced per second (rollouts, autoscaling).",
)
@click.option("--mtls/--no-mtls", default=None, help="Mutual TLS between proxies (on).")
@click.option("--workers", type=int, default=None, help="Proxy worker threads (model default).")
@click.option(
    "--sidecar-scoping",
    is_flag=True,
    default=None,
    help="Istio Sidecar resources scope each proxy to what it calls.",
)
@click.option(
    "--view-services",
    type=int,
    default=None,
    help="Services a scoped sidecar or a Linkerd proxy holds (default: its calls + 1).",
)
@click.option("--istiod-replicas", type=int, default=None, help="istiod replicas (1).")
@click.option("--nodes", type=int, default=None, help="Nodes (default: a node per 10 pods).")
@click.option("--node-cores", type=int, default=None, help="Cores per node (8).")
@click.option("--waypoints", type=int, default=None, help="Ambient waypoint replicas (0: L4).")
@click.option(
    "--samples",
    type=click.IntRange(0, 64),
    default=32,
    show_default=True,
    help="Parameter sets over the models' ranges for the bands (0: no band).",
)
@click.option(
    "--simulate",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Simulate the hop latency (auto: near saturation).",
)
@click.option(
    "--model",
    "model_files",
    multiple=True,
    metavar="MESH=FILE",
    help="A proxy cost model for a mesh (a calibrated file, or another Envoy build's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@user_errors
def size(
    input_path: Path | None,
    scenario_path: Path | None,
    meshes: tuple[str, ...],
    rps: float | None,
    workloads: tuple[str, ...],
    services: int | None,
    pods: int | None,
    calls_per_request: float | None,
    connections: int | None,
    request_bytes: int | None,
    response_bytes: int | None,
    churn_per_s: float | None,
    mtls: bool | None,
    workers: int | None,
    sidecar_scoping: bool | None,
    view_services: int | None,
    istiod_replicas: int | None,
    nodes: int | None,
    node_cores: int | None,
    waypoints: int | None,
    samples: int,
    simulate: str,
    model_files: tuple[str, ...],
    as_json: bool,
) -> None:
    """Size a mesh: proxy cores and memory, control plane, added latency per hop.

    Closed forms from the cost models (models/*.yaml) where they hold, a short simulation near
    saturation; every figure with its model band [low, high] over the models' ranges.
    """
    from meshsim.studies.sizing import Group, SizingInput, groups_from_scenario
    from meshsim.studies.sizing import size as size_mesh

    f = _read_file(input_path) if input_path else SizeFile()
    _check_options({
        "rps": rps, "services": services, "pods": pods, "calls_per_request": calls_per_request,
        "connections": connections, "request_bytes": request_bytes,
        "response_bytes": response_bytes, "churn_per_s": churn_per_s, "workers": workers,
        "view_services": view_services, "istiod_replicas": istiod_replicas, "nodes": nodes,
        "node_cores": node_cores, "waypoints": waypoints,
    })  # fmt: skip
    groups: list[Group] = []
    if scenario_path is not None:
        from meshsim.scenario import load_scenario

        sc = load_scenario(scenario_path)
        groups = groups_from_scenario(sc)
        services = services or len(sc.services)
    for text in workloads:
        name, w_rps, w_pods, w_calls = _workload_option(text)
        groups.append(Group(name, w_rps, w_pods or 1, w_calls or 0.0))
    for w in f.workloads or []:
        groups.append(Group(w.name, w.rps, w.pods, w.calls))
    total = _pick(rps, f.rps, None)
    if total is not None:
        k = _pick(calls_per_request, f.calls_per_request, 1.0)
        n_pods = _pick(pods, f.pods, None)
        if n_pods is None:
            raise InputError([Problem("--pods", "--rps needs --pods (the meshed pods)")])
        # every request enters one pod and causes k calls into others: (1 + k) R arrive at the
        # pods, k R leave them
        groups.append(Group("all", total * (1 + k), n_pods, k / (1 + k)))
    if not groups:
        raise InputError([Problem("", "give --rps with --pods, --workload, --input or "
                                  "--scenario")])  # fmt: skip
    n_services = _pick(services, f.services, None) or len(groups)
    inputs = SizingInput(
        groups=tuple(groups), services=n_services,
        meshes=tuple(meshes or f.meshes or ("istio", "linkerd")),
        connections=_pick(connections, f.connections, 8),
        request_bytes=_pick(request_bytes, f.request_bytes, 1024),
        response_bytes=_pick(response_bytes, f.response_bytes, 1024),
        churn_per_s=_pick(churn_per_s, f.churn_per_s, 0.0),
        mtls=_pick(mtls, f.mtls, True),
        workers={m: w for m in MESHES if (w := _pick(workers, f.workers, None)) is not None},
        sidecar_scoping=bool(_pick(sidecar_scoping, f.sidecar_scoping, False)),
        view_services=_pick(view_services, f.view_services, None),
        istiod_replicas=_pick(istiod_replicas, f.istiod_replicas, 1),
        nodes=_pick(nodes, f.nodes, None), node_cores=_pick(node_cores, f.node_cores, 8),
        waypoints=_pick(waypoints, f.waypoints, 0), samples=samples, simulate=simulate,
        models=_models_option(model_files),
    )  # fmt: skip
    for m in inputs.meshes:
        if m not in MESHES:
            raise InputError([Problem("meshes", f"expected one of {', '.join(MESHES)}, got {m!r}")])
    result = size_mesh(inputs)
    target = str(scenario_path) if scenario_path else "scenario.yaml"
    command = f"meshsim run {target} " + " ".join(f"--mesh {m}" for m in inputs.meshes)
    if as_json:
        from meshsim.studies.sizing import to_dict

        click.echo(json.dumps({"meshes": to_dict(result), "simulate": command}, indent=2))
        return
    from meshsim.studies.sizing_report import render

    click.echo(render(result, inputs, command, from_scenario=scenario_path is not None))
