"""Every notebook in ``notebooks/`` executes from top to bottom without an error.

Each notebook runs with nbclient in a fresh kernel started from *this* interpreter (a kernel spec
written into a temporary folder with ``ipykernel.kernelspec.install``), so the test does not depend
on a ``python3`` kernel being registered on the machine, and the kernel sees the same installed
``varmem``.  The working directory is a temporary folder, so a notebook cannot rely on (or leave
files in) the repository.  A failing cell fails the test with the cell's source and traceback.
"""

from __future__ import annotations

from pathlib import Path

import ipykernel.kernelspec as ipykernel_spec
import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
TIMEOUT = 300  # seconds per cell: generous for a busy machine; the notebooks take seconds


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS if p.name == "latent_memory.ipynb"] == ["latent_memory.ipynb"]


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    """A kernel spec ``python3`` that launches this interpreter, in a temporary prefix."""
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path_factory.mktemp("kernel")
    ipykernel_spec.install(kernel_name="python3", prefix=str(prefix))
    kernels = prefix / "share" / "jupyter" / "kernels"
    assert (kernels / "python3" / "kernel.json").is_file()
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_spec_manager, tmp_path):
    from jupyter_client.manager import KernelManager
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(notebook, km=km, timeout=TIMEOUT, resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # the kernel's working directory is resources['metadata']['path']
    except CellExecutionError as error:  # the message holds the failing cell and its traceback
        pytest.fail(f"{path.name} failed:\n{error}", pytrace=False)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells and all(c.execution_count for c in code_cells)  # every cell ran
    assert not [o for c in code_cells for o in c.outputs if o.output_type == "error"]
