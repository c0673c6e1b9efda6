"""save / load: round trips, and a catalogue of bad files that must each be refused cleanly.

Every bad file is built programmatically from a good one: bytes flipped or cut, tensors swapped for
ones of another shape / dtype / value with the metadata and checksum recomputed (so only the check
under test can catch them), headers garbled.  Each refusal must be a :class:`CheckpointError` (or
``FileNotFoundError``) naming the file and the problem, never a raw torch / safetensors error, and
a refused state must leave a memory exactly as it was.  Nothing is unpickled: a pickle that would
run code is refused without running it.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import pyro
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import varmem
from varmem import CheckpointError
from varmem.checkpoint import FORMAT_VERSION, checksum

# --- memories and modules to save -------------------------------------------------------------
CUE = torch.Generator().manual_seed(7)


def _kdm() -> varmem.Memory:
    return varmem.KernelDensityMemory(4, bandwidth=0.3, noise_scale=0.1, chunk_size=64).write(torch.randn(20, 4))


def _hopfield() -> varmem.Memory:
    return varmem.ModernHopfield(4, beta=4.0).write(torch.randn(10, 4))


def _bayes_pcn() -> varmem.Memory:
    m = varmem.BayesPCN(4, n_layers=2, h_dim=6, sigma_obs=0.1, n_particles=2, T_infer=20)
    return m.write(torch.randn(3, 4))


def _random_features() -> varmem.Memory:
    return varmem.RandomFeatureMemory(4, beta=2.0, num_features=32).write(torch.randn(6, 4))


def _latent() -> varmem.Memory:
    return varmem.LatentMemory(4, 2, hidden=(8,), bandwidth=0.3).write(torch.rand(5, 4))


def _vae() -> torch.nn.Module:
    return varmem.VAE(4, code_dim=2, hidden=(8,))


FACTORIES: dict[str, Callable[[], torch.nn.Module]] = {
    "kdm": _kdm, "hopfield": _hopfield, "bayes_pcn": _bayes_pcn, "random_features": _random_features,
    "latent": _latent, "vae": _vae,
}
MEMORIES = [k for k in FACTORIES if k != "vae"]


def _read(obj: torch.nn.Module, cue: torch.Tensor) -> torch.Tensor:
    """A deterministic read of a memory (a reconstruction for the VAE)."""
    if isinstance(obj, varmem.VAE):
        return obj.reconstruct(cue).detach()
    options: dict[str, Any] = {}
    if isinstance(obj, varmem.LatentMemory):
        options = {"max_steps": 5}
    elif isinstance(obj, varmem.BayesPCN):
        options = {"max_steps": 10, "seed": 0}  # its reads start from random activities
    return obj.retrieve(cue, **options).pattern.detach()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One intact checkpoint of each kind (written once for the module)."""
    folder = tmp_path_factory.mktemp("good")
    pyro.set_rng_seed(0)
    return {name: varmem.save(make(), folder / f"{name}.safetensors") for name, make in FACTORIES.items()}


# --- helpers that build bad files ---------------------------------------------------------------
def read_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def rewrite(
    src: Path, dst: Path, *, tensors: dict[str, torch.Tensor | None] | None = None,
    meta: dict[str, str | None] | None = None, recompute: bool = True,
) -> Path:
    """``src`` with some tensors / metadata replaced (``None`` drops one) and, unless ``recompute``
    is False, the checksum recomputed, so that only the checks behind it can catch the change."""
    metadata, content = read_file(src)
    for store, over in ((content, tensors or {}), (metadata, meta or {})):
        for key, value in over.items():
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
    if recompute:
        metadata["checksum"] = checksum(metadata, content)
    save_file(content, str(dst), metadata=metadata)
    return dst


