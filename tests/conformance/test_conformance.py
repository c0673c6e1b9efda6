"""Every registered memory class against the protocol of :mod:`varmem.memory`, one factory each.

The suite is parametrised over ``varmem.memory.registered_memories()``, so a new memory class joins
it automatically (and fails it until ``_factories.py`` has a factory for it).  References:

* the energy against an independent computation: minus the log-density of the Pyro trace of
  ``memory.model(cue, mask)`` with the latent sites conditioned (``poutine.condition`` /
  ``poutine.trace``), ``-log p = energy_scale · energy + c`` with ``c`` the same for every ``z``
  (``c = 0`` where the memory keeps every constant);
* the shapes, dtypes and invariants that :class:`varmem.Retrieval` documents, for every listed
  method, full and partial cues;
* bit-identical state dicts (``torch.equal``) after failed calls, and bit-identical reads after a
  ``varmem.save`` / ``varmem.load`` round trip and for equivalent spellings of one cue.
"""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from conformance._factories import FACTORIES, Factory, factory_for
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor

import varmem
from varmem.engine import get_engine
from varmem.memory import Memory, registered_memories
from varmem.retrieval import WEIGHTS_AT, Retrieval

CLASSES = registered_memories()
NAMES = [cls.__name__ for cls in CLASSES]
METHODS = [(cls.__name__, method) for cls in CLASSES for method in cls.methods]
PYRO_METHODS = ("map", "nuts", "pc_pyro")
MODEL_CLASSES = [cls.__name__ for cls in CLASSES
                 if hasattr(cls, "model") or any(m in PYRO_METHODS for m in cls.methods)]


def _memory(name: str) -> tuple[Factory, Memory]:
    factory = factory_for(varmem.memory.memory_class(name))
    return factory, factory.build()


def _tol(memory: Memory) -> float:
    """A relative tolerance for sums and differences of ``memory``'s dtype (1e-9 in float64)."""
    return 1e-9 if memory.dtype == torch.float64 else 1e-4


def snapshot(memory: Memory) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in memory.state_dict().items()}


def assert_state_identical(memory: Memory, before: dict[str, Tensor]) -> None:
    """Every tensor of ``memory.state_dict()`` bit-identical (values, dtype, shape) to ``before``."""
    now = memory.state_dict()
    assert now.keys() == before.keys()
    for k, v in now.items():
        assert v.dtype == before[k].dtype and v.shape == before[k].shape, k
        assert torch.equal(v, before[k]), f"state entry {k} changed"


# --- every class has a factory, and every factory names every constructor argument ----------------
def test_every_registered_memory_class_has_a_factory():
    missing = sorted(set(NAMES) - set(FACTORIES))
    stale = sorted(set(FACTORIES) - set(NAMES))
    assert not missing, f"memory classes without a conformance factory: {missing}"
    assert not stale, f"factories of classes that are not registered: {stale}"
    assert len(CLASSES) >= 14


@pytest.mark.parametrize("name", NAMES)
def test_factory_names_every_constructor_argument_and_builds_a_readable_memory(name):
    factory, memory = _memory(name)
    params = [p for p in inspect.signature(factory.cls.__init__).parameters if p != "self"]
    assert sorted(factory.kwargs) == sorted(params), "the factory must name every constructor argument"
    assert len(memory) > 0 and memory.device == torch.device(factory.kwargs["device"])
    json.dumps(memory.config())  # config() is JSON-able, and rebuilds an equal memory
    assert type(memory)(**memory.config(), device=memory.device, dtype=memory.dtype).config() == memory.config()


# --- energy = minus the log-density of the Pyro model ---------------------------------------------
def _model_site_values(memory: Memory, z: Tensor, mask: Tensor | None) -> list[dict[str, Tensor]]:
    """The latent sites of ``memory.model`` set to the state ``z`` (one dict per value of an
    enumerated discrete site, whose densities are summed)."""
    if isinstance(memory, varmem.memories.predictive_coding.network.PCNetwork):
        acts = memory.split_code(z)
        values = {f"h{i}": acts[i] for i in range(1, memory.n_layers)}
        if mask is not None:
            values["x_missing"] = acts[0]
        K = memory.particle_log_weights(memory.dtype).shape[0]
        if K == 1:
            return [values]
        return [{**values, "particle": torch.full((z.shape[0],), k, dtype=torch.long)} for k in range(K)]
    if hasattr(memory, "site_values"):  # a code that holds several Pyro sites (PCNetMemory)
        return [memory.site_values(z, mask)]
    return [{memory.latent_site: z}]


