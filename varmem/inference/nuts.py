"""``"nuts"``: posterior draws with ``pyro.infer.MCMC(NUTS)``, one mode at a time.

The posterior of a memory whose prior is a mixture over its ``J`` stored items is a mixture too,

    p(z | x, M) = Σ_i p(i | x, M) · p(z | x, i, M),       p(z | x, i) ∝ p_i(z) p(x | z),

with one well-separated mode per item once the bandwidth is small.  NUTS on ``memory.model``
stays in the mode it starts in, so its draws carry whatever mode weights its start gives them.
This engine samples the mixture the way it is written: the item ``i`` from its weight
``p(i | x)``, and ``z`` within component ``i`` by NUTS on ``memory.mixture_model`` with the item
site conditioned (a unimodal target for Gaussian components).  The weights are

* ``modes="exact"``: the closed form ``memory.posterior(cue, mask).log_weights``
  (:class:`~varmem.capabilities.ClosedFormPosterior`);
* ``modes="importance"``: estimated per mode, ``p(i | x) ∝ Ẑ_i`` with
  ``Ẑ_i = (1/K) Σ_k p(x, z_k, i) / q_i(z_k)``, ``z_k ~ q_i``, ``q_i`` a diagonal Gaussian fitted to
  the NUTS draws of mode ``i`` with its scale widened by 1.1 (unbiased for each ``Z_i``; its
  standard error is reported);
* ``modes="none"``: plain NUTS on ``memory.model`` from ``init`` (correct only for a unimodal
  posterior: the negative control, and the read of memories without a mixture prior).
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, ClassVar, Iterator, Protocol, runtime_checkable

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_value
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch import Tensor

from ..capabilities import ClosedFormPosterior, ItemWeights, PyroModel
from ..engine import engine
from ..helpers import WEIGHTS_LIMIT
from ..retrieval import Retrieval
from ..validation import check_bool, check_choice, check_int, check_number, check_positive_int, check_seed

__all__ = ["retrieve_nuts", "ItemMixtureModel", "MODES", "IMPORTANCE_WIDENING", "SCREEN_NATS"]

MODES = ("auto", "exact", "importance", "none")
"""Values of the ``modes`` option (module docstring)."""

IMPORTANCE_WIDENING = 1.1
"""Scale factor of the importance proposal over the NUTS draws' standard deviation."""

SCREEN_NATS = 30.0
"""``"importance"`` runs chains only in modes whose screening score is within this many nats of the
cue's best (a weight ratio below ``e^-30 ≈ 1e-13`` on the score; see :func:`_screen`)."""


@runtime_checkable
class ItemMixtureModel(Protocol):
    """A Pyro model with the mixture component as a discrete site (what mode-split NUTS needs).

    ``mixture_model(cue, mask)`` samples ``i ~ Categorical(π)`` at ``item_site`` (``[B]``), then the
    latent ``z ~ p_i(z)`` and the cue, under the plate ``"cues"``; summing out ``i`` gives
    ``model``.  ``mixture_size()`` is the number of components ``J`` (None if the prior is not a
    mixture).  :class:`varmem.PriorLikelihoodMemory` provides both.
    """

    item_site: ClassVar[str]

    def mixture_size(self) -> int | None: ...

    def mixture_model(self, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor: ...


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run the block with ``dtype`` as torch's default floating dtype, then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _run_chains(
    model: Callable[..., Any], args: tuple, site: str, starts: list[Tensor], *, num_samples: int, warmup_steps: int,
    accept: float, max_tree_depth: int, progress: bool,
) -> tuple[Tensor, list[MCMC]]:
    """``[C, S, ...]`` draws of ``site`` from one NUTS chain per start (run one after another)."""
    draws, runs = [], []
    for z0 in starts:
        kernel = NUTS(model, init_strategy=init_to_value(values={site: z0}), target_accept_prob=accept,
                      max_tree_depth=max_tree_depth)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        mcmc.run(*args)
        draws.append(mcmc.get_samples()[site].detach())
        runs.append(mcmc)
    return torch.stack(draws), runs


