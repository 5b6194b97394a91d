"""Measurements -> fitted cost models; validation of the simulator's predictions.

- :mod:`.lab`: the loopback lab (load generator, client sidecar, server sidecar, echo), each
  component pinned (:mod:`.node` runs one) and in a CPU cgroup of its own (:mod:`.cgroup`);
  :mod:`.point_record`: what a point's load gave, as the calibration records it.
- :mod:`.fit`: distributions and linear costs with bootstrap CIs (scipy.stats).
- :mod:`.calibration`: runs the lab and writes a model file (+ its fit record);
  :mod:`.model_fit`: the fit itself, lab measurements -> a model document, step by step.
- :mod:`.fortio_import`: fortio JSON runs from a real cluster -> a per-hop model.
- :mod:`.validate`: the simulator on the lab topology versus the held-out measurements.
- :mod:`.report`: ``reports/validation/`` (what ``make validate`` runs).
"""
