"""``meshsim import``: a scenario from a cluster's manifests, traces and mesh metrics.

One module per source: :mod:`.documents` reads the YAML, :mod:`.kubernetes`, :mod:`.istio`,
:mod:`.gatewayapi` and :mod:`.linkerd` map the resources, :mod:`.traces` and :mod:`.metrics`
give the call graph, rates and service times, :mod:`.assemble` fills in what none of them say
(as stated assumptions), and :mod:`.writer` writes the file with a comment on every generated
value. The result is checked by the scenario loader before it is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from meshsim.errors import Problem, ScenarioError
from meshsim.scenario.importers import gatewayapi, istio, kubernetes, linkerd
from meshsim.scenario.importers.assemble import assemble
from meshsim.scenario.importers.documents import ManifestError, read_manifests
from meshsim.scenario.importers.draft import Draft, scenario_name
from meshsim.scenario.importers.writer import dump
from meshsim.scenario.loader import loads
from meshsim.scenario.model import Scenario

__all__ = ["Imported", "ManifestError", "import_cluster"]

KINDS = kubernetes.KINDS | istio.KINDS | gatewayapi.KINDS | linkerd.KINDS


@dataclass(frozen=True)
class Imported:
    text: str
    """The scenario file, with its provenance comments."""
    scenario: Scenario
    warnings: list[str]
    skipped: list[str]


def import_cluster(
    paths: Sequence[str | Path],
    *,
    traces: Sequence[str | Path] = (),
    metrics: Sequence[str | Path] = (),
    meshes: Sequence[str] | None = None,
    name: str | None = None,
    command: str = "meshsim import",
) -> Imported:
    """Import manifests (files or directories), and optionally traces and metrics.

    Raises :class:`ManifestError` (file, line, what was expected) for input that cannot be
    read, and when nothing imported gives a service.
    """
    manifests = read_manifests(paths, KINDS)
    draft = Draft(skipped=manifests.skipped)
    kubernetes.import_kubernetes(manifests, draft)
    istio.import_istio(manifests, draft)
    gatewayapi.import_routes(manifests, draft)
    linkerd.import_linkerd(manifests, draft)
    if traces or metrics:
        from meshsim.scenario.importers.observed import import_observed

        import_observed(draft, traces=list(traces), metrics=list(metrics))
    if not draft.services:
        where = ", ".join(str(p) for p in paths)
        raise ManifestError(
            [Problem("", "no Service that selects a Deployment or StatefulSet was found")], where
        )
    first = str(paths[0]) if paths else "-"
    title = scenario_name(name or (Path(first).stem if first != "-" else "imported"))
    tree = assemble(draft, name=title, meshes=list(meshes) if meshes else None)
    header = [f"Imported by: {command}", ""]
    if draft.warnings:
        header.append("Warnings (what the scenario format could not express, or assumed):")
        header += [f"- {w}" for w in draft.warnings]
        header.append("")
    if draft.skipped:
        header.append(
            f"Skipped ({len(draft.skipped)} objects of kinds the importer does not read):"
        )
        header += [f"- {s}" for s in draft.skipped[:200]]
        if len(draft.skipped) > 200:
            header.append(f"- ... and {len(draft.skipped) - 200} more")
        header.append("")
    text = dump(tree, header)
    try:
        scenario = loads(text, "<imported scenario>")
    except ScenarioError as exc:
        raise ManifestError(
            [
                Problem(
                    "",
                    "the imported scenario does not validate; this is a gap in the "
                    f"importer, please report it with the input: {exc}",
                )
            ],
            "<imported scenario>",
        ) from None
    return Imported(text, scenario, list(draft.warnings), list(draft.skipped))
