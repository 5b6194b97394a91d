"""``meshsim export-spans``: a ``--records`` run's requests as OTLP JSON traces."""

from __future__ import annotations

from pathlib import Path

import click

from meshsim.errors import MeshsimError
from meshsim.results.otlp import otlp_json, rows_from_parquet, write_otlp

from .common import user_errors


@click.command("export-spans")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the OTLP/JSON file (ExportTraceServiceRequest).",
)
@click.option("--mesh", default=None, help="Only this mesh's traces (default: every mesh).")
@click.option(
    "--max-traces",
    type=click.IntRange(min=1),
    default=None,
    help="At most this many traces (requests), in request order.",
)
@click.option(
    "--epoch-ns",
    type=click.IntRange(min=0),
    default=0,
    help="Unix time in ns that simulated time 0 stands for (default 0).",
)
@user_errors
def export_spans(
    run_dir: Path, out: Path, mesh: str | None, max_traces: int | None, epoch_ns: int
) -> None:
    """Export the simulated spans of RUN_DIR (written by ``meshsim run --records``) as OTLP
    JSON, to open in Jaeger, Tempo or an OpenTelemetry collector."""
    records = run_dir / "records.parquet"
    if not records.is_file():
        raise MeshsimError(
            f"{records}: no per-request records; run the scenario with "
            "`meshsim run --records --out DIR` first"
        )
    try:
        rows = list(rows_from_parquet(records, mesh))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise MeshsimError(f"{records}: cannot read the records ({exc})") from None
    if not rows:
        raise MeshsimError(f"{records}: no records" + (f" for mesh {mesh!r}" if mesh else ""))
    document = otlp_json(rows, epoch_ns=epoch_ns, max_traces=max_traces)
    try:
        write_otlp(document, out)
    except OSError as exc:
        raise MeshsimError(f"{out}: cannot write ({exc.strerror or exc})") from None
    spans = sum(len(s["spans"]) for r in document["resourceSpans"] for s in r["scopeSpans"])
    click.echo(f"{spans} spans in {len(document['resourceSpans'])} services written to {out}")
