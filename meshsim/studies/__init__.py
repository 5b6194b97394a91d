"""Studies for the notebooks: code that runs simulations (or reads a calibration) and returns
frames and figures.

- :mod:`.capacity`: a fan-out application per mesh over loads and service counts.
- :mod:`.controlplane`: control-plane convergence and memory against published anchors.
- :mod:`.calibrated_model`: a calibrated proxy model, its fit record and its held-out
  predictions (``notebooks/calibration.ipynb``).

:mod:`meshsim.report` only renders saved runs; what simulates lives here. pandas and matplotlib
are imported here and nowhere in the simulator's core.
"""
