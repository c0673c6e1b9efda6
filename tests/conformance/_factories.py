"""One small, fast, deterministic factory per registered memory class, for the conformance suite.

A :class:`Factory` is a constructor call (every argument by name), a few items in the memory's
value domain (bipolar for the binary memories), matching cues and a partial-cue mask, the small
engine options that keep every listed read fast (tiny NUTS runs, few relaxation steps), and what
the suite needs to know about the class (the size of its weights, the additive constant of its
energy against its Pyro model).  :data:`FACTORIES` has one per class in
``varmem.memory.registered_memories()``; ``test_conformance.py`` fails for a class without one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

import varmem
from varmem.baselines.cdam import ring_graph
from varmem.memory import Memory

__all__ = ["Factory", "FACTORIES", "DEVICE", "factory_for", "hadamard", "bipolar", "gaussian"]

DEVICE = torch.device(os.environ.get("VARMEM_DEVICE", "cpu"))
"""The test device (as ``tests/conftest.py`` reads it); memories are built there."""


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> Tensor:
    """``[n, d]`` standard-normal rows (times ``scale``), drawn on the CPU in float64."""
    return (scale * torch.randn(n, d, generator=_generator(seed), dtype=torch.float64)).to(DEVICE)


def bipolar(n: int, d: int, seed: int) -> Tensor:
    """``[n, d]`` random ±1 rows."""
    return torch.where(torch.rand(n, d, generator=_generator(seed), dtype=torch.float64) > 0.5, 1.0, -1.0).to(DEVICE)


def hadamard(n: int) -> Tensor:
    """The ``n × n`` Sylvester-Hadamard matrix (``n`` a power of 2): orthogonal ±1 rows."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h.to(DEVICE)


CUES: Any = object()
"""Default of :meth:`Factory.read`'s ``cue``: the factory's own cues (``None`` is a bad cue)."""


@dataclass
class Factory:
    """How to build, fill and read one memory class in the conformance suite.

    Attributes:
        cls: the memory class.
        kwargs: the constructor call, every argument by name (the bad-input catalogue replaces
            each of them in turn).
        items: ``() -> [N, D]`` items in the memory's value domain (written by :meth:`build`).
        cues: ``() -> [B, D]`` cues (noisy items); ``mask``: ``() -> [B, D]`` bool partial-cue mask.
        options: per-method engine options that keep every listed read small and reproducible (the
            seeds of the stochastic engines: ``nuts``, ``pc``, ``pc_pyro``).
        setup: called on the memory after the items are written (e.g. CDAM's graph).
        num_weights: ``memory -> N_w``, the width of ``Retrieval.weights`` (``len(memory)`` for
            memories that weigh their stored items; the nonparametric memory adds the "new" one).
        energy_constant: ``c`` in ``-log p_Pyro = energy_scale · energy + c``: ``0.0`` for memories
            documented to keep every constant, ``None`` where only ``c``'s independence of ``z`` is
            promised.
        bad_items: items outside the memory's value domain (``(label, tensor)``), refused by ``write``
            (the binary memories' non-bipolar items).
    """

    cls: type[Memory]
    kwargs: dict[str, Any]
    items: Callable[[], Tensor]
    cues: Callable[[], Tensor]
    mask: Callable[[], Tensor]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: Callable[[Memory], None] | None = None
    num_weights: Callable[[Memory], int] = len
    energy_constant: float | None = 0.0
    bad_items: Callable[[], list[tuple[str, Tensor]]] = lambda: []

    @property
    def name(self) -> str:
        return self.cls.__name__

    def make(self, **overrides: Any) -> Memory:
        """An empty memory from the constructor call (with ``overrides``); the global RNG is seeded
        (and restored), so networks initialised from it are the same in every build."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return self.cls(**{**self.kwargs, **overrides})

    def fill(self, memory: Memory) -> Memory:
        """Write :attr:`items` into ``memory`` and run :attr:`setup`."""
        memory.write(self.items())
        if self.setup is not None:
            self.setup(memory)
        return memory

    def build(self, **overrides: Any) -> Memory:
        """A memory holding :attr:`items`, ready to be read."""
        return self.fill(self.make(**overrides))

    def read_options(self, method: str) -> dict[str, Any]:
        """The small options of ``method`` (empty for methods whose defaults are already fast)."""
        return dict(self.options.get(method, {}))

    def read(self, memory: Memory, method: str, cue: Any = CUES, mask: Any = None, **options: Any) -> Any:
        """``memory.retrieve`` of :attr:`cues` (or ``cue``) with this factory's options for ``method``."""
        cue = self.cues() if cue is CUES else cue
        return memory.retrieve(cue, mask, method=method, **{**self.read_options(method), **options})