def data_start(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


def flip(src: Path, dst: Path, where: Callable[[bytes], int], bit: int = 0x10) -> Path:
    data = bytearray(src.read_bytes())
    data[where(bytes(data))] ^= bit
    dst.write_bytes(bytes(data))
    return dst


def raw(src: Path, dst: Path, edit: Callable[[bytes], bytes]) -> Path:
    dst.write_bytes(edit(src.read_bytes()))
    return dst


def tensor(src: Path, name: str, change: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: change(read_file(src)[1][name])}


def with_nan(t: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


def _pickle_bytes(flag: Path) -> bytes:
    class Evil:
        def __reduce__(self) -> Any:
            return (flag.write_text, ("pwned",))

    return pickle.dumps(Evil())


def _same_length_garbage(data: bytes) -> bytes:
    n = data_start(data)
    return data[:8] + b"{" + b"\x00garbage" * ((n - 9) // 8) + b"}" * ((n - 9) % 8) + data[n:]


def _old_format(src: Path, dst: Path) -> Path:
    """A file as format "1" wrote it: no checksum entry."""
    return rewrite(src, dst, meta={"format_version": "1", "checksum": None}, recompute=False)


Case = tuple[str, Callable[[Path, Path], Path], str]
# (kind of good file, how to make the bad file from it, what the error must say)
CASES: dict[str, Case] = {
    # -- corrupted bytes: the checksum or safetensors' own framing must catch them
    "flipped byte, first data byte": ("kdm", lambda s, d: flip(s, d, data_start), "is corrupt"),
    "flipped byte, middle of data": ("kdm", lambda s, d: flip(s, d, lambda b: (data_start(b) + len(b)) // 2),
                                     "is corrupt"),
    "flipped byte, last byte": ("kdm", lambda s, d: flip(s, d, lambda b: len(b) - 1), "is corrupt"),
    "flipped sign bit, bayes_pcn": ("bayes_pcn", lambda s, d: flip(s, d, lambda b: len(b) - 1, 0x80),
                                    "is corrupt"),
    "flipped byte, vae weights": ("vae", lambda s, d: flip(s, d, lambda b: data_start(b) + 3), "is corrupt"),
    "header edited, still valid": ("kdm", lambda s, d: raw(s, d, lambda b: b.replace(b"0.3", b"0.7", 1)),
                                   "is corrupt"),
    "header bytes garbage": ("kdm", lambda s, d: raw(s, d, _same_length_garbage), "not a readable checkpoint"),
    "header length too large": ("kdm", lambda s, d: raw(s, d, lambda b: (2**40).to_bytes(8, "little") + b[8:]),
                                "not a readable checkpoint"),
    "truncated to half": ("kdm", lambda s, d: raw(s, d, lambda b: b[: len(b) // 2]), "not a readable checkpoint"),
    "truncated by one byte": ("kdm", lambda s, d: raw(s, d, lambda b: b[:-1]), "not a readable checkpoint"),
    "header only": ("kdm", lambda s, d: raw(s, d, lambda b: b[: data_start(b)]), "not a readable checkpoint"),
    "length prefix only": ("kdm", lambda s, d: raw(s, d, lambda b: b[:8]), "not a readable checkpoint"),
    "empty file": ("kdm", lambda s, d: raw(s, d, lambda b: b""), "empty file"),
    "random bytes": ("kdm", lambda s, d: raw(s, d, lambda b: bytes(range(256)) * 10), "not a readable checkpoint"),
    "a directory": ("kdm", lambda s, d: (d.mkdir(), d)[1], "is a directory"),
    "a path under a file": ("kdm", lambda s, d: raw(s, d, lambda b: b) / "inner.safetensors", "cannot be read"),
    "checksum of other content": ("kdm", lambda s, d: rewrite(s, d, meta={"checksum": "sha256:" + "0" * 64},
                                                              recompute=False), "is corrupt"),
    "checksum missing": ("kdm", lambda s, d: rewrite(s, d, meta={"checksum": None}, recompute=False),
                         "no valid checksum"),
    "checksum of another algorithm": ("kdm", lambda s, d: rewrite(s, d, meta={"checksum": "md5:00"}, recompute=False),
                                      "no valid checksum"),
    # -- headers
    "foreign safetensors file": ("kdm", lambda s, d: (save_file({"items": torch.zeros(2, 2)}, str(d)), d)[1],
                                 "not a varmem checkpoint"),
    "format 1 (no checksum)": ("kdm", _old_format, "format '1'.*save it again"),
    "format 99": ("kdm", lambda s, d: rewrite(s, d, meta={"format_version": "99"}), "format '99'"),
    "unknown class": ("kdm", lambda s, d: rewrite(s, d, meta={"class": "Nope"}), "unknown memory class 'Nope'"),
    "class of another memory": ("kdm", lambda s, d: rewrite(s, d, meta={"class": "BayesPCN"}), "cannot rebuild"),
    "memory config under the VAE class": ("kdm", lambda s, d: rewrite(s, d, meta={"class": "VAE"}), "cannot rebuild"),
    "class entry missing": ("kdm", lambda s, d: rewrite(s, d, meta={"class": None}), "no 'class' entry"),
    "config JSON garbage": ("kdm", lambda s, d: rewrite(s, d, meta={"config": "{oops"}), "invalid varmem header"),
    "config is a JSON list": ("kdm", lambda s, d: rewrite(s, d, meta={"config": "[4, 0.3]"}), "JSON object"),
    "config no longer builds": ("kdm", lambda s, d: rewrite(s, d, meta={"config": json.dumps(
        {"dim": 4, "bandwidth": -1.0, "noise_scale": 0.1, "chunk_size": 64})}), "cannot rebuild.*bandwidth"),
    "config with an unknown argument": ("kdm", lambda s, d: rewrite(s, d, meta={"config": json.dumps(
        {"dim": 4, "bandwidth": 0.3, "noise_scale": 0.1, "chunk_size": 64, "colour": 1})}), "cannot rebuild"),
    "config naming the device": ("kdm", lambda s, d: rewrite(s, d, meta={"config": json.dumps(
        {"dim": 4, "bandwidth": 0.3, "noise_scale": 0.1, "device": "cpu"})}), "cannot rebuild"),
    "config of another dim": ("kdm", lambda s, d: rewrite(s, d, meta={"config": json.dumps(
        {"dim": 5, "bandwidth": 0.3, "noise_scale": 0.1, "chunk_size": 64})}), r"'items' has shape \[20, 4\]"),
    "dtype entry not a dtype": ("kdm", lambda s, d: rewrite(s, d, meta={"dtype": "load"}), "invalid varmem header"),
    "dtype entry an integer dtype": ("kdm", lambda s, d: rewrite(s, d, meta={"dtype": "int64"}),
                                     "invalid varmem header"),
    "dtype entry float32, tensors float64": ("kdm", lambda s, d: rewrite(s, d, meta={"dtype": "float32"}),
                                             "'items' has dtype torch.float64, expected torch.float32"),
    # -- tensors that do not fit the config (checksum recomputed: only these checks can catch them)
    "missing tensor": ("kdm", lambda s, d: rewrite(s, d, tensors={"items": None}), r"missing \['items'\]"),
    "extra tensor": ("kdm", lambda s, d: rewrite(s, d, tensors={"spare": torch.zeros(2)}),
                     r"unexpected \['spare'\]"),
    "wrong shape [20, 5]": ("kdm", lambda s, d: rewrite(s, d, tensors={"items": torch.zeros(20, 5)}),
                            r"'items' has shape \[20, 5\], expected \[\*, 4\]"),
    "wrong number of dims": ("kdm", lambda s, d: rewrite(s, d, tensors={"items": torch.zeros(80)}), "shape"),
    "wrong dtype float32": ("kdm", lambda s, d: rewrite(s, d, tensors=tensor(s, "items", lambda t: t.float())),
                            "'items' has dtype torch.float32"),
    "integer items": ("kdm", lambda s, d: rewrite(s, d, tensors=tensor(s, "items", lambda t: t.long())), "dtype"),
    "NaN item": ("kdm", lambda s, d: rewrite(s, d, tensors=tensor(s, "items", with_nan)), "'items' contains NaN"),
    "inf item": ("kdm", lambda s, d: rewrite(s, d, tensors=tensor(s, "items", lambda t: with_nan(t, float("inf")))),
                 "NaN or inf"),
    "hopfield NaN pattern": ("hopfield", lambda s, d: rewrite(s, d, tensors=tensor(s, "items", with_nan)), "NaN"),
    "bayes_pcn NaN log_w": ("bayes_pcn", lambda s, d: rewrite(s, d, tensors=tensor(s, "log_w", with_nan)),
                            "'log_w' contains NaN"),
    "bayes_pcn -inf log_w": ("bayes_pcn", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "log_w", lambda t: with_nan(t, -float("inf")))), "'log_w' contains NaN or inf"),
    "bayes_pcn unnormalised log_w": ("bayes_pcn", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "log_w", lambda t: t + 1.0)), "normalised log-weights"),
    "bayes_pcn covariance of the wrong size": ("bayes_pcn", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "U0", lambda t: t[:, :-1, :-1].clone())), "'U0' has shape"),
    "bayes_pcn float32 weights": ("bayes_pcn", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "R0", lambda t: t.float())), "'R0' has dtype"),
    "bayes_pcn history of another length": ("bayes_pcn", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "history_log_w", lambda t: t[:-1].clone())), "history"),
    "random features: feature_sum too short": ("random_features", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "feature_sum", lambda t: t[:-1].clone())), "'feature_sum' has shape"),
    "random features: float digests": ("random_features", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "digests", lambda t: t.double())), "'digests' has dtype"),
    "latent: codes of another code_dim": ("latent", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "codes", lambda t: torch.zeros(len(t), 3))), "'codes' has shape"),
    "latent: NaN encoder weight": ("latent", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "encoder.loc_head.weight", with_nan)), "contains NaN"),
    "vae: weight of another shape": ("vae", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "encoder.loc_head.weight", lambda t: torch.zeros(t.shape[0] + 1, t.shape[1]))),
        "'encoder.loc_head.weight' has shape"),
    "vae: NaN weight": ("vae", lambda s, d: rewrite(s, d, tensors=tensor(s, "decoder.stages.0.0.weight", with_nan)),
                        "'decoder.stages.0.0.weight' contains NaN"),
    "vae: float32 weight": ("vae", lambda s, d: rewrite(
        s, d, tensors=tensor(s, "encoder.loc_head.bias", lambda t: t.float())), "dtype"),
    "vae: missing weight": ("vae", lambda s, d: rewrite(s, d, tensors={"encoder.loc_head.bias": None}), "missing"),
    "vae: extra tensor": ("vae", lambda s, d: rewrite(s, d, tensors={"encoder.extra": torch.zeros(1)}),
                          "unexpected"),
    "vae: config that no longer builds": ("vae", lambda s, d: rewrite(s, d, meta={"config": json.dumps(
        {"data_shape": [4], "code_dim": 0, "hidden": [8]})}), "cannot rebuild.*code_dim"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint_is_refused_with_a_clear_error(case: str, good: dict[str, Path], tmp_path: Path) -> None:
    kind, make, words = CASES[case]
    path = make(good[kind], tmp_path / "bad.safetensors")
    store_before = set(pyro.get_param_store().keys())
    with pytest.raises(CheckpointError) as info:
        varmem.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert re.search(words, message), message
    assert set(pyro.get_param_store().keys()) == store_before  # nothing half-built left behind


def test_the_catalogue_is_large_and_every_flipped_bit_is_refused(good: dict[str, Path], tmp_path: Path) -> None:
    """Any single flipped bit anywhere in the file (framing, header, data) is refused."""
    assert len(CASES) >= 50
    data = good["kdm"].read_bytes()
    bad = tmp_path / "flip.safetensors"
    for i in range(0, len(data), 3):
        for bit in (0x01, 0x80):
            corrupt = bytearray(data)
            corrupt[i] ^= bit
            bad.write_bytes(bytes(corrupt))
            with pytest.raises(CheckpointError):
                varmem.load(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*absent"):
        varmem.load(tmp_path / "absent.safetensors")


def test_a_pickle_is_refused_without_being_run(tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(_pickle_bytes(flag))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        varmem.load(path)
    torch.save({"items": torch.zeros(1)}, tmp_path / "torch.pt")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        varmem.load(tmp_path / "torch.pt")
    assert not flag.exists()


def test_bad_device_argument_is_refused_before_reading(good: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="not a torch device"):
        varmem.load(good["kdm"], device="gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            varmem.load(good["kdm"], device="cuda")


# --- the negative control: intact files ---------------------------------------------------------
@pytest.mark.parametrize("kind", list(FACTORIES))
def test_intact_file_loads_and_reads_bit_identically(kind: str, tmp_path: Path) -> None:
    original = FACTORIES[kind]()
    path = varmem.save(original, tmp_path / f"{kind}.safetensors")
    metadata, _ = read_file(path)
    assert metadata["format_version"] == FORMAT_VERSION == "2" and metadata["checksum"].startswith("sha256:")
    loaded = varmem.load(path)
    assert type(loaded) is type(original) and loaded.config() == json.loads(json.dumps(original.config()))
    want, got = original.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name
    cue = torch.rand(3, 4, generator=CUE)
    assert torch.equal(_read(loaded, cue), _read(original, cue))


def test_round_trip_of_an_empty_float32_memory(tmp_path: Path) -> None:
    m = varmem.KernelDensityMemory(2, bandwidth=1.0, noise_scale=1.0, dtype=torch.float32)
    loaded = varmem.load(varmem.save(m, tmp_path / "e.safetensors"), device="cpu")
    assert len(loaded) == 0 and loaded.dtype == torch.float32 and loaded.device.type == "cpu"


def test_checksum_covers_metadata_and_every_tensor_field() -> None:
    meta = {"format": "varmem-checkpoint", "config": "{}"}
    base = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(True)}
    ref = checksum(meta, base)
    assert ref == checksum(dict(meta, checksum="ignored"), base) and ref.startswith("sha256:")
    variants = [
        ({**meta, "config": "{ }"}, base),
        (meta, {"a": base["a"].reshape(3, 2), "b": base["b"]}),  # same bytes, other shape
        (meta, {"c": base["a"], "b": base["b"]}),  # another name
        (meta, {"a": base["a"].view(torch.int64), "b": base["b"]}),  # same bytes, other dtype
        (meta, {"a": base["a"], "b": torch.tensor(False)}),
        (meta, {"a": base["a"]}),
    ]
    for m, t in variants:
        assert checksum(m, t) != ref


def test_save_refuses_non_memories_directories_and_states_load_would_refuse(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Memory"):
        varmem.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        varmem.save(_kdm(), tmp_path)
    vae = _vae()
    with torch.no_grad():
        vae.encoder.loc_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="'encoder.loc_head.weight' contains NaN"):
        varmem.save(vae, tmp_path / "nan.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_existing_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import varmem.checkpoint

    path = varmem.save(_kdm(), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def disk_full(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(varmem.checkpoint, "save_file", disk_full)
    with pytest.raises(OSError, match="cannot save to .*m.safetensors.*No space left"):
        varmem.save(_hopfield(), path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert type(varmem.load(path)) is varmem.KernelDensityMemory


# --- Memory.load_state_dict: a refused state leaves the memory exactly as it was -------------------
def _snapshot(memory: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in memory.state_dict().items()}


def _assert_unchanged(memory: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    now = memory.state_dict()
    assert set(now) == set(before)
    for name, value in before.items():
        assert now[name].dtype == value.dtype and torch.equal(now[name], value), name


def _bad_state_dicts(memory: varmem.Memory) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """State dicts that the checks of ``load_state_dict`` refuse before assigning anything."""
    good = _snapshot(memory)
    fresh = type(memory)(**memory.config()).state_dict()
    bad: list[tuple[str, dict[str, torch.Tensor]]] = [
        ("missing", {k: v for k, v in list(good.items())[1:]}),
        ("extra", {**good, "spare": torch.zeros(1)}),
    ]
    for name, value in good.items():
        if value.is_floating_point() and value.numel():
            bad.append((f"NaN {name}", {**good, name: with_nan(value)}))
            bad.append((f"float32 {name}", {**good, name: value.float()}))
        fixed = [i for i, f in enumerate(fresh[name].shape) if f]
        if fixed:
            shape = list(value.shape)
            shape[fixed[-1]] += 1
            bad.append((f"shape {name}", {**good, name: torch.zeros(shape, dtype=value.dtype)}))
        bad.append((f"ndim {name}", {**good, name: value.reshape(-1, *([1] * max(value.dim(), 1)))}))
    return bad


@pytest.mark.parametrize("kind", MEMORIES)
def test_refused_load_state_dict_changes_nothing(kind: str) -> None:
    memory = FACTORIES[kind]()
    before = _snapshot(memory)
    cue = torch.rand(2, 4, generator=CUE)
    read = _read(memory, cue)
    cases = _bad_state_dicts(memory)
    assert len(cases) >= 5
    for what, state in cases:
        try:
            memory.load_state_dict(state)
        except (ValueError, TypeError):
            pass
        else:
            pytest.fail(f"{kind}: a state with {what} was accepted")
        _assert_unchanged(memory, before)
    assert torch.equal(_read(memory, cue), read)


@pytest.mark.parametrize("kind", MEMORIES)
def test_state_refused_by_check_state_is_rolled_back(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state that passes the generic checks but not ``check_state`` is undone after assignment."""
    memory = FACTORIES[kind]()
    other = FACTORIES[kind]()
    other.write(torch.rand(2, 4))  # another valid state, with more items
    before = _snapshot(memory)

    def refuse(self: varmem.Memory) -> None:
        raise ValueError("refused for the test")

    monkeypatch.setattr(type(memory), "check_state", refuse)
    with pytest.raises(ValueError, match="refused for the test"):
        memory.load_state_dict(other.state_dict())
    _assert_unchanged(memory, before)
    monkeypatch.undo()
    memory.load_state_dict(other.state_dict())  # the same state loads once check_state accepts it
    _assert_unchanged(memory, _snapshot(other))


def test_bayes_pcn_state_with_unnormalised_weights_is_rolled_back() -> None:
    memory = _bayes_pcn()
    before = _snapshot(memory)
    state = {**before, "log_w": before["log_w"] + 0.5}
    with pytest.raises(ValueError, match="normalised"):
        memory.load_state_dict(state)
    _assert_unchanged(memory, before)


# --- the checksum against the format's written specification ---------------------------------------
def _spec_checksum(metadata: dict[str, str], tensors: dict[str, torch.Tensor], order: str = "<") -> str:
    """The module docstring's recipe, written out independently: sha256 over the sorted metadata
    entries (but ``checksum``), then per tensor in name order its name, dtype name without
    ``torch.``, JSON shape and raw bytes, every field prefixed by its 8-byte little-endian length."""
    import hashlib
    import struct

    stream = bytearray()
    for key in sorted(k for k in metadata if k != "checksum"):
        for text in (key, metadata[key]):
            stream += struct.pack(order + "Q", len(text.encode())) + text.encode()
    for name in sorted(tensors):
        t = tensors[name]
        raw_bytes = t.numpy().tobytes()  # C order, the machine's (little-endian) byte order
        dtype_name = {torch.float64: "float64", torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}
        for text in (name, dtype_name[t.dtype], json.dumps(list(t.shape))):
            stream += struct.pack(order + "Q", len(text.encode())) + text.encode()
        stream += struct.pack(order + "Q", len(raw_bytes)) + raw_bytes
    return "sha256:" + hashlib.sha256(bytes(stream)).hexdigest()


def test_checksum_is_the_documented_length_prefixed_sha256() -> None:
    meta = {"format": "varmem-checkpoint", "config": '{"dim": 3}', "checksum": "ignored"}
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.tensor([3, 1, 2]), "c": torch.tensor([True, False]),
               "e": torch.empty(0, 3, dtype=torch.float32)}
    assert checksum(meta, tensors) == _spec_checksum(meta, tensors)
    # negative control: the same recipe with big-endian length prefixes is another hash
    assert checksum(meta, tensors) != _spec_checksum(meta, tensors, order=">")


def test_saved_header_entries_are_exact(tmp_path: Path) -> None:
    memory = _kdm()
    path = varmem.save(memory, tmp_path / "m.safetensors")
    metadata, tensors = read_file(path)
    assert set(metadata) == {"format", "format_version", "class", "config", "dtype", "varmem_version", "checksum"}
    assert metadata["format"] == "varmem-checkpoint" and metadata["class"] == "KernelDensityMemory"
    assert metadata["dtype"] == "float64" and metadata["varmem_version"] == varmem.__version__
    assert json.loads(metadata["config"]) == memory.config()
    assert metadata["checksum"] == _spec_checksum(metadata, tensors)
    float32 = varmem.save(varmem.ModernHopfield(3, beta=1.0, dtype=torch.float32), tmp_path / "f.safetensors")
    assert read_file(float32)[0]["dtype"] == "float32"


# --- a registered non-memory module with a buffer, mixed dtypes and derived state --------------------
class Tally(torch.nn.Module):
    """A module outside varmem: an integer counter, a parameter of the module's dtype, a float64
    buffer of rows whose number may change, and a cached ``total`` derived from the rows."""

    def __init__(self, width: int, *, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.width = width
        self.register_buffer("count", torch.zeros((), dtype=torch.long, device=device))
        self.scale = torch.nn.Parameter(torch.ones(width, dtype=dtype or torch.float32, device=device))
        self.register_buffer("rows", torch.empty(0, width, dtype=torch.float64, device=device))
        self.total = 0.0

    def config(self) -> dict[str, Any]:
        return {"width": self.width}

    def check_state(self) -> None:  # accepts everything: only the generic checks of load can refuse
        pass

    def refresh_derived_state(self) -> None:
        self.total = float(self.rows.sum())

    def add(self, rows: torch.Tensor) -> "Tally":
        self.rows = torch.cat([self.rows, rows])
        self.count = self.count + len(rows)
        self.refresh_derived_state()
        return self


class Counts(torch.nn.Module):
    """A registered module with no floating tensor at all."""

    def __init__(self, *, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.register_buffer("n", torch.arange(3, device=device))

    def config(self) -> dict[str, Any]:
        return {}

    def check_state(self) -> None:
        pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """A private copy of the registry, so that test classes never leak into other tests."""
    import varmem.checkpoint

    classes = dict(varmem.checkpoint._MODULE_CLASSES)
    monkeypatch.setattr(varmem.checkpoint, "_MODULE_CLASSES", classes)
    return classes


def test_register_checkpoint_class_needs_both_hooks(registry: dict[str, type]) -> None:
    class NoConfig(torch.nn.Module):
        def check_state(self) -> None:
            pass

    class NoCheck(torch.nn.Module):
        def config(self) -> dict:
            return {}

    class ConfigNotCallable(torch.nn.Module):
        config = {"width": 3}

        def check_state(self) -> None:
            pass

    for cls, hook in ((NoConfig, "config"), (NoCheck, "check_state"), (ConfigNotCallable, "config")):
        with pytest.raises(TypeError, match=rf"^{cls.__name__} needs a {hook}\(\) method to be checkpointed$"):
            varmem.register_checkpoint_class(cls)
        assert cls.__name__ not in registry
    assert varmem.register_checkpoint_class(Tally) is Tally and registry["Tally"] is Tally


def test_registered_module_round_trip_restores_buffers_and_derived_state(registry: dict[str, type],
                                                                         tmp_path: Path) -> None:
    varmem.register_checkpoint_class(Tally)
    tally = Tally(3).add(torch.arange(12.0, dtype=torch.float64).reshape(4, 3))
    with torch.no_grad():
        tally.scale.mul_(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float32))
    path = varmem.save(tally, tmp_path / "t.safetensors")
    metadata, _ = read_file(path)
    assert metadata["class"] == "Tally" and metadata["dtype"] == "float32"  # the first floating tensor's
    loaded = varmem.load(path)
    assert type(loaded) is Tally
    assert torch.equal(loaded.rows, tally.rows) and loaded.rows.dtype == torch.float64
    assert torch.equal(loaded.scale, tally.scale) and loaded.scale.dtype == torch.float32
    assert int(loaded.count) == 4
    assert loaded.total == tally.total == 66.0  # refresh_derived_state ran after the tensors were set


def test_registered_module_without_floating_tensors_is_saved_with_the_default_dtype(
    registry: dict[str, type], tmp_path: Path
) -> None:
    varmem.register_checkpoint_class(Counts)
    path = varmem.save(Counts(), tmp_path / "c.safetensors")
    assert read_file(path)[0]["dtype"] == str(torch.get_default_dtype()).removeprefix("torch.")
    assert torch.equal(varmem.load(path).n, torch.arange(3))


@pytest.mark.parametrize("case", ["nan row", "rows of another width", "rows with a third dim", "missing and extra"])
def test_registered_module_state_is_checked_by_load(case: str, registry: dict[str, type], tmp_path: Path) -> None:
    """The module's own check_state accepts everything here: only load's generic checks can refuse."""
    varmem.register_checkpoint_class(Tally)
    good = varmem.save(Tally(3).add(torch.ones(2, 3, dtype=torch.float64)), tmp_path / "good.safetensors")
    change, words = {
        "nan row": ({"rows": with_nan(torch.ones(2, 3, dtype=torch.float64))}, r"^.*: stored state does not fit "
                    r"Tally: state entry 'rows' contains NaN or inf$"),
        "rows of another width": ({"rows": torch.ones(2, 4, dtype=torch.float64)},
                                  r"state entry 'rows' has shape \[2, 4\], expected \[\*, 3\]$"),
        "rows with a third dim": ({"rows": torch.ones(2, 3, 1, dtype=torch.float64)},
                                  r"state entry 'rows' has shape \[2, 3, 1\], expected \[\*, 3\]$"),
        "missing and extra": ({"rows": None, "spare": torch.ones(1)},
                              r"state does not match Tally: missing \['rows'\], unexpected \['spare'\]$"),
    }[case]
    bad = rewrite(good, tmp_path / "bad.safetensors", tensors=change)
    with pytest.raises(CheckpointError, match=words):
        varmem.load(bad)
    assert varmem.load(good).total == 6.0  # negative control: the intact file loads


def test_error_messages_name_the_offending_type(tmp_path: Path, good: dict[str, Path]) -> None:
    with pytest.raises(TypeError, match="registered module class, got Linear$"):
        varmem.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    vae = _vae()
    with torch.no_grad():
        vae.encoder.loc_head.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^cannot save VAE: state entry 'encoder.loc_head.weight' contains NaN "
                       r"or inf$"):
        varmem.save(vae, tmp_path / "inf.safetensors")
    cases = {
        "list config": ({"config": "[4, 0.3]"}, r"invalid varmem header \(TypeError: config must be a JSON object, "
                                                r"got list\)$"),
        "garbled config": ({"config": "{oops"}, r"invalid varmem header \(JSONDecodeError: "),
        "two entries missing": ({"class": None, "dtype": None}, r"invalid varmem header: no 'class', 'dtype' entry$"),
        "bad constructor argument": ({"config": json.dumps({"dim": 4, "bandwidth": -1.0, "noise_scale": 0.1})},
                                     r"cannot rebuild KernelDensityMemory from its saved config \(ValueError: "),
    }
    for meta, words in cases.values():
        bad = rewrite(good["kdm"], tmp_path / "bad.safetensors", meta=meta)
        with pytest.raises(CheckpointError, match=words):
            varmem.load(bad)


@pytest.mark.parametrize("similarity", ["dot", "l2"])
def test_modern_hopfield_reads_identically_after_save_and_load(similarity: str, tmp_path: Path) -> None:
    """The cached ``M = max_i ‖x_i‖`` is rebuilt by load (the dot energy depends on it)."""
    items = torch.randn(10, 4, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.5, 2.0, 10)[:, None]
    original = varmem.ModernHopfield(4, beta=2.0, similarity=similarity, update_steps_max=3).write(items)
    loaded = varmem.load(varmem.save(original, tmp_path / "h.safetensors"))
    assert loaded.max_norm == original.max_norm == float(items.norm(dim=-1).max()) > 0
    cue = torch.rand(3, 4, generator=CUE)
    a, b = original.retrieve(cue), loaded.retrieve(cue)
    assert torch.equal(a.pattern, b.pattern) and torch.equal(a.trace, b.trace)
    assert torch.equal(loaded.compute_energy(cue), original.compute_energy(cue))
