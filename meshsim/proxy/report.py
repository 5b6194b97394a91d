"""A load result as a rich table (the CLI prints it; notebooks can display it)."""

from __future__ import annotations

from rich.table import Table

from meshsim.proxy.loadgen import LoadResult

_ROWS = ((50.0, "p50"), (90.0, "p90"), (99.0, "p99"), (99.9, "p99.9"))


def load_table(result: LoadResult) -> Table:
    spec = result.spec
    target = "max" if spec.rps <= 0 else f"{spec.rps:g}"
    codes = ", ".join(
        f"{c if c >= 0 else 'no answer'}: {n}" for c, n in sorted(result.ret_codes.items())
    )
    table = Table(
        title=f"{spec.url}  {target} rps requested, {result.actual_rps:.1f} achieved, "
        f"{spec.connections} connections, {'Poisson' if spec.poisson else 'constant'} arrivals",
        caption=f"{result.completed} requests  |  {codes or 'no answers'}  |  "
        "corrected = from intended send time (no coordinated omission)",
    )
    table.add_column("latency (ms)")
    table.add_column("corrected", justify="right")
    table.add_column("uncorrected", justify="right")
    for name, hc, hu in (
        ("mean", result.corrected.get_mean_value(), result.uncorrected.get_mean_value()),
        *(
            (
                label,
                result.corrected.get_value_at_percentile(q),
                result.uncorrected.get_value_at_percentile(q),
            )
            for q, label in _ROWS
        ),
        ("max", result.corrected.get_max_value(), result.uncorrected.get_max_value()),
    ):
        table.add_row(name, f"{hc / 1000:.3f}", f"{hu / 1000:.3f}")
    return table