def _mask(b: int, d: int, seed: int) -> Callable[[], Tensor]:
    """A partial-cue mask with about half the entries observed and at least one per cue."""
    def make() -> Tensor:
        m = torch.rand(b, d, generator=_generator(seed)) > 0.5
        m[:, 0] = True
        return m.to(DEVICE)
    return make


def _noisy(items: Callable[[], Tensor], rows: list[int], seed: int, scale: float) -> Callable[[], Tensor]:
    return lambda: items()[rows] + gaussian(len(rows), items().shape[1], seed, scale)


def _flipped(items: Callable[[], Tensor], rows: list[int], flips: int) -> Callable[[], Tensor]:
    """Bipolar cues: the items at ``rows`` with their first ``flips`` entries flipped."""
    def make() -> Tensor:
        x = items()[rows].clone()
        x[:, :flips] *= -1
        return x
    return make


NUTS = {"num_samples": 2, "warmup_steps": 2, "max_tree_depth": 2, "seed": 0}
MAP = {"max_steps": 5}
FIXED = {"max_steps": 10}
PC = {"max_steps": 3, "seed": 0}


def _not_bipolar(d: int) -> Callable[[], list[tuple[str, Tensor]]]:
    return lambda: [("not bipolar (0.5)", torch.full((1, d), 0.5, device=DEVICE)),
                    ("not bipolar (0)", torch.zeros(1, d, device=DEVICE)),
                    ("not bipolar (2)", torch.full((1, d), 2.0, device=DEVICE))]


def _binary01(n: int, d: int, seed: int) -> Callable[[], Tensor]:
    """``[n, d]`` random {0, 1} patterns of coding level about 0.4 (the firing-rate memory's items)."""
    return lambda: (torch.rand(n, d, generator=_generator(seed), dtype=torch.float64) < 0.4).double().to(DEVICE)


def _outside_unit(d: int) -> Callable[[], list[tuple[str, Tensor]]]:
    return lambda: [("below 0 (-0.5)", torch.full((1, d), -0.5, device=DEVICE)),
                    ("above 1 (1.5)", torch.full((1, d), 1.5, device=DEVICE))]


def _real_items(d: int, n: int = 5, seed: int = 0, scale: float = 1.0) -> Callable[[], Tensor]:
    return lambda: gaussian(n, d, seed, scale)


