"""The example notebooks run top to bottom (on the tiny world) and are committed clean."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat (shortrec[dev])")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient (shortrec[dev])")
pytest.importorskip("ipykernel", reason="notebook tests need ipykernel (shortrec[dev])")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_examples_are_there():
    names = [p.name for p in NOTEBOOKS]
    assert "01_quickstart.ipynb" in names and len(names) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.id} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_on_tiny_data(path, tmp_path, monkeypatch):
    """Executed in a fresh kernel in an empty folder: any cell that raises fails the test."""
    monkeypatch.setenv("SHORTREC_EXAMPLES_SCALE", "tiny")
    # The kernel imports this checkout's shortrec, as the tests do.
    path_entries = [str(SRC), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path_entries)))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    images = [
        output
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name} drew no inline figure"