def _pyro_log_density(memory: Memory, z: Tensor, cue: Tensor, mask: Tensor | None) -> Tensor:
    """``[B]`` log-density of the trace of ``memory.model(cue, mask)`` at the state ``z``, per cue."""
    per_value = []
    for values in _model_site_values(memory, z, mask):
        trace = poutine.trace(poutine.condition(memory.model, data=values)).get_trace(cue, mask)
        trace.compute_log_prob()
        total = torch.zeros(z.shape[0], dtype=z.dtype)
        for site in trace.nodes.values():
            if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                continue
            assert site["log_prob"].shape == (z.shape[0],), site["name"]
            total = total + site["log_prob"]
        per_value.append(total)
    return torch.stack(per_value).logsumexp(0)


@pytest.mark.parametrize("name", MODEL_CLASSES)
@pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
def test_energy_is_minus_the_log_density_of_the_pyro_model(name, partial):
    factory, memory = _memory(name)
    cue, mask = memory.prepare_cue(factory.cues(), factory.mask() if partial else None)  # the model's inputs
    B, L = cue.shape[0], memory.latent_dim
    gen = torch.Generator().manual_seed(5)
    offsets = []
    with torch.no_grad():
        for _ in range(4):  # several states: the difference must be one constant
            z = (0.5 * torch.randn(B, L, generator=gen, dtype=torch.float64)).to(memory.device, memory.dtype)
            if L == cue.shape[1]:
                z = z + cue
            log_p = _pyro_log_density(memory, z, cue, mask)
            e = memory.energy(z, cue, mask)
            assert e.shape == (B,) and torch.isfinite(e).all() and torch.isfinite(log_p).all()
            offsets.append(-log_p - memory.energy_scale * e)
    offsets = torch.stack(offsets)
    scale = _tol(memory) * (1 + offsets.abs().max())
    torch.testing.assert_close(offsets, offsets[:1].expand_as(offsets), atol=scale, rtol=0)
    if factory.energy_constant is not None:
        torch.testing.assert_close(offsets, torch.full_like(offsets, factory.energy_constant), atol=scale, rtol=0)


def test_memories_without_a_pyro_model_list_no_pyro_engine():
    for cls in CLASSES:
        if cls.__name__ not in MODEL_CLASSES:
            assert not set(cls.methods) & set(PYRO_METHODS), cls.__name__


# --- every listed method returns a valid Retrieval --------------------------------------------------
def assert_valid_retrieval(r: Retrieval, memory: Memory, factory: Factory, method: str, batch: int) -> None:
    D, L, N = memory.dim, memory.latent_dim, factory.num_weights(memory)
    assert isinstance(r, Retrieval) and r.method == method
    for name, shape in (("pattern", (batch, D)), ("code", (batch, L))):
        t = getattr(r, name)
        assert t.shape == shape, f"{name} has shape {tuple(t.shape)}, expected {shape}"
        assert t.dtype == memory.dtype and t.device == memory.device, name
        assert torch.isfinite(t).all(), f"{name} is not finite"
    if r.trace is not None:
        assert r.trace.dim() == 2 and r.trace.shape[1] == batch and torch.isfinite(r.trace).all()
    if r.converged is not None:
        assert r.converged.shape == (batch,) and r.converged.dtype == torch.bool
    if N == 0:
        assert r.weights is None and r.index is None, "a memory without item weights returned some"
    if r.weights is not None:
        assert r.weights.shape == (batch, N) and r.weights_at in WEIGHTS_AT
        assert (r.weights >= 0).all() and torch.isfinite(r.weights).all()
        torch.testing.assert_close(r.weights.sum(-1), torch.ones(batch, dtype=r.weights.dtype), atol=_tol(memory),
                                   rtol=0)
    if r.index is not None:
        assert r.index.shape == (batch,) and r.index.dtype == torch.long
        assert ((r.index >= 0) & (r.index < N)).all()
    if r.variance is not None:
        assert r.variance.shape == (batch, L) and (r.variance >= 0).all()
    if r.samples is not None:
        assert r.samples.dim() == 3 and r.samples.shape[1:] == (batch, L) and torch.isfinite(r.samples).all()
    assert isinstance(r.steps, int) and r.steps >= 0