def _factories() -> list[Factory]:
    real4 = _real_items(4)
    bip8 = lambda: bipolar(5, 8, 1)  # noqa: E731
    had = lambda: hadamard(8)[1:5]  # noqa: E731  4 orthogonal ±1 patterns
    unit4 = lambda: torch.nn.functional.normalize(gaussian(5, 4, 2), dim=-1)  # noqa: E731
    half = lambda: 0.5 * torch.rand(5, 4, generator=_generator(3), dtype=torch.float64).to(DEVICE)  # noqa: E731
    dev = {"device": DEVICE, "dtype": None}
    return [
        Factory(varmem.KernelDensityMemory, dict(dim=4, bandwidth=0.5, noise_scale=0.3, chunk_size=None, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"fixed_point": FIXED, "map": MAP, "nuts": NUTS}),
        Factory(varmem.NonparametricMemory,
                dict(dim=4, alpha=1.0, bandwidth=0.3, noise_scale=0.3, prior_scale=2.0, prior_mean=0.0,
                     assignment="crp_map", **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"fixed_point": FIXED, "map": MAP, "nuts": NUTS},
                num_weights=lambda m: len(m) + 1),
        Factory(varmem.LatentMemory,
                dict(data_shape=6, code_dim=2, architecture="linear", hidden=(4,), output="identity",
                     bandwidth=0.5, noise_scale=0.3, beta=1.0, code_noise=None, guide_hidden=(4,),
                     chunk_size=None, **dev),
                _real_items(6), _noisy(_real_items(6), [0, 2, 4], 10, 0.2), _mask(3, 6, 20),
                options={"fixed_point": FIXED, "map": MAP, "nuts": NUTS, "iterative": MAP, "hybrid": MAP}),
        Factory(varmem.PredictiveCodingMemory,
                dict(dim=4, n_layers=2, h_dim=4, activation="relu", sigma_obs=1.0, sigma_data=None,
                     training="online", epochs=2, weight_lr=0.1, T_infer=5, activation_lr=0.05,
                     activation_optimizer="adam", infer_tol=1e-3, infer_rtol=0.0, seed=0, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"pc": PC, "pc_pyro": PC}, num_weights=lambda m: 0),
        Factory(varmem.BayesPCN,
                dict(dim=4, n_layers=2, h_dim=4, activation="relu", sigma_prior=1.0, sigma_obs=0.3,
                     sigma_data=None, n_particles=2, log_prob="p_pred", ensemble_log_joint="individual",
                     T_infer=5, activation_lr=0.05, infer_tol=1e-3, infer_rtol=1e-4, infer_window=1, write_batch=1,
                     write_objective="independent",
                     resample=False, resample_threshold=0.5, keep_history=True, seed=0, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"pc": PC, "pc_pyro": PC}, num_weights=lambda m: 0),
        Factory(varmem.ClassicalHopfield, dict(dim=8, rule="hebbian", **dev),
                bip8, _flipped(bip8, [0, 2, 4], 1), _mask(3, 8, 21),
                options={"fixed_point": FIXED, "sync": FIXED, "async": FIXED}, num_weights=lambda m: 0,
                bad_items=_not_bipolar(8)),
        Factory(varmem.DenseAssociativeMemory,
                dict(dim=8, power=3, interaction="exponential", rectified=False, beta=0.5, **dev),
                bip8, _flipped(bip8, [0, 2, 4], 1), _mask(3, 8, 21),
                options={"fixed_point": FIXED, "sync": FIXED, "async": FIXED}, bad_items=_not_bipolar(8)),
        Factory(varmem.ModernHopfield,
                dict(dim=4, beta=4.0, similarity="dot", update_steps_max=3, update_steps_eps=1e-4,
                     chunk_size=None, **dev),
                unit4, _noisy(unit4, [0, 3, 4], 10, 0.1), _mask(3, 4, 20)),
        Factory(varmem.RandomFeatureMemory,
                dict(dim=4, beta=8.0, num_features=64, kernel="sincos", seed=0, step_size=0.1, eps=1e-5,
                     orthogonal=False, chunk_size=None, **dev),
                half, _noisy(half, [0, 3, 4], 10, 0.05), _mask(3, 4, 20),
                options={"fixed_point": FIXED, "map": MAP}, num_weights=lambda m: 0),
        Factory(varmem.KernelizedHopfield,
                dict(dim=4, beta=2.0, feature_dim=5, feature_map="linear", separation="softmax", hidden_dim=None,
                     seed=0, chunk_size=None, **dev),
                unit4, _noisy(unit4, [0, 3, 4], 10, 0.1), _mask(3, 4, 20), options={"fixed_point": FIXED}),
        Factory(varmem.CorrelatedDenseMemory,
                dict(dim=8, a=1.0, h=0.3, beta=0.3, eta=1.0, normalization="symmetric", **dev),
                had, _flipped(had, [0, 1, 3], 1), _mask(3, 8, 21),
                options={"fixed_point": FIXED}, setup=lambda m: m.set_graph(ring_graph(4, device=DEVICE))),
        Factory(varmem.MixtureHopfieldMemory,
                dict(dim=4, sigma=0.5, metric="dot", beta=None, chunk_size=None, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"fixed_point": FIXED, "map": MAP}),
        Factory(varmem.MemN2N,
                dict(dim=4, alpha=100.0, train_alpha=1.0, beta_init=0.1, variant="annabi", **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20)),
        Factory(varmem.NTM, dict(dim=4, variant="annabi", eps=1e-5, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20)),
        Factory(varmem.FiringRateMemory,
                dict(dim=8, activation="logistic", gain=4.8, threshold=0.2, inactive_field=-0.3, active_field=0.95,
                     coding_level=None, correlation=None, temperature=1.0, **dev),
                _binary01(5, 8, 4), _noisy(_binary01(5, 8, 4), [0, 2, 4], 10, 0.1), _mask(3, 8, 21),
                options={"rate_dynamics": {"t_max": 1.0, "dt": 0.05}, "map": MAP, "nuts": NUTS},
                bad_items=_outside_unit(8)),
        Factory(varmem.SpikingLowRankMemory, dict(dim=8, rule="hebbian", spike_size=0.1, tau=0.01, **dev),
                bip8, _flipped(bip8, [0, 2, 4], 1), _mask(3, 8, 21),
                options={"latent": FIXED, "spiking": {"max_steps": 10, "seed": 0}}, num_weights=lambda m: 0,
                bad_items=_not_bipolar(8)),
        Factory(varmem.EntropicMemory,
                dict(dim=4, rows=4, registers=1, weighted=True, sigma=0.25, iota=0.0, kappa=0.0, xi=1,
                     pseudo_count=0.5, **dev),
                half, _noisy(half, [0, 3, 4], 10, 0.05), _mask(3, 4, 20),
                options={"beta": {"seed": 0}}, num_weights=lambda m: m.registers),
        Factory(varmem.EntropicHeteroMemory,
                dict(dim=4, split=2, rows=4, rows_b=3, iota=0.0, kappa=0.0, xi=0, **dev),
                half, _noisy(half, [0, 3, 4], 10, 0.05), _mask(3, 4, 20),
                options={m: {"seed": 0} for m in ("random", "sample_and_test", "search_and_test")},
                num_weights=lambda m: 0, energy_constant=None),
        Factory(varmem.DiffusionMemory,
                dict(dim=4, sigma_min=0.05, sigma_max=3.0, noise_scale=0.2, hidden=8, seed=0, chunk_size=None,
                     **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"diffusion": {"num_steps": 8}, "fixed_point": FIXED, "map": MAP}),
        Factory(varmem.SparseRecoveryMemory,
                dict(dim=6, max_rank=None, noise_scale=0.5, subspace_scale=10.0, off_subspace_scale=0.1, **dev),
                _real_items(6, n=3), _noisy(_real_items(6, n=3), [0, 1, 2], 10, 0.2), _mask(3, 6, 20),
                options={"admm": {"max_steps": 200}}, num_weights=lambda m: 0),
        Factory(varmem.LinearAssociativeMemory,
                dict(dim=4, code_dim=6, rule="trained", beta=1.0, lr=None, max_steps=32, target_accuracy=0.99,
                     seed=0, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20), num_weights=len,
                bad_items=lambda: [("of zero norm", torch.zeros(1, 4, device=DEVICE))]),
        Factory(varmem.MLPAssociativeMemory,
                dict(dim=4, hidden=8, code_dim=None, rule="trained", beta=1.0, lr=None, max_steps=32,
                     target_accuracy=0.99, seed=0, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                bad_items=lambda: [("of zero norm", torch.zeros(1, 4, device=DEVICE))]),
        Factory(varmem.PCNetMemory,
                dict(net=_pcnet(), training="offline", epochs=3, T=3, batch_size=None, x_optimizer="sgd", x_lr=0.1,
                     w_optimizer="hebbian", w_lr=0.05, incremental=False, hidden_init="randn", read_steps=3,
                     read_lr=None, procedure=None, start="zero", seed=0, **dev),
                real4, _noisy(real4, [0, 3, 4], 10, 0.2), _mask(3, 4, 20),
                options={"pcnet": {"max_steps": 3, "seed": 0}, "pcnet_pyro": {"max_steps": 3, "seed": 0}},
                num_weights=lambda m: 0),
    ]


def _pcnet() -> Any:
    """A small dense PCNet 3 → 5 → 4 (relu, pre-synaptic, biases, Gaussian nodes) for PCNetMemory."""
    from varmem.memories.predictive_coding import Dense, PCNet
    return PCNet((3,), [Dense(3, 5), Dense(5, 4, activation="tanh")], sigmas=[0.8, 0.5], sigma_top=1.0, seed=0)


FACTORIES: dict[str, Factory] = {f.name: f for f in _factories()}
"""One factory per memory class, by class name."""


def factory_for(cls: type[Memory]) -> Factory:
    """The factory of ``cls`` (``KeyError`` naming the class when there is none)."""
    try:
        return FACTORIES[cls.__name__]
    except KeyError:
        raise KeyError(f"no conformance factory for the memory class {cls.__name__}: add one to "
                       "tests/conformance/_factories.py") from None
