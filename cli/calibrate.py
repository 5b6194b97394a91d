"""``meshsim calibrate``: measure the real proxy in a loopback lab (or read fortio runs) and fit
a cost model."""

from __future__ import annotations

from pathlib import Path

import click

from .common import err_console, user_errors


@click.command("calibrate")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file to write (default models/calibrated/lab.yaml, or "
                   "models/calibrated/fortio.yaml with --from-fortio).")
@click.option("--quick", is_flag=True, help="A small grid and short runs (CI smoke test, < 1 min).")
@click.option("--from-fortio", "fortio", type=click.Path(exists=True, path_type=Path),
              multiple=True, help="fortio JSON results (files or a manifest YAML); repeatable.")
@click.option("--kind", type=click.Choice(["envoy-sidecar", "linkerd-proxy"]),
              default="envoy-sidecar", show_default=True,
              help="With --from-fortio: which proxy the runs measured.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@user_errors
def calibrate(out: Path | None, quick: bool, fortio: tuple[Path, ...], kind: str,
              seed: int) -> None:
    """Fit a cost model: from the loopback lab, or with --from-fortio from your own cluster."""
    console = err_console()
    if fortio:
        from meshsim.calibrate.fortio_import import calibrate_from_fortio

        target = out or Path("models/calibrated/fortio.yaml")
        doc = calibrate_from_fortio(list(fortio), target, kind=kind, seed=seed)
        est = doc["fit"]["estimates"]
        console.print(f"wrote {target}: per-hop CPU {est['service_us']['value']:.1f} us, "
                      f"hop latency {est['hop_latency_us']['value']:.1f} us "
                      f"({len(doc['fit']['pairs'])} load levels)", highlight=False)
        return
    from meshsim.calibrate.calibration import calibrate_lab

    target = out or Path("models/calibrated/lab.yaml")
    doc = calibrate_lab(target, quick=quick, log=lambda s: console.print(s, highlight=False,
                                                                          markup=False),
                        seed=seed)
    st = doc["fit"]["service_time"]
    console.print(f"wrote {target} (fit record beside it): service time {st['dist']}, mean "
                  f"{st['mean']['value']:.1f} us (95% CI {st['mean']['ci95'][0]:.1f}-"
                  f"{st['mean']['ci95'][1]:.1f}), cv {st['cv']['value']:.2f}; "
                  f"{doc['fit']['held_out_count']} held-out points", highlight=False)