def _diagnostics(chains: Tensor) -> tuple[Tensor, Tensor]:
    """``(split r_hat, ESS)`` per coordinate of ``chains [C, S, ...]`` (r_hat NaN below 4 draws)."""
    ess = effective_sample_size(chains, chain_dim=0, sample_dim=1)
    if chains.shape[1] < 4:
        return torch.full_like(ess, math.nan), ess
    return split_gelman_rubin(chains, chain_dim=0, sample_dim=1), ess


def _pair_rows(mask: Tensor | None, cue: Tensor, rows: Tensor) -> Tensor | None:
    """The mask of the cues ``rows`` (a shared ``[D]`` mask stays as it is)."""
    return mask if mask is None or mask.dim() == 1 else mask.expand_as(cue)[rows]


def _log_joint(memory: ItemMixtureModel, site: str, cue: Tensor, mask: Tensor | None, item: Tensor,
               z: Tensor) -> Tensor:
    """``log p(x_p, z, i_p | M)`` for ``z [K, P, L]`` and pairs ``(cue [P, D], item [P])`` → ``[K, P]``."""
    K, P, L = z.shape
    data = {memory.item_site: item.repeat(K), site: z.reshape(K * P, L)}
    rep_mask = mask if mask is None or mask.dim() == 1 else mask.repeat(K, 1)
    tr = poutine.trace(poutine.condition(memory.mixture_model, data=data)).get_trace(cue.repeat(K, 1), rep_mask)
    tr.compute_log_prob()
    total = sum(node["log_prob"] for node in tr.nodes.values() if node["type"] == "sample")
    return total.reshape(K, P)


def _screen(memory: Any, site: str, cue: Tensor, mask: Tensor | None, z0: Tensor, B: int, J: int) -> Tensor:
    """``[B, J]`` a cheap score of each mode: the log joint ``log p(x, z = c_i, i)`` at the centre ``c_i``
    (mean) of component ``i``, i.e. how well item ``i`` itself explains the cue; where the components
    have no finite mean, the log responsibilities ``log π_i p_i(z0)`` at the start state."""
    prior = memory.prior()
    centres = prior.component_distribution.mean  # [J, L]
    if not bool(torch.isfinite(centres).all()):
        return prior.mixture_distribution.logits + prior.component_distribution.log_prob(z0.unsqueeze(-2))
    rows = torch.arange(B, device=cue.device).repeat_interleave(J)
    items = torch.arange(J, device=cue.device).repeat(B)
    z = centres[items].unsqueeze(0)  # [1, B·J, L]
    return _log_joint(memory, site, cue[rows], _pair_rows(mask, cue, rows), items, z).reshape(B, J)


