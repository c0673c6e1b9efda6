"""What results files record about a run."""

import json

import pyro
import torch

import varmem
from varmem.provenance import environment, torch_threads, versions


def test_versions_name_the_installed_packages():
    v = versions()
    assert v["torch"] == torch.__version__ and v["pyro"] == pyro.__version__ and v["varmem"] == varmem.__version__


def test_environment_is_json_and_describes_the_device():
    info = environment("cpu")
    json.dumps(info)  # raises unless the record is JSON as it is
    assert info["device"] == "cpu" and info["torch_threads"] == torch.get_num_threads()
    assert set(info) >= {"versions", "device_name", "platform", "cpu_count"}


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None leaves torch's setting alone
        assert torch.get_num_threads() == before
