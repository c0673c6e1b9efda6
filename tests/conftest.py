"""Global test state, owned in one place (as Pyro's own conftest does).

* every test starts from seed 0 (torch, numpy, random via ``pyro.set_rng_seed``) and an empty
  Pyro param store, with Pyro's argument validation on;
* torch uses ``VARMEM_TEST_THREADS`` intra-op threads (default 1): the suite is made of many tiny
  tensor ops, for which a thread pool costs more than it saves (and far more on a busy machine);
* the default dtype is float64 unless ``VARMEM_DTYPE`` says otherwise, and the default device is
  ``VARMEM_DEVICE`` (``cpu`` by default), so ``VARMEM_DEVICE=cuda pytest`` runs the whole suite
  on a GPU unchanged.  Library code never relies on these defaults: it takes device and dtype
  from its inputs and modules; only tests create tensors on the default device.
"""

from __future__ import annotations

import os

import pyro
import pytest
import torch

DEVICE = torch.device(os.environ.get("VARMEM_DEVICE", "cpu"))
DTYPE = getattr(torch, os.environ.get("VARMEM_DTYPE", "float64"))

torch.set_default_dtype(DTYPE)
torch.set_num_threads(int(os.environ.get("VARMEM_TEST_THREADS", "1")))
if DEVICE.type != "cpu":  # a default-device mode wraps every torch call: only pay for it off the CPU
    torch.set_default_device(DEVICE)


def pytest_runtest_setup(item: pytest.Item) -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def dtype() -> torch.dtype:
    return DTYPE


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded generator on the test device, for the corruptions and data helpers."""
    return torch.Generator(device=DEVICE).manual_seed(0)

