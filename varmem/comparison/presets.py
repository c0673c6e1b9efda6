"""The memories of the default comparison, each configured as its paper does; every choice in one place.

:func:`default_contenders` returns one :class:`~varmem.comparison.Contender` per memory family of
varmem, for items of dimension ``D`` in ``[0, 1]`` (each memory sees them in its own value domain:
:mod:`varmem.domains`).  The trained memories (the latent VAE memory, MemN2N, NTM) are trained on
``train``, items that are never stored.  Every memory runs with its paper's settings; the one
exception is ``quick=True`` (the default of ``varmem compare``), which reads the two spin networks
with synchronous instead of asynchronous updates (the table says why), so that the whole default
comparison runs in about two minutes on 2 CPU cores.

=====================  ==========================================================================
memory                 configuration (reference)
=====================  ==========================================================================
kernel density         ``s = 0.1``, ``σ = 0.2``, exact posterior (varmem's recall demo; MNIST
                       items are tens of squared units apart, so each is its own basin)
nonparametric          CRP ``α = 1``, ``s = 0.1``, ``s₀ = 1``, ``σ = 0.2``, MAP table assignment,
                       exact read (Schaeffer et al. 2024's CLAM+CRP)
latent (VAE)           dense VAE 784-256-16 trained with SVI (β = 1) on ``train``, kernel prior
                       ``s = 0.5`` over codes, read ``fixed_point`` (Annabi et al.'s VAE-GMM) and
                       ``hybrid`` (encoder start, 200 MAP steps); 2000 SVI steps
GPCN                   L = 4, h = 256, relu, σ = 0.01 (BayesPCN's GPCN baseline), online (one local
                       learning step per item), T = 500
BayesPCN               camera-ready: L = 4, h = 256, relu, σ_W = 1, σ = 0.01, K = 1, one item per
                       write, Adam 0.01, T = 500 (early stop rtol 1e-6)
classical Hopfield     Hebbian, binarised items, asynchronous updates in a random order (Hopfield
                       1982), at most 20 sweeps; quick: synchronous updates (at most 20; a sweep of
                       784 one-unit updates costs 784 small steps), which recall as well here
                       (random ±1 patterns, D = 400, white 0.3: accuracy within 0.02 of the
                       asynchronous reads at N/D = 0.05 ... 0.3)
dense associative      exponential interaction ``F = exp(x)`` on ±1 patterns, ``β = 1``
                       (Demircigil et al. 2017), updates as the classical memory's
modern Hopfield        dot product on ``[-1, 1]`` items, one update, ``β = 0.2``: Ramsauer et al.
                       (2021), Theorem 3's retrieval condition ``Δ ≥ 2/(βN) + log(2(N-1)NβM²)/β``
                       for the median separation of MNIST digits in ±1 units (``Δ ≈ 100`` at
                       ``N = 100``, ``M² = 784``) holds from ``β ≈ 0.18``; hopfield-layers' default
                       ``1/√D ≈ 0.036`` blends digits (12 % recall of half-dropped cues at N = 100)
random features        DrDAM: ``β = 25/D`` (DrDAM's β = 25 on patterns scaled by ``1/√D``),
                       ``Y = 4096`` SinCos features, step 0.5, 20 steps (Hoover et al. 2024)
kernelized Hopfield    affine ``Φ`` with ``F = D``, softmax, ``β = 1/√D``, U-Hop+ stage I: 20 Adam
                       steps of lr 0.01 on the stored items (Hu et al. 2024; the paper's lr 1 on
                       unit patterns inflates ``Φ`` on images)
mixture Hopfield       BayesPCN's ``mhn`` baseline: ``σ = 0.01``, dot metric, ``[-1, 1]`` items,
                       fixed point (= its 500-step Adam read, which reaches the same mode)
MemN2N, NTM            Annabi et al.'s readers on pixels: 20 epochs of memories of 100 training
                       items, Adam (MemN2N lr 2e-5, NTM lr 1e-6: their CIFAR / CLEVR pixel
                       settings)
correlated dense       CDAM (Burns 2024) on ±1 items, ``a = 1``, ``h = 0.2``, ``β = 1``, ``η = 1``,
                       row-normalised graph; its graph joins stored items of the same class (the
                       data's labels), so it runs only when ``labels`` are given; ``h`` is ours
                       (small: the read is pulled 0.2 of the way to the class mean, which costs
                       little MSE); the paper's graphs (ring, karate club) have no images
=====================  ==========================================================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..baselines import (
    NTM,
    ClassicalHopfield,
    CorrelatedDenseMemory,
    DenseAssociativeMemory,
    KernelizedHopfield,
    MemN2N,
    MixtureHopfieldMemory,
    ModernHopfield,
    RandomFeatureMemory,
)
from ..memories import BayesPCN, KernelDensityMemory, LatentMemory, NonparametricMemory, PredictiveCodingMemory
from .run import Contender

__all__ = ["default_contenders", "check_methods", "FAMILIES", "FAMILY_CLASSES"]

FAMILIES = ("kde", "nonparametric", "latent", "gpcn", "bayespcn", "classical", "dense", "cdam", "modern",
            "random_features", "kernelized", "mixture", "memn2n", "ntm")
"""Names of the default contenders, in the order of the table and the figures."""

FAMILY_CLASSES: dict[str, type] = {
    "kde": KernelDensityMemory, "nonparametric": NonparametricMemory, "latent": LatentMemory,
    "gpcn": PredictiveCodingMemory, "bayespcn": BayesPCN, "classical": ClassicalHopfield,
    "dense": DenseAssociativeMemory, "cdam": CorrelatedDenseMemory, "modern": ModernHopfield,
    "random_features": RandomFeatureMemory, "kernelized": KernelizedHopfield, "mixture": MixtureHopfieldMemory,
    "memn2n": MemN2N, "ntm": NTM,
}
"""The memory class of each family (its ``methods`` are the read methods a family can be given)."""


def check_methods(methods: Any, families: Any = FAMILIES) -> dict[str, tuple[str, ...]]:
    """``{family: [method, ...]}`` checked against the families and each class's read methods;
    returns it with tuples (``ValueError`` names a bad family or method)."""
    if methods is None:
        return {}
    if not isinstance(methods, dict):
        raise TypeError(f"methods must map memory names to read methods, got {type(methods).__name__}")
    out = {}
    for name, wanted in methods.items():
        if name not in families:
            raise ValueError(f"methods given for {name!r}, which is not among the memories {', '.join(families)}")
        wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        valid = FAMILY_CLASSES[name].methods
        bad = [m for m in wanted if m not in valid]
        if bad or not wanted:
            raise ValueError(f"{name} reads with {', '.join(valid)}; got {', '.join(map(str, bad)) or 'no method'}")
        out[name] = tuple(dict.fromkeys(wanted))
    return out


def default_contenders(
    dim: int, *, image_shape: tuple[int, int, int] | None = None, train: Tensor | None = None, quick: bool = True,
    labels: Tensor | None = None, seed: int = 0, dtype: torch.dtype | None = None, device: Any = None,
    families: Any = None, methods: dict[str, Any] | None = None,
) -> list[Contender]:
    """The default comparison's memories (module docstring) for items of dimension ``dim``.

    ``train`` (``[M, dim]`` in ``[0, 1]``, disjoint from the stored items) trains the latent
    memory's VAE and the attention readers; without it those three are left out.  ``labels``
    (``[M]`` integer classes of the rows of the data given to :func:`~varmem.compare`) define the
    correlated dense memory's graph; without them it is left out.  ``families`` picks a subset of
    :data:`FAMILIES`; ``methods`` (``{family: [method, ...]}``) replaces the read methods of some
    (any of the class's ``methods``; default: the ones in the module docstring).
    """
    wanted = FAMILIES if families is None else tuple(families)
    unknown = sorted(set(wanted) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown memories {unknown}; choose from {', '.join(FAMILIES)}")
    chosen_methods = check_methods(methods)
    kw = {"dtype": dtype, "device": device}
    h = 256
    out: dict[str, Contender] = {}

    out["kde"] = Contender("kde", lambda d: KernelDensityMemory(d, bandwidth=0.1, noise_scale=0.2, **kw),
                           methods=("exact",), key="s0.1-sigma0.2", note="KernelDensityMemory(s=0.1, σ=0.2)")
    out["nonparametric"] = Contender(
        "nonparametric", lambda d: NonparametricMemory(d, alpha=1.0, bandwidth=0.1, noise_scale=0.2, **kw),
        methods=("exact",), key="a1-s0.1-sigma0.2", note="NonparametricMemory(α=1, s=0.1, s₀=1, σ=0.2, crp_map)")
    if train is not None:
        steps = 2000

        def latent(d: int) -> LatentMemory:
            memory = LatentMemory(image_shape or d, code_dim=16, hidden=(256,), bandwidth=0.5, noise_scale=0.2, **kw)
            memory.fit_autoencoder(train.to(memory.device, memory.dtype), num_steps=steps, batch_size=100, lr=3e-3,
                                   seed=seed, progress=False)
            return memory

        out["latent"] = Contender("latent", latent, methods=("fixed_point", "hybrid"),
                                  options={"fixed_point": {"max_steps": 10},
                                           "hybrid": {"max_steps": 200}},
                                  key=f"vae784-256-16-steps{steps}-s0.5-seed{seed}-{len(train)}",
                                  note=f"LatentMemory(dense 784-256-16 VAE, {steps} SVI steps, s=0.5)")
    out["gpcn"] = Contender(
        "gpcn", lambda d: PredictiveCodingMemory(d, n_layers=4, h_dim=h, sigma_obs=0.01, training="online",
                                                 T_infer=500, seed=seed, **kw),
        methods=("pc",), options={"pc": {"seed": seed}}, key=f"L4-h{h}-online-T500-rtol1e-6",
        note=f"PredictiveCodingMemory(L=4, h={h}, σ=0.01, online)")
    out["bayespcn"] = Contender(
        "bayespcn", lambda d: BayesPCN(d, n_layers=4, h_dim=h, sigma_obs=0.01, T_infer=500,
                                       seed=seed, **kw),
        methods=("pc",), options={"pc": {"seed": seed}}, key=f"L4-h{h}-K1-T500-rtol1e-6",
        note=f"BayesPCN(L=4, h={h}, σ=0.01, K=1, T=500, rtol=1e-6)")
    spin_method = "sync" if quick else "async"
    spin_options = {"sync": {"max_steps": 20}, "async": {"max_steps": 20, "seed": seed}}
    out["classical"] = Contender("classical", lambda d: ClassicalHopfield(d, rule="hebbian", **kw),
                                 methods=(spin_method,), options=spin_options, key=f"hebbian-{spin_method}",
                                 note=f"ClassicalHopfield(hebbian), {spin_method}, binarised items")
    out["dense"] = Contender("dense", lambda d: DenseAssociativeMemory(d, interaction="exponential", beta=1.0, **kw),
                             methods=(spin_method,), options=spin_options, key=f"exp-beta1-{spin_method}",
                             note=f"DenseAssociativeMemory(exponential, β=1), {spin_method}, binarised")
    if labels is not None:
        def same_class(memory: CorrelatedDenseMemory, rows: Tensor) -> None:
            held = labels.to(rows.device)[rows]
            graph = (held[:, None] == held[None, :]).to(memory.dtype)
            memory.set_graph(graph.fill_diagonal_(0))

        out["cdam"] = Contender("cdam", lambda d: CorrelatedDenseMemory(d, a=1.0, h=0.2, beta=1.0, **kw),
                                methods=("fixed_point",), after_write=same_class, key="a1-h0.2-beta1-class-graph",
                                note="CorrelatedDenseMemory(a=1, h=0.2, β=1, same-class graph, row-normalised)")
    out["modern"] = Contender("modern", lambda d: ModernHopfield(d, beta=0.2, **kw), methods=("fixed_point",),
                              key="dot-beta0.2", note="ModernHopfield(dot, β=0.2 on [-1, 1] items), one update")
    out["random_features"] = Contender(
        "random_features",
        lambda d: RandomFeatureMemory(d, beta=25.0 / d, num_features=4096, step_size=0.5,
                                      seed=seed, **kw),
        methods=("fixed_point",), options={"fixed_point": {"max_steps": 20, "tol": 0.0}},
        key=f"beta25/D-Y4096-seed{seed}", note="RandomFeatureMemory(β=25/D, SinCos features, α=0.5)")
    out["kernelized"] = Contender(
        "kernelized", lambda d: KernelizedHopfield(d, beta=1 / math.sqrt(d), feature_map="linear", seed=seed, **kw),
        methods=("fixed_point",), options={"fixed_point": {"max_steps": 1}},
        after_write=lambda m, _rows: m.fit(steps=20, lr=0.01, seed=seed) if len(m) >= 2 else None,
        key=f"linear-beta1/sqrtD-fit20-lr0.01-seed{seed}", note="KernelizedHopfield(linear Φ, β=1/√D, U-Hop+ 20 steps)")
    out["mixture"] = Contender("mixture", lambda d: MixtureHopfieldMemory(d, sigma=0.01, metric="dot", **kw),
                               methods=("fixed_point",), key="sigma0.01-dot", note="MixtureHopfieldMemory(σ=0.01, dot)")
    if train is not None:
        epochs = 20

        def reader(cls: type, lr: float):
            def build(d: int) -> Any:
                memory = cls(d, **kw)
                memory.fit(train.to(memory.device, memory.dtype), epochs=epochs, memory_size=100, lr=lr, seed=seed)
                return memory

            return build

        out["memn2n"] = Contender("memn2n", reader(MemN2N, 2e-5), methods=("attention",),
                                  key=f"epochs{epochs}-lr2e-5-seed{seed}-{len(train)}",
                                  note=f"MemN2N(annabi), {epochs} epochs, lr 2e-5")
        out["ntm"] = Contender("ntm", reader(NTM, 1e-6), methods=("attention",),
                               key=f"epochs{epochs}-lr1e-6-seed{seed}-{len(train)}",
                               note=f"NTM(annabi), {epochs} epochs, lr 1e-6")
    for name, read_methods in chosen_methods.items():
        if name in out:
            out[name].methods = read_methods
    return [out[name] for name in wanted if name in out]