@pytest.mark.parametrize("name, method", METHODS)
def test_every_listed_method_returns_a_valid_retrieval_for_full_and_partial_cues(name, method):
    factory, memory = _memory(name)
    before = snapshot(memory)
    cue, mask = factory.cues(), factory.mask()
    assert_valid_retrieval(factory.read(memory, method), memory, factory, method, cue.shape[0])
    assert_valid_retrieval(factory.read(memory, method, mask=mask), memory, factory, method, cue.shape[0])
    single = factory.read(memory, method, cue=cue[0], mask=mask[0])  # one [D] cue and a [D] mask
    assert_valid_retrieval(single, memory, factory, method, 1)
    assert_state_identical(memory, before)  # reading changes nothing


@pytest.mark.parametrize("name", NAMES)
def test_default_method_is_listed_and_is_what_retrieve_uses(name):
    factory, memory = _memory(name)
    assert memory.default_method in memory.methods
    for m in memory.methods:  # the memory's own option defaults are options of that engine
        assert set(memory.default_options(m)) <= set(get_engine(m).options), m
    method = memory.default_method
    a = memory.retrieve(factory.cues(), **factory.read_options(method))
    b = memory.retrieve(factory.cues(), method=method, **factory.read_options(method))
    assert a.method == method and torch.equal(a.pattern, b.pattern)


