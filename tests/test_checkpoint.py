"""save / load: round trips, and clear errors for missing, corrupt or foreign files.
Nothing is unpickled: a pickle that would run code is refused without running it."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import varmem
from varmem import CheckpointError


@pytest.fixture
def memory():
    m = varmem.KernelDensityMemory(4, bandwidth=0.3, noise_scale=0.1, chunk_size=64)
    return m.write(torch.randn(20, 4))


def test_round_trip_restores_class_config_items_and_retrievals(memory, tmp_path):
    path = varmem.save(memory, tmp_path / "m.safetensors")
    loaded = varmem.load(path)
    assert type(loaded) is varmem.KernelDensityMemory
    assert loaded.config() == memory.config()
    assert torch.equal(loaded.items, memory.items) and loaded.dtype == memory.dtype
    cue = torch.randn(3, 4)
    torch.testing.assert_close(loaded.retrieve(cue).pattern, memory.retrieve(cue).pattern)


def test_round_trip_of_an_empty_float32_memory(tmp_path):
    m = varmem.KernelDensityMemory(2, bandwidth=1.0, noise_scale=1.0, dtype=torch.float32)
    loaded = varmem.load(varmem.save(m, tmp_path / "e.safetensors"), device="cpu")
    assert len(loaded) == 0 and loaded.dtype == torch.float32 and loaded.device.type == "cpu"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        varmem.load(tmp_path / "absent.safetensors")


def test_truncated_and_random_files_raise_checkpoint_error(memory, tmp_path):
    path = varmem.save(memory, tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.safetensors").write_bytes(bytes(range(256)) * 10)
    for name in ("cut.safetensors", "noise.safetensors"):
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            varmem.load(tmp_path / name)


def test_a_pickle_is_refused_without_being_run(tmp_path):
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (flag.write_text, ("pwned",))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        varmem.load(path)
    torch.save({"items": torch.zeros(1)}, tmp_path / "torch.pt")
    with pytest.raises(CheckpointError):
        varmem.load(tmp_path / "torch.pt")
    assert not flag.exists()


def test_foreign_and_inconsistent_safetensors_files(tmp_path):
    save_file({"items": torch.zeros(2, 2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a varmem checkpoint"):
        varmem.load(tmp_path / "foreign.safetensors")

    def header(**over):
        config = {"dim": 2, "bandwidth": 1.0, "noise_scale": 1.0, "chunk_size": None}
        meta = {
            "format": "varmem-checkpoint",
            "format_version": "1",
            "class": "KernelDensityMemory",
            "config": json.dumps(config),
            "dtype": "float64",
            "varmem_version": "0",
        }
        meta.update(over)
        return meta

    ok = {"items": torch.zeros(1, 2, dtype=torch.float64)}
    cases = {
        "version": (ok, header(format_version="99"), "format"),
        "class": (ok, header(**{"class": "Nope"}), "invalid varmem header"),
        "config": (ok, header(config="{oops"), "invalid varmem header"),
        "badcfg": (ok, header(config='{"dim": 2, "bandwidth": -1, "noise_scale": 1}'), "cannot rebuild"),
        "names": ({"weights": torch.zeros(1, 2, dtype=torch.float64)}, header(), "missing"),
        "dtype": ({"items": torch.zeros(1, 2, dtype=torch.float32)}, header(), "dtype"),
        "shape": ({"items": torch.zeros(1, 3, dtype=torch.float64)}, header(), "shape"),
        "nan": ({"items": torch.full((1, 2), float("nan"), dtype=torch.float64)}, header(), "NaN"),
    }
    for name, (tensors, meta, words) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        with pytest.raises(CheckpointError, match=words):
            varmem.load(path)


def test_save_refuses_non_memories(tmp_path):
    with pytest.raises(TypeError, match="Memory"):
        varmem.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
