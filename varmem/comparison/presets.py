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
                       write, Adam 0.01, T = 500 (early stop rtol 1e-5 over 100-step windows)
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

Selectable, not in the default run (:data:`OPTIONAL_FAMILIES`; e.g. ``varmem compare --memories spiking``):

=====================  ==========================================================================
firing rate            Betteti et al.'s official settings: logistic ``ρ = 4.8``, ``x* = 0.2``, fields
                       ``a = -0.3``, ``b = 0.95`` (``γ < 0``), coding level estimated from the
                       stored items (binarised at ½), Euler ``dt = 0.01`` to ``t = 10``
spiking low-rank       ``SpikingLowRankMemory``: **our reconstruction** of Podlaski & Machens
                       (2024), whose paper body was not readable; pseudo-inverse latent weights
                       (binarised digits are strongly correlated: Hebbian weights fail on them as
                       the classical network's do), read by the latent (box) engine, at most 300
                       Euler steps of ``dt = 1 ms``; ``--methods spiking=spiking`` runs the
                       spiking network (every neuron above threshold spikes: one spike per step
                       cannot hold a 784-dimensional box at ``dt = 0.1 ms``), 1000 steps
entropic               :class:`~varmem.EntropicMemory` as the CIFAR paper configures its W-EAM:
                       one weighted register, ``m = 16`` rows, ``σ = 0.025``, ``ι = κ = ξ = 0``
                       (Hernández, Morales & Pineda 2024, README's 1024 × 16 memory), on pixels in
                       ``[0, 1]`` (its value domain: the register quantises a fixed range, and pixel
                       intensities are already in it); read ``beta`` (the EAM's β-retrieval; a
                       rejected cue comes back as the register reads it) and selectable ``exact``.
                       The EAM constructs an object column by column rather than returning a
                       stored one, so exact recall is not what it is for
diffusion              reverse-time VE diffusion with the ideal score of the stored items on
                       ``[-1, 1]`` items, ``σ`` 20 → 0.01 in 50 probability-flow steps, the cue
                       as evidence with ``ν = 0.2`` (exact posterior conditioning): Hoover et
                       al. 2023's correspondence
sparse recovery        learned span of the stored items (``max_rank = D - 1``), ℓ1 decoding by ADMM (2000
                       steps; the LP reader is exact but one HiGHS program per cue).  On images
                       the comparison is only partly meaningful: masked cues (``drop``,
                       ``mask``) are erasures, decoded exactly while the observed pixels pin the
                       item down within the span (``N`` below the observed count), and dense
                       white noise is only projected onto the span (its error is not sparse);
                       the memory's regime, a few gross errors, is not among the corruptions,
                       and it recalls the span rather than a list (a blend of stored digits in
                       the span is a valid read).  Generic ℓ1 memory after Mazumdar & Rawat
                       2015, whose own algorithm is unverified
linear / MLP AM        Nichani, Lee & Bietti's
                       associative memories: the item's direction is its key, a frozen random
                       128-dim output code per item, ``F`` trained with cross-entropy (Adam, to 99 %
                       recall of the stored items), read ``categorical`` (the arg-max stored item);
                       MLP width 128
composed PC network    :class:`~varmem.PCNetMemory` over a dense ``PCNet`` 256 → 256 → D (relu,
                       pre-synaptic, biases, Gaussian nodes of σ = 1, top prior ``N(0, 1)``):
                       every write re-fits all stored items, 100 epochs of T = 20 SGD(0.1)
                       inference steps and Adam(1e-3) weight steps (PCX's choice of optimisers);
                       read ``pcnet`` with 200 Adam(0.05) steps, the joint relaxation for partial
                       cues and clamp-and-predict for noisy ones.  Our settings, measured on MNIST
                       written at once (accuracy at MSE < 0.01 in [0, 1] units, drop 0.5 / white
                       0.2): N = 30 1.00 / 1.00; N = 100 0.95 / 0.27 (200 epochs: 1.00 / 1.00 at
                       twice the training time)
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
    SpikingLowRankMemory,
)
from ..memories import (
    BayesPCN,
    DiffusionMemory,
    EntropicMemory,
    FiringRateMemory,
    KernelDensityMemory,
    LatentMemory,
    LinearAssociativeMemory,
    MLPAssociativeMemory,
    NonparametricMemory,
    PCNetMemory,
    PredictiveCodingMemory,
    SparseRecoveryMemory,
)
from .run import Contender

__all__ = ["default_contenders", "check_methods", "FAMILIES", "OPTIONAL_FAMILIES", "ALL_FAMILIES", "FAMILY_CLASSES"]

FAMILIES = ("kde", "nonparametric", "latent", "gpcn", "bayespcn", "classical", "dense", "cdam", "modern",
            "random_features", "kernelized", "mixture", "memn2n", "ntm")
"""Names of the default contenders, in the order of the table and the figures."""

OPTIONAL_FAMILIES = ("firing_rate", "spiking", "entropic", "diffusion", "sparse_recovery", "linear_am",
                     "mlp_am", "pcnet")
"""Memories that ``varmem compare`` runs only when named (``--memories``), not in the default run:
the firing-rate memory of Betteti et al. (its read integrates 1000 Euler steps, about 25 ms per MNIST
cue on one core, and its covariance rule is made for random patterns, not correlated digits), the
spiking low-rank memory (a reconstruction), the entropic memory (it constructs an object column by
column rather than returning a stored one), and the diffusion memory (its 50-step
reverse process costs about 50 times a kernel-density read and recalls the same), and the sparse-recovery
memory (its regime, a few gross errors, is not among the image corruptions), and the linear and MLP
associative memories of Nichani et al. (a trained write per memory size costs seconds), and the composed
predictive-coding network (every write re-trains it on all stored items: about 7 s for 30 MNIST digits)."""

ALL_FAMILIES = FAMILIES + OPTIONAL_FAMILIES
"""Every memory name ``varmem compare`` accepts."""

FAMILY_CLASSES: dict[str, type] = {
    "kde": KernelDensityMemory, "nonparametric": NonparametricMemory, "latent": LatentMemory,
    "gpcn": PredictiveCodingMemory, "bayespcn": BayesPCN, "classical": ClassicalHopfield,
    "dense": DenseAssociativeMemory, "cdam": CorrelatedDenseMemory, "modern": ModernHopfield,
    "random_features": RandomFeatureMemory, "kernelized": KernelizedHopfield, "mixture": MixtureHopfieldMemory,
    "memn2n": MemN2N, "ntm": NTM, "firing_rate": FiringRateMemory, "spiking": SpikingLowRankMemory,
    "entropic": EntropicMemory, "diffusion": DiffusionMemory,
    "sparse_recovery": SparseRecoveryMemory, "linear_am": LinearAssociativeMemory, "mlp_am": MLPAssociativeMemory,
    "pcnet": PCNetMemory,
}
"""The memory class of each family (its ``methods`` are the read methods a family can be given)."""


def check_methods(methods: Any, families: Any = ALL_FAMILIES) -> dict[str, tuple[str, ...]]:
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
    :data:`ALL_FAMILIES` (default: :data:`FAMILIES`); ``methods`` (``{family: [method, ...]}``)
    replaces the read methods of some (any of the class's ``methods``; default: the ones in the
    module docstring).
    """
    wanted = FAMILIES if families is None else tuple(families)
    unknown = sorted(set(wanted) - set(ALL_FAMILIES))
    if unknown:
        raise ValueError(f"unknown memories {unknown}; choose from {', '.join(ALL_FAMILIES)}")
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
        methods=("pc",), options={"pc": {"seed": seed}}, key=f"L4-h{h}-K1-T500-rtol1e-5-w100",
        note=f"BayesPCN(L=4, h={h}, σ=0.01, K=1, T=500, rtol=1e-5, window=100)")
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
    out["firing_rate"] = Contender(
        "firing_rate", lambda d: FiringRateMemory(d, **kw), methods=("rate_dynamics",),
        options={"rate_dynamics": {"trace": False}}, key="logistic-rho4.8-x0.2-a-0.3-b0.95-t10-dt0.01",
        note="FiringRateMemory(logistic ρ = 4.8, x* = 0.2, a = -0.3, b = 0.95, q estimated; items binarised at ½), "
             "Euler dt = 0.01 to t = 10 (Betteti et al.'s official settings)")
    out["spiking"] = Contender(
        "spiking", lambda d: SpikingLowRankMemory(d, rule="pseudoinverse", **kw), methods=("latent",),
        options={"latent": {"max_steps": 300, "trace": False},
                 "spiking": {"one_spike_per_step": False, "trace": False}},
        key="pinv-latent300-dt1ms", note="SpikingLowRankMemory(pseudo-inverse; a reconstruction), latent read")
    out["entropic"] = Contender(
        "entropic", lambda d: EntropicMemory(d, rows=16, sigma=0.025, **kw), methods=("beta",),
        options={"beta": {"seed": seed}}, key=f"w-m16-sigma0.025-seed{seed}",
        note="EntropicMemory(weighted, m=16, σ=0.025, ι=κ=ξ=0), β-retrieval")
    out["diffusion"] = Contender(
        "diffusion", lambda d: DiffusionMemory(d, sigma_min=0.01, sigma_max=20.0, noise_scale=0.2, **kw),
        methods=("diffusion",), options={"diffusion": {"num_steps": 50, "seed": seed}},
        key=f"ideal-smin0.01-smax20-nu0.2-K50-seed{seed}",
        note="DiffusionMemory(ideal score, σ 20 → 0.01, ν=0.2, 50 ODE steps, posterior conditioning)")
    out["sparse_recovery"] = Contender(
        "sparse_recovery", lambda d: SparseRecoveryMemory(d, max_rank=d - 1, **kw), methods=("admm",),
        options={"admm": {"max_steps": 2000}}, key="span-admm2000",
        note="SparseRecoveryMemory(span of the stored items, l1 decoding by ADMM, 2000 steps)")
    out["linear_am"] = Contender(
        "linear_am", lambda d: LinearAssociativeMemory(d, code_dim=128, seed=seed, **kw), methods=("categorical",),
        key=f"trained-code128-seed{seed}", note="LinearAssociativeMemory(trained CE, 128-dim codes)")
    out["mlp_am"] = Contender(
        "mlp_am", lambda d: MLPAssociativeMemory(d, hidden=128, code_dim=128, seed=seed, **kw),
        methods=("categorical",), key=f"trained-m128-code128-seed{seed}",
        note="MLPAssociativeMemory(trained CE, m=128, 128-dim codes)")
    out["pcnet"] = Contender(
        "pcnet", lambda d: PCNetMemory.dense(d, hidden=(h, h), epochs=100, T=20, x_optimizer="sgd", x_lr=0.1,
                                             w_optimizer="adam", w_lr=1e-3, seed=seed, **kw),
        methods=("pcnet",), options={"pcnet": {"optimizer": "adam", "lr": 0.05, "max_steps": 200, "seed": seed}},
        key=f"dense-h{h}x2-relu-e100-T20-sgd0.1-adam1e-3-read200-seed{seed}",
        note=f"PCNetMemory(dense {h}-{h}-D relu, offline 100 x 20, SGD 0.1 / Adam 1e-3; read Adam 0.05 x 200)")
    for name, read_methods in chosen_methods.items():
        if name in out:
            out[name].methods = read_methods
    return [out[name] for name in wanted if name in out]