# --- energy: shapes, autograd, validation --------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_energy_returns_one_finite_value_per_state_and_keeps_autograd(name):
    factory, memory = _memory(name)
    cue, mask = factory.cues(), factory.mask()
    B, L = cue.shape[0], memory.latent_dim
    z = (0.3 * torch.randn(B, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).to(memory.dtype)
    for args in ((), (cue, None), (cue, mask)):
        e = memory.energy(z, *args)
        assert e.shape == (B,) and e.dtype == memory.dtype and torch.isfinite(e).all()
    stacked = memory.energy(torch.stack([z, 2 * z]), cue, mask)  # z [..., B, L]
    assert stacked.shape == (2, B)
    torch.testing.assert_close(stacked[0], memory.energy(z, cue, mask))
    torch.testing.assert_close(stacked[1], memory.energy(2 * z, cue, mask))
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(memory.energy(zg, cue, mask).sum(), zg)
    assert grad.shape == z.shape and torch.isfinite(grad).all()


def _energy_bad_inputs(memory: Memory, cue: Tensor, mask: Tensor) -> list[tuple[str, tuple, dict, type, str]]:
    B, L = cue.shape[0], memory.latent_dim
    z = torch.zeros(B, L, dtype=memory.dtype)
    big = z.clone()
    big[0, 0] = 1e30
    huge = z.clone()
    huge[1, -1] = -2e6
    nan, inf = z.clone(), z.clone()
    nan[0, 0], inf[0, 0] = math.nan, math.inf
    return [
        ("wrong last dim", (torch.zeros(B, L + 1),), {}, ValueError, "z"),
        ("0-d z", (torch.tensor(0.0),), {}, ValueError, "z"),
        ("int z", (z.long(),), {}, TypeError, "z"),
        ("bool z", (z.bool(),), {}, TypeError, "z"),
        ("complex z", (z.to(torch.complex128),), {}, TypeError, "z"),
        ("string z", ("yes",), {}, TypeError, "z"),
        ("None z", (None,), {}, TypeError, "z"),
        ("NaN z", (nan,), {}, ValueError, "z"),
        ("inf z", (inf,), {}, ValueError, "z"),
        ("1e30 z", (big,), {}, ValueError, "z"),
        ("-2e6 z", (huge,), {}, ValueError, "z"),
        ("wrong cue shape", (z, torch.zeros(B, memory.dim + 1)), {}, ValueError, "cue"),
        ("int cue", (z, cue.long()), {}, TypeError, "cue"),
        ("NaN cue", (z, torch.full_like(cue, math.nan)), {}, ValueError, "cue"),
        ("mask without cue", (z,), {"mask": mask}, ValueError, "mask"),
        ("float mask", (z, cue, mask.double()), {}, TypeError, "mask"),
        ("z batch does not match the cues", (torch.zeros(B + 1, L), cue), {}, ValueError, "z"),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_energy_validates_its_inputs_with_errors_naming_the_argument(name):
    factory, memory = _memory(name)
    before = snapshot(memory)
    for label, args, kwargs, error, word in _energy_bad_inputs(memory, factory.cues(), factory.mask()):
        with pytest.raises(error) as info:
            memory.energy(*args, **kwargs)
        assert word in str(info.value), f"{label}: {info.value}"
    empty = factory.make()
    with pytest.raises(ValueError, match="empty"):
        empty.energy(torch.zeros(1, empty.latent_dim))
    assert_state_identical(memory, before)


# --- equivalent spellings of a cue give the same read --------------------------------------------------
@pytest.mark.parametrize("name, method", METHODS)
def test_non_contiguous_numpy_and_list_cues_read_exactly_as_the_contiguous_tensor(name, method):
    factory, memory = _memory(name)
    cue, mask = factory.cues(), factory.mask()
    for m in (None, mask):
        reference = factory.read(memory, method, cue=cue, mask=m).pattern
        strided = cue.T.contiguous().T
        assert not strided.is_contiguous()
        spellings = {"transposed view": (strided, m), "numpy": (cue.cpu().numpy(), m),
                     "list": (cue.tolist(), m)}
        if m is not None:
            spellings["numpy mask"] = (cue, m.cpu().numpy())
            spellings["transposed mask"] = (cue, m.T.contiguous().T)
            spellings["NaN where unobserved"] = (torch.where(m, cue, math.nan), m)
        for label, (c, mm) in spellings.items():
            got = factory.read(memory, method, cue=c, mask=mm).pattern
            assert torch.equal(got, reference), f"{label} (mask={m is not None}) reads differently"


# --- failed calls change nothing; successful ones survive save / load ------------------------------------
def _failing_calls(factory: Factory, memory: Memory) -> dict[str, object]:
    """Calls of every state-changing entry point that must fail (each a zero-argument callable)."""
    items, D = factory.items(), memory.dim
    bad_rows = torch.cat([items[:2], torch.full((1, D), math.nan)])  # the last row only is bad
    calls = {
        "write with a NaN row": lambda: memory.write(bad_rows),
        "write with a 1e30 row": lambda: memory.write(torch.cat([items[:2], torch.full((1, D), 1e30)])),
        "write of the wrong width": lambda: memory.write(torch.zeros(2, D + 1)),
        "write of ints": lambda: memory.write(items.long()),
        "load_state_dict with a NaN entry": lambda: memory.load_state_dict(_poisoned(memory.state_dict())),
        "load_state_dict with a missing key": lambda: memory.load_state_dict(
            dict(list(memory.state_dict().items())[1:])),
        "load_state_dict of a list": lambda: memory.load_state_dict(list(memory.state_dict().items())),
    }
    for label, bad in factory.bad_items():
        calls[f"write of items {label}"] = lambda bad=bad: memory.write(torch.cat([items[:1], bad]))
    if hasattr(memory, "forget"):
        if "beta" in inspect.signature(memory.forget).parameters:
            calls.update({"forget(1.5)": lambda: memory.forget(1.5), "forget(None)": lambda: memory.forget(None),
                          "forget('0.1')": lambda: memory.forget("0.1")})
        else:
            calls.update({"forget(None)": lambda: memory.forget(None),
                          "forget out of range": lambda: memory.forget([0, len(memory)]),
                          "forget(1.5)": lambda: memory.forget(1.5)})
    if hasattr(memory, "delete"):
        stored, absent = items[:2], torch.cat([items[:1], items[:1] + 0.123])
        calls.update({"delete of an item never written": lambda: memory.delete(absent),
                      "delete(None)": lambda: memory.delete(None)})
        if "atol" in inspect.signature(memory.delete).parameters:
            calls["delete with atol='x'"] = lambda: memory.delete(stored, atol="x")
            calls["delete with atol=-1"] = lambda: memory.delete(stored, atol=-1.0)
    return calls


def _poisoned(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with NaN in the last entry of its last non-empty floating tensor."""
    state = {k: v.clone() for k, v in state.items()}
    key = [k for k, v in state.items() if v.is_floating_point() and v.numel()][-1]
    state[key].view(-1)[-1] = math.nan
    return state


@pytest.mark.parametrize("name", NAMES)
def test_failed_write_forget_delete_and_load_leave_the_state_bit_identical(name):
    factory, memory = _memory(name)
    before, n, config = snapshot(memory), len(memory), memory.config()
    for label, call in _failing_calls(factory, memory).items():
        with pytest.raises((ValueError, TypeError, KeyError, IndexError)):
            call()
        assert_state_identical(memory, before)
        assert len(memory) == n and memory.config() == config, label


def _change_state(factory: Factory, memory: Memory) -> None:
    """A successful write, delete and forget (where the memory has them)."""
    memory.write(factory.items()[:2])
    if hasattr(memory, "delete"):
        memory.delete(factory.items()[1])
    if hasattr(memory, "forget"):
        memory.forget(0.2 if "beta" in inspect.signature(memory.forget).parameters else [0])


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_reproduce_every_listed_read_exactly(name, tmp_path):
    factory, memory = _memory(name)
    _change_state(factory, memory)
    path = varmem.save(memory, tmp_path / f"{name}.safetensors")
    loaded = varmem.load(path)
    assert type(loaded) is type(memory) and loaded.config() == memory.config() and len(loaded) == len(memory)
    assert_state_identical(loaded, snapshot(memory))
    for method in memory.methods:
        for mask in (None, factory.mask()):
            a, b = factory.read(memory, method, mask=mask), factory.read(loaded, method, mask=mask)
            assert torch.equal(a.pattern, b.pattern) and torch.equal(a.code, b.code), (method, mask is not None)


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_of_another_memory_of_the_class_makes_it_read_the_same(name):
    factory, memory = _memory(name)
    _change_state(factory, memory)
    other = factory.make()
    other.load_state_dict(memory.state_dict())
    assert_state_identical(other, snapshot(memory))
    method = memory.default_method
    assert torch.equal(factory.read(memory, method).pattern, factory.read(other, method).pattern)


# --- retrieve refuses unknown methods and options, naming the valid ones --------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_retrieve_refuses_unknown_methods_and_options_with_the_valid_ones(name):
    factory, memory = _memory(name)
    cue = factory.cues()
    for method in ("no_such_method", "", 3, [memory.default_method], memory.default_method.upper()):
        with pytest.raises(ValueError) as info:
            memory.retrieve(cue, method=method)
        assert all(repr(m) in str(info.value) for m in memory.methods), str(info.value)
    for method in memory.methods:
        with pytest.raises(ValueError) as info:
            memory.retrieve(cue, method=method, no_such_option=1)
        message = str(info.value)
        assert "no_such_option" in message
        assert all(option in message for option in get_engine(method).options), message


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_memory_refuses_every_read_with_a_clear_error(name):
    factory = FACTORIES[name]
    memory = factory.make()
    for method in memory.methods:
        with pytest.raises(ValueError, match="empty"):
            factory.read(memory, method)


def test_numpy_scalars_are_numbers_and_numpy_bools_are_bools_for_the_options():
    factory, memory = _memory("KernelDensityMemory")
    a = factory.read(memory, "fixed_point", max_steps=5, tol=1e-3, trace=True)
    b = factory.read(memory, "fixed_point", max_steps=np.int64(5), tol=np.float64(1e-3), trace=np.bool_(True))
    assert torch.equal(a.pattern, b.pattern) and torch.equal(a.trace, b.trace)


# --- no call changes the caller's tensors, and the memory keeps no alias of them --------------------------
@pytest.mark.parametrize("name", NAMES)
def test_no_call_changes_the_callers_tensors_or_keeps_an_alias_of_them(name):
    factory, memory = _memory(name)
    cue, mask, items = factory.cues(), factory.mask(), factory.items()
    given = {"cue": cue, "mask": mask, "items": items}
    start = torch.full((cue.shape[0], memory.latent_dim), 0.25, dtype=memory.dtype, device=memory.device)
    if factory.bad_items():  # the binary memories start from spins
        start = torch.ones_like(start)
    given["init"] = start
    before = {k: v.clone() for k, v in given.items()}
    for method in memory.methods:
        extra = {"init": start} if "init" in get_engine(method).options else {}
        factory.read(memory, method, cue=cue, mask=mask, **extra)
        factory.read(memory, method, cue=cue, **extra)
    memory.energy(start, cue, mask)
    memory.write(items)
    if hasattr(memory, "delete"):
        memory.delete(items[:1])
    for k, v in given.items():
        assert torch.equal(v, before[k]), f"a call changed the caller's {k}"
    state = {k: v.clone() for k, v in memory.state_dict().items()}
    other = factory.make()
    other.load_state_dict(state)
    for v in state.values():
        if v.is_floating_point() and v.numel():
            v.view(-1)[0] += 1.0  # the caller changes its tensors after loading
    assert_state_identical(other, snapshot(memory))
    written = items[:1].clone()
    fresh = factory.build()
    fresh.write(written)
    written.add_(1.0)  # ... or after writing
    reference = factory.build()
    reference.write(items[:1])
    assert_state_identical(fresh, snapshot(reference))


PROBABILISTIC = {"KernelDensityMemory", "NonparametricMemory", "LatentMemory", "PredictiveCodingMemory", "BayesPCN",
                 "EntropicMemory", "DiffusionMemory", "PCNetMemory"}
"""The memories that are normalised generative models of their cues: they have an evidence."""


@pytest.mark.parametrize("name", NAMES)
def test_evidence_is_one_finite_log_density_per_cue_or_a_type_error(name):
    """``evidence`` gives ``[B]`` finite values with a known kind, a non-negative standard error
    (zero when exact) and the count of observed entries; an empty memory refuses it; a memory that
    is not a generative model refuses it with ``TypeError``."""
    import warnings

    from varmem.evidence import EVIDENCE_KINDS, Evidence

    factory = FACTORIES[name]
    memory, cue, mask = factory.build(), factory.cues(), factory.mask()
    if name not in PROBABILISTIC:
        with pytest.raises(TypeError, match="has no evidence"):
            memory.evidence(cue)
        return
    exact = ("KernelDensityMemory", "NonparametricMemory", "EntropicMemory", "DiffusionMemory")
    options = {} if name in exact else {"num_samples": 32, "seed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # few samples: the degenerate-weights warning
        full, partial = memory.evidence(cue, **options), memory.evidence(cue, mask, **options)
        again = memory.log_evidence(cue, **options)
    for e, observed in ((full, torch.full((cue.shape[0],), cue.shape[1])), (partial, mask.sum(-1))):
        assert isinstance(e, Evidence) and e.kind in EVIDENCE_KINDS
        assert e.log_evidence.shape == (cue.shape[0],) and bool(torch.isfinite(e.log_evidence).all())
        assert bool((e.stderr >= 0).all()) and (e.kind != "exact" or bool((e.stderr == 0).all()))
        assert e.n_observed.tolist() == observed.tolist()
    torch.testing.assert_close(again, full.log_evidence, rtol=0, atol=0)  # seeded: the same numbers
    with pytest.raises(ValueError, match="empty"):
        factory.make().evidence(cue)