@engine("nuts", requires=(PyroModel,))
def retrieve_nuts(
    memory: PyroModel,
    cue: Tensor,
    mask: Tensor | None,
    *,
    num_samples: int = 500,
    warmup_steps: int = 300,
    num_chains: int = 2,
    modes: str = "auto",
    max_modes: int = 32,
    importance_samples: int = 1000,
    init: str | Tensor = "cue",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    seed: int | None = None,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Sample ``p(z | x, M)`` with NUTS, the mixture's item drawn from its weight and ``z`` sampled
    within it (module docstring); all cues and modes jointly (their posteriors are independent,
    so one state vector holds them all), ``num_chains`` chains one after another.

    ``samples`` is ``[S, B, L]``: for each cue, ``S`` items drawn from ``p(i | x)`` and for each a
    distinct within-mode draw (from the ``C·⌈S/C⌉`` draws of that mode's chains); so the fraction
    of draws in mode ``i`` is a multinomial estimate of ``p(i | x)``.  ``pattern`` is the decoded
    sample mean; ``variance`` the sample variance; ``weights`` the responsibilities averaged over
    samples, ``E[p(i | z, M) | x]`` (``weights_at = "samples"``).  ``converged`` is None.

    ``info``: ``"modes"`` the strategy used; ``"mode_weights"`` ``[B, J]`` the ``p(i | x)`` the items
    were drawn from (exact or estimated); ``"pairs"`` ``[P, 2]`` the (cue, item) pairs sampled;
    ``"chains"`` ``[C, ⌈S/C⌉, P, L]`` their chains; ``"mode_r_hat"`` / ``"mode_ess"`` ``[P, L]`` split
    r_hat and effective sample size of each mode's chains; ``"r_hat"`` ``[B, L]`` the worst
    (largest) over a cue's modes; ``"ess"`` ``[B, L]`` the effective sample size of the pooled mean,
    ``Var[z] / Var[mean]`` with ``Var[mean] = Var[z]/S + Σ_i w_i² σ_i² (1/ESS_i - 1/(C⌈S/C⌉))`` (the
    items drawn independently, each mode's draws a random subset of its chains);
    ``"dropped_mass"`` ``[B]`` the weight of modes left out by ``max_modes``; ``"log_mass"`` and
    ``"log_mass_se"`` ``[B, J]`` (``"importance"``) the log mode masses ``log Ẑ_i`` and their
    standard errors; ``"mcmc"`` the ``MCMC`` objects (for ArviZ).  With ``modes="none"`` the
    chains are ``[C, ⌈S/C⌉, B, L]``, ``samples`` their first ``S`` draws, and r_hat / ESS are per
    cue directly.

    Options:
        num_samples: draws returned, ``S ≥ 2`` in all (each chain keeps ``max(2, ⌈S/C⌉)``; r_hat
            needs 4 per chain and is NaN below).
        warmup_steps: adaptation steps of each chain.
        num_chains: chains per mode, ``C ≥ 1`` (4 makes r_hat more telling, at twice the warm-up
            cost of the default 2); each starts at a draw from the mode's prior component
            (over-dispersed, as r_hat wants).
        modes: ``"auto"`` (``"exact"`` with a closed-form posterior, ``"importance"`` for another
            mixture prior, ``"none"`` without one), ``"exact"``, ``"importance"`` or ``"none"``.
        max_modes: at most this many modes per cue: the most probable (``"exact"``), or those whose
            component centres ``c_i`` explain the cue best, by ``log p(x, z = c_i, i)``
            and are within :data:`SCREEN_NATS` of the best (``"importance"``, which runs chains in
            all of them); the weight of the rest is reported as ``dropped_mass`` (``"exact"``; a
            warning above 1e-3) or taken as 0, not estimated (``"importance"``: the score ignores
            each mode's width, so this is a heuristic for components of similar spread).
        importance_samples: proposal draws per mode for ``"importance"``.
        init: start of ``modes="none"`` (``"cue"``, ``"prior_mean"``, ... or a ``[B, L]`` tensor);
            the mode-split reads start each chain in its mode instead.
        target_accept_prob, max_tree_depth: NUTS settings.
        seed: if given, the run is reproducible and leaves the global RNG state untouched.
        return_weights: keep the ``[B, N]`` averaged responsibilities (None = if small).
        progress: show Pyro's progress bar.
    """
    num_samples = check_int(num_samples, "option num_samples", minimum=2)
    warmup_steps = check_int(warmup_steps, "option warmup_steps", minimum=0)
    num_chains = check_int(num_chains, "option num_chains", minimum=1)
    modes = check_choice(modes, "option modes", MODES)
    max_modes = check_int(max_modes, "option max_modes", minimum=1)
    importance_samples = check_int(importance_samples, "option importance_samples", minimum=2)
    check_positive_int(max_tree_depth, "option max_tree_depth")
    accept = check_number(target_accept_prob, "option target_accept_prob")
    if not 0 < accept < 1:
        raise ValueError(f"option target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
    seed = check_seed(seed, "option seed", allow_none=True)
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    z0 = memory.init_latent(cue, mask, init).detach()
    site = memory.latent_site

    J = memory.mixture_size() if isinstance(memory, ItemMixtureModel) else None
    closed = isinstance(memory, ClosedFormPosterior)
    if modes == "auto":
        modes = "none" if J is None or J < 2 else ("exact" if closed else "importance")
    if modes != "none" and J is None:
        raise ValueError(f"option modes={modes!r} needs a memory whose prior is a mixture over its items "
                         f"(mixture_model / mixture_size); {type(memory).__name__} has none: use modes='none'")
    if modes == "exact" and not closed:
        raise ValueError(f"option modes='exact' needs a closed-form posterior; {type(memory).__name__} has none: "
                         "use modes='importance'")

    per_chain = max(2, -(-num_samples // num_chains))  # the ESS needs two draws per chain
    settings = dict(num_samples=per_chain, warmup_steps=warmup_steps, accept=accept, max_tree_depth=max_tree_depth,
                    progress=progress)
    rng = nullcontext()
    if seed is not None:
        devices = [cue.device] if cue.device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices)
    with rng, _default_dtype(cue.dtype):  # Pyro's adaptation builds its tensors in the default dtype
        if seed is not None:
            torch.manual_seed(seed)
        if modes == "none":
            chains, runs = _run_chains(memory.model, (cue, mask), site, [z0] * num_chains, **settings)
            samples = chains.reshape(-1, *chains.shape[2:])[:num_samples]
            r_hat, ess = _diagnostics(chains)
            info: dict[str, Any] = {"modes": "none", "chains": chains, "r_hat": r_hat, "ess": ess, "mcmc": runs}
        else:
            samples, info = _mode_split(memory, cue, mask, z0, modes, J, num_chains, num_samples, max_modes,
                                        importance_samples, settings)

    weights = index = None
    if return_weights is not False and isinstance(memory, ItemWeights):
        S, B, L = samples.shape
        with torch.no_grad():
            w, _ = memory.item_weights(samples.reshape(S * B, L), True if return_weights is None else return_weights)
        if w is not None:
            weights = w.reshape(S, B, -1).mean(0)
            index = weights.argmax(-1)
            if return_weights is None and weights.numel() > WEIGHTS_LIMIT:
                weights = None
    mean = samples.mean(0)
    return Retrieval(
        pattern=memory.decode(mean),
        method="nuts",
        code=mean,
        weights=weights,
        weights_at="samples",
        index=index,
        variance=samples.var(0),
        samples=samples,
        steps=num_chains * (per_chain + warmup_steps),
        info=info,
    )


def _mode_split(
    memory: Any, cue: Tensor, mask: Tensor | None, z0: Tensor, modes: str, J: int, C: int, n: int, max_modes: int,
    importance_samples: int, settings: dict[str, Any],
) -> tuple[Tensor, dict[str, Any]]:
    """Pooled draws ``[n, B, L]`` and the info of a mode-split read (see :func:`retrieve_nuts`)."""
    site, B = memory.latent_site, cue.shape[0]
    drawn = C * settings["num_samples"]  # within-mode draws per mode, at least n
    k = min(max_modes, J)
    info: dict[str, Any] = {"modes": modes}
    if modes == "exact":
        log_w = memory.posterior(cue, mask, return_weights=True).log_weights
        if log_w is None or tuple(log_w.shape) != (B, J):
            raise ValueError(f"the closed-form posterior's log_weights must be [B={B}, J={J}] (one per mixture "
                             f"component), got {None if log_w is None else tuple(log_w.shape)}")
        top, top_index = log_w.topk(k, dim=-1)
        kept = top.logsumexp(-1)
        info["dropped_mass"] = (-kept.exp()).add(1).clamp_min(0)
        if float(info["dropped_mass"].max()) > 1e-3:
            warnings.warn(f"nuts: max_modes={max_modes} leaves out modes of posterior weight up to "
                          f"{float(info['dropped_mass'].max()):.3g}; draws come from the {k} most probable modes",
                          UserWarning, stacklevel=4)
        labels = top_index.gather(-1, dist.Categorical(logits=top).sample((n,)).T).T  # [n, B]
        info["mode_weights"] = log_w.exp()
        pairs = torch.stack(torch.meshgrid(torch.arange(B, device=cue.device), torch.arange(J, device=cue.device),
                                           indexing="ij"), -1).reshape(-1, 2)
        hit = torch.zeros(B, J, dtype=torch.bool, device=cue.device)
        hit.scatter_(1, labels.T, True)
        pairs = pairs[hit.reshape(-1)]
    else:  # importance: chains in the k modes whose centres explain the cue best, then their masses
        score = _screen(memory, site, cue, mask, z0, B, J)
        top, ranked = score.topk(k, dim=-1)  # [B, k]
        keep = top >= top[:, :1] - SCREEN_NATS
        rows_k = torch.arange(B, device=cue.device).unsqueeze(-1).expand(B, k)
        pairs = torch.stack([rows_k[keep], ranked[keep]], -1)
    rows, items = pairs[:, 0], pairs[:, 1]
    cue_p, mask_p = cue[rows], _pair_rows(mask, cue, rows)
    model = poutine.condition(memory.mixture_model, data={memory.item_site: items})
    starts = [poutine.trace(model).get_trace(cue_p, mask_p).nodes[site]["value"].detach() for _ in range(C)]
    chains, runs = _run_chains(model, (cue_p, mask_p), site, starts, **settings)  # [C, S, P, L]
    P, L = pairs.shape[0], chains.shape[-1]
    flat = chains.reshape(drawn, P, L)

    if modes == "importance":
        loc, scale = flat.mean(0), flat.std(0).clamp_min(1e-12) * IMPORTANCE_WIDENING
        q = dist.Normal(loc, scale).to_event(1)
        z = q.sample((importance_samples,))  # [K, P, L]
        log_ratio = _log_joint(memory, site, cue_p, mask_p, items, z) - q.log_prob(z)  # [K, P]
        log_mass = log_ratio.logsumexp(0) - math.log(importance_samples)
        ratio = (log_ratio - log_mass).exp()  # w_k / Ẑ
        se = ratio.std(0) / math.sqrt(importance_samples)  # delta method: se of log Ẑ
        full = cue.new_full((B, J), -math.inf)
        full[rows, items] = log_mass
        full_se = cue.new_full((B, J), math.nan)
        full_se[rows, items] = se
        log_w = full - full.logsumexp(-1, keepdim=True)
        info.update(log_mass=full, log_mass_se=full_se, mode_weights=log_w.exp())
        labels = dist.Categorical(logits=log_w).sample((n,))  # [n, B]

    samples = cue.new_empty(n, B, L)
    for p in range(P):
        b, i = int(rows[p]), int(items[p])
        where = (labels[:, b] == i).nonzero().squeeze(-1)
        samples[where, b] = flat[torch.randperm(drawn, device=cue.device)[: where.numel()], p]

    mode_r_hat, mode_ess = _diagnostics(chains)  # [P, L]
    r_hat = cue.new_full((B, L), -math.inf).scatter_reduce(0, rows.unsqueeze(-1).expand(-1, L), mode_r_hat, "amax")
    # ESS of the pooled mean, Var[z] / Var[mean]: the items are drawn independently (Var_i[μ_i] / n) and
    # the n_i ≈ n w_i draws of mode i are a random subset of its `drawn` chain draws of effective size
    # ESS_i, so their mean has variance σ_i² (1/ESS_i + 1/n_i - 1/drawn); w over the modes run
    w = info["mode_weights"][rows, items].unsqueeze(-1)  # [P, 1]
    w = w / torch.zeros(B, 1, dtype=w.dtype, device=w.device).index_add(0, rows, w)[rows]
    mu, var = flat.mean(0), flat.var(0)
    mean = torch.zeros(B, L, dtype=mu.dtype, device=mu.device).index_add(0, rows, w * mu)
    between = torch.zeros_like(mean).index_add(0, rows, w * (mu - mean[rows]) ** 2)
    within = torch.zeros_like(mean).index_add(0, rows, w * var)
    chain_part = (1 / mode_ess - 1 / drawn).clamp_min(0)
    error = (between + within) / n + torch.zeros_like(mean).index_add(0, rows, w**2 * var * chain_part)
    info.update(pairs=pairs, chains=chains, mode_r_hat=mode_r_hat, mode_ess=mode_ess, r_hat=r_hat,
                ess=(between + within) / error, mcmc=runs)
    info.setdefault("dropped_mass", None)
    return samples, info

