"""The notebooks run headless, top to bottom, with small parameters (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

SMALL = {
    # Two loads and one service count for the plan, two parameter sets for the bands, the
    # imported Bookinfo simulated for 2 s under two meshes.
    "capacity-planning.ipynb": (
        "RATES_RPS = [1000, 100000]\nSERVICE_COUNTS = [20]\nSAMPLES = 2\n"
        "SIM_MESHES = ['istio', 'linkerd']\nSIM_DURATION_S = 2.0\nSIM_WARMUP_S = 0.5\n"
    ),
    "control-plane-scaling.ipynb": (
        "SIDECARS = [100, 1000]\nSERVICE_COUNTS_CLOSED_FORM = [1, 50]\nSIM_SERVICES = [4, 8]\n"
        "SIM_REPLICAS = 2\nCHURN_PCT_PER_MIN = [10.0, 50.0]\nSIM_DURATION_S = 8.0\n"
        "SIM_WARMUP_S = 1.0\n"
        "SERVICES = 3\nREPLICAS = [1, 2]\nRATE_RPS = 40.0\nDURATION_S = 3.0\nWARMUP_S = 1.0\n"
    ),
    # The committed lab model and its fit record, three of its held-out points kept (MODEL
    # set by the test: conftest's lab_model_few_held_out) and simulated for 0.6 s each (the
    # lab scenario's 0.5 s warm-up, then 0.1 s measured: enough for every figure to have its
    # points). No measurement (RUN_QUICK_CALIBRATION stays False).
    "calibration.ipynb": "PREDICT_DURATION_S = 0.6\nRUN_QUICK_CALIBRATION = False\n",
}
FIGURES = {"capacity-planning.ipynb": 4, "control-plane-scaling.ipynb": 7, "calibration.ipynb": 5}
LIBRARY = {
    "capacity-planning.ipynb": "from meshsim.studies import capacity, sizing, sizing_plan",
    "control-plane-scaling.ipynb": "from meshsim.studies import capacity, controlplane",
    "calibration.ipynb": "from meshsim.studies import calibrated_model",
}


def shrink(nb: nbformat.NotebookNode, overrides: str) -> None:
    """Insert an override cell after the cell tagged `parameters` (as papermill does)."""
    index = next(
        i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(overrides))


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    overrides = SMALL[name]
    if name == "calibration.ipynb":
        model = request.getfixturevalue("lab_model_few_held_out")
        overrides += f"MODEL = Path({str(model)!r})\n"
    shrink(nb, overrides)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == FIGURES[name], "the notebook's figures were displayed"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_committed_with_its_outputs(name: str) -> None:
    """The committed notebooks can be read without running them: every code cell was executed,
    none failed, every figure is there, and the figures stay small."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert [o for o in outputs if o.get("output_type") == "error"] == []
    images = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == FIGURES[name]
    assert max(len(i) for i in images) < 200_000  # base64 characters: a modest DPI


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_thin(name: str) -> None:
    """Cells import the library and call it: no function or class definitions."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "def " not in code
    assert "class " not in code
    assert LIBRARY[name] in code
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
