"""ArviZ data from Pyro inference: MCMC, SVI guides, predictive draws, and memory retrievals.

:func:`to_inference_data` builds the nested ``{group: {variable: array}}`` dictionary itself and
hands it to ``arviz.from_dict``, so it works where ``arviz.from_pyro`` does not (SVI results) and
where it no longer exists (ArviZ ≥ 1.0, whose ``from_dict`` lives in ``arviz_base`` and returns an
``xarray.DataTree``).  Arrays carry the ArviZ sample dimensions ``(chain, draw, ...)``.

Groups (each present when its ingredients are):

==========================  ==================================================================
``posterior``               latent sites, ``[chain, draw, *site_shape]``; for a retrieval also
                            ``recalled`` (``[chain, draw, query]``: draws of *which* stored item
                            was recalled) and, with per-draw responsibilities, ``item_prob``
                            (``[chain, draw, query, item]``, ``p(i | z_s, M)``)
``posterior_predictive``    observed sites re-drawn given each posterior draw
``log_likelihood``          ``log p(x_obs | draw)`` per observation: the observed site's
                            ``log_prob`` (batch shape, event dims summed), ``[chain, draw, *batch]``
``observed_data``           the observed values
``constant_data``           ``observed`` (``[query, x_dim]``, bool): which entries of each cue
                            were observed, for a memory read with a mask
``prior``, ``prior_predictive``  draws of the model with nothing observed
``sample_stats``            ``diverging`` for NUTS/HMC runs
``item_posterior``          a retrieval's ``prob`` (``[query, item]``, ``p(i | x, M)``) and
                            ``index`` (``[query]``, the most probable item)
``mode_chains``             a mode-split NUTS read's chains within each sampled mode,
                            ``z`` ``[chain, draw, mode, z_dim]`` with the coordinates
                            ``mode_query`` / ``mode_item`` (the (cue, item) of each mode): what
                            R-hat, ESS, trace and rank plots are computed on
                            (``az.summary(data, group="mode_chains")``,
                            ``az.plot_trace(data.mode_chains)``)
==========================  ==================================================================

For a memory (``memory=``, or a model that is a memory's bound ``model``) the dimensions have one
naming on every path: ``query`` for the cues, ``z_dim`` for the latent's entries (``<site>_dim``),
``x_dim`` for the data entries, ``item`` for the stored items; the log-likelihood is one value per
cue (``[chain, draw, query]``, so that each cue is one observation for LOO).  Hidden entries of a
masked cue are ``NaN`` in ``observed_data`` and ``posterior_predictive`` (they were never
observed; ``constant_data.observed`` says which) and contribute nothing to the log-likelihood.
An exact read (no samples) of a memory with a closed-form posterior exports ``num_samples`` exact
draws of ``z`` (the item, then the Gaussian within it) and their log-likelihood.  A NUTS read
exports its pooled draws as ``posterior.z`` (one chain: they are a mixture over modes, not
chains); its chains are in ``mode_chains``, or, for ``modes="none"``, are ``posterior.z`` itself
(``[chain, draw, query, z_dim]``).

The log-likelihood is computed by us, one model trace per draw: each posterior draw of the latent
sites is substituted (``poutine.condition``), observed sites are turned back into samples
(``poutine.uncondition``), and the trace gives both the posterior predictive draw and
``fn.log_prob(observed value)`` (masked entries contribute 0, as in the model).
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.subsample_messenger import _Subsample
from torch import Tensor

from .capabilities import ClosedFormPosterior, ItemWeights
from .evidence import Evidence
from .memory import Memory
from .retrieval import Retrieval
from .validation import check_int, check_positive_int

__all__ = ["to_inference_data", "arviz_major_version", "evidence_elpd", "compare_evidence", "evidence_grid"]

RETRIEVAL_DIMS = {
    "recalled": ["query"],
    "item_prob": ["query", "item"],
    "prob": ["query", "item"],
    "index": ["query"],
}


def _arviz() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz 0.2x announces its 1.0 refactor on import
        import arviz

    return arviz


def arviz_major_version(az: Any = None) -> int:
    """The major version of the installed ArviZ (``az``: a module-like object, for tests)."""
    az = az or _arviz()
    return int(str(az.__version__).split(".")[0])


def _from_dict(
    az: Any,
    groups: dict[str, dict[str, np.ndarray]],
    extra: dict[str, Any],
    coords: dict | None,
    dims: dict | None,
) -> Any:
    """Call the ``from_dict`` of ArviZ 0.x or 1.x; add ``extra`` groups (``xarray.Dataset`` s).

    * ArviZ < 1: ``from_dict(posterior=..., log_likelihood=..., ..., coords=, dims=)`` →
      ``InferenceData``; extra groups through ``InferenceData.add_groups``.
    * ArviZ ≥ 1 (``arviz_base``): ``from_dict({group: {var: array}}, coords=, dims=)`` →
      ``xarray.DataTree``; extra groups become child nodes.
    """
    groups = {k: v for k, v in groups.items() if v}
    if arviz_major_version(az) >= 1:
        import xarray as xr

        tree = az.from_dict(groups, coords=coords, dims=dims)
        for name, dataset in extra.items():
            tree[name] = xr.DataTree(dataset=dataset)
        return tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "default dims chain and draw will be added"
        data = az.from_dict(**groups, coords=coords, dims=dims)
    if extra:
        data.add_groups(extra)
    return data


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu").numpy()


def _sites(trace: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(latent, observed)`` sample sites of a model trace (subsample, factor and deterministic
    sites left out of ``observed``; deterministic sites are reported as latents)."""
    latent, observed = {}, {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
            continue
        if site["infer"].get("_deterministic"):
            latent[name] = site
        elif site["is_observed"] or site["infer"].get("was_observed"):
            if type(site["fn"]).__name__ != "Unit":  # pyro.factor
                observed[name] = site
        else:
            latent[name] = site
    return latent, observed


def _posterior_from_guide(guide: Callable, args: tuple, kwargs: dict, num_samples: int) -> dict[str, Tensor]:
    """``{site: [1, S, *shape]}``: ``num_samples`` independent runs of the guide (no gradients)."""
    draws: dict[str, list[Tensor]] = {}
    with torch.no_grad():
        for _ in range(num_samples):
            trace = poutine.trace(guide).get_trace(*args, **kwargs)
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site["is_observed"] or isinstance(site["fn"], _Subsample):
                    continue
                if not site["infer"].get("is_auxiliary"):  # e.g. AutoMultivariateNormal's joint latent
                    draws.setdefault(name, []).append(site["value"].detach())
    return {k: torch.stack(v)[None] for k, v in draws.items()}


def _diverging(mcmc: Any, chains: int, draws: int) -> np.ndarray | None:
    try:
        divergences = mcmc.diagnostics().get("divergences")
    except Exception:  # diagnostics need >= 1 draw and a kernel that reports them
        return None
    if not isinstance(divergences, dict):
        return None
    out = np.zeros((chains, draws), dtype=bool)
    for c in range(chains):
        for i in divergences.get(f"chain {c}", []):
            if 0 <= int(i) < draws:
                out[c, int(i)] = True
    return out


def _run_draws(
    model: Callable, args: tuple, kwargs: dict, draws: dict[str, Tensor], want_ll: bool, want_pp: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """For each ``(chain, draw)``: condition the latents, uncondition the observations, trace.

    Returns ``(posterior_predictive, log_likelihood, deterministic)``, each ``{site: [C, S, ...]}``.
    """
    first = next(iter(draws.values()))
    chains, num = first.shape[:2]
    predictive: dict[str, list[Tensor]] = {}
    loglik: dict[str, list[Tensor]] = {}
    deterministic: dict[str, list[Tensor]] = {}
    free = poutine.uncondition(model)
    with torch.no_grad():
        for c in range(chains):
            for s in range(num):
                values = {k: v[c, s] for k, v in draws.items()}
                trace = poutine.trace(poutine.condition(free, data=values)).get_trace(*args, **kwargs)
                for name, site in trace.nodes.items():
                    if site["type"] != "sample" or isinstance(site["fn"], _Subsample):
                        continue
                    if site["infer"].get("_deterministic") and name not in draws:
                        deterministic.setdefault(name, []).append(site["value"])
                    elif site["infer"].get("was_observed") and type(site["fn"]).__name__ != "Unit":
                        if want_pp:
                            predictive.setdefault(name, []).append(site["value"])
                        if want_ll:
                            loglik.setdefault(name, []).append(site["fn"].log_prob(site["infer"]["obs"]))

    def stack(d: dict[str, list[Tensor]]) -> dict[str, Tensor]:
        return {k: torch.stack(v).reshape(chains, num, *v[0].shape) for k, v in d.items()}

    return stack(predictive), stack(loglik), stack(deterministic)


def _prior(model: Callable, args: tuple, kwargs: dict, num_samples: int) -> tuple[dict, dict]:
    latent: dict[str, list[Tensor]] = {}
    predictive: dict[str, list[Tensor]] = {}
    free = poutine.uncondition(model)
    with torch.no_grad():
        for _ in range(num_samples):
            trace = poutine.trace(free).get_trace(*args, **kwargs)
            lat, obs = _sites(trace)
            for name, site in lat.items():
                latent.setdefault(name, []).append(site["value"])
            for name, site in obs.items():
                predictive.setdefault(name, []).append(site["value"])
    return (
        {k: torch.stack(v)[None] for k, v in latent.items()},
        {k: torch.stack(v)[None] for k, v in predictive.items()},
    )


def _retrieval_groups(
    retrieval: Retrieval, memory: Any, num_samples: int, latent_site: str
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(posterior variables, item_posterior variables)`` of a retrieval (see the module docs)."""
    posterior: dict[str, Tensor] = {}
    item_posterior: dict[str, Tensor] = {}
    if retrieval.weights is not None:
        item_posterior["prob"] = retrieval.weights
    if retrieval.index is not None:
        item_posterior["index"] = retrieval.index
    probs = None
    if retrieval.samples is not None:
        samples = retrieval.samples  # [S, B, L]
        posterior[latent_site] = samples[None]
        if isinstance(memory, ItemWeights):
            S, B, L = samples.shape
            with torch.no_grad():
                w, _ = memory.item_weights(samples.reshape(S * B, L), True)
            probs = w.reshape(S, B, -1)  # p(i | z_s, M)
            posterior["item_prob"] = probs[None]
    if probs is None and retrieval.weights is not None:
        probs = retrieval.weights.expand(num_samples, *retrieval.weights.shape)  # exact p(i | x), one per draw
    if probs is not None:
        flat = probs.reshape(-1, probs.shape[-1]).clamp_min(0)
        item = torch.multinomial(flat, 1).reshape(probs.shape[:-1])  # i_s ~ p(i | z_s) or p(i | x)
        posterior["recalled"] = item[None]
    return posterior, item_posterior


def _with_exact_draws(retrieval: Retrieval, memory: Any, args: tuple, num_samples: int) -> Retrieval:
    """The retrieval with ``num_samples`` exact posterior draws ``[S, B, L]`` of the closed-form
    posterior (the item ``i ~ p(i | x)``, then ``z`` from its Gaussian), drawn from torch's RNG."""
    from dataclasses import replace

    cue, mask = memory.prepare_cue(args[0], args[1] if len(args) > 1 else None)
    with torch.no_grad():
        draws = memory.posterior(cue, mask, return_weights=False).sample(num_samples)
    return replace(retrieval, samples=draws)


def _memory_conventions(memory: Any, args: tuple, groups: dict[str, dict[str, Any]], dims: dict) -> None:
    """One naming of dims for a memory's sites (``query``, ``<site>_dim``) and hidden cue entries
    as NaN in ``observed_data`` / ``posterior_predictive``, recorded in ``constant_data.observed``."""
    latent, observed = memory.latent_site, getattr(memory, "observed_site", "x")
    dims.setdefault(latent, ["query", f"{latent}_dim"])
    dims.setdefault(observed, ["query", f"{observed}_dim"])  # the log-likelihood [query] keeps the first
    dims.setdefault("observed", ["query", f"{observed}_dim"])
    mask = args[1] if len(args) > 1 and torch.is_tensor(args[1]) else None
    cue = groups.get("observed_data", {}).get(observed)
    if mask is None or cue is None:
        return
    shown = mask.to(torch.bool).expand_as(cue)
    groups["observed_data"][observed] = torch.where(shown, cue, torch.full_like(cue, float("nan")))
    predictive = groups.get("posterior_predictive", {})
    if observed in predictive:
        predictive[observed] = torch.where(shown, predictive[observed], torch.full_like(predictive[observed],
                                                                                         float("nan")))
    groups["constant_data"] = {"observed": shown}


def to_inference_data(
    model: Callable | None = None,
    data: Any = (),
    kwargs: dict[str, Any] | None = None,
    *,
    mcmc: Any = None,
    guide: Callable | None = None,
    samples: dict[str, Tensor] | None = None,
    retrieval: Retrieval | None = None,
    memory: Any = None,
    num_samples: int = 500,
    num_prior_samples: int = 0,
    posterior_predictive: bool = True,
    log_likelihood: bool = True,
    coords: dict[str, Any] | None = None,
    dims: dict[str, list[str]] | None = None,
    seed: int | None = 0,
    args: Any = None,
) -> Any:
    """ArviZ data (``InferenceData`` for ArviZ < 1, ``xarray.DataTree`` for ArviZ ≥ 1).

    Exactly one source of posterior draws may be given (or none, for a prior-only result):

    * ``mcmc``: a finished ``pyro.infer.MCMC``; draws ``[chain, draw, ...]`` from
      ``get_samples(group_by_chain=True)``; ``model``/``args``/``kwargs`` default to the run's;
      ``sample_stats.diverging`` from its diagnostics.
    * ``guide``: a fitted guide (after SVI, e.g. :func:`varmem.fit`); ``num_samples`` independent
      guide draws form one chain.
    * ``samples``: ``{site: [S, ...]}`` posterior draws (one chain).
    * ``retrieval``: a :class:`varmem.Retrieval`; its ``samples`` ``[S, B, L]`` become the latent
      site (``memory.latent_site``, default ``"z"``), its ``weights`` the ``item_posterior`` group
      and ``recalled`` draws (see the module docstring).  With ``memory`` (and ``data=(cue, mask)``)
      the model defaults to ``memory.model`` and the log-likelihood of the cue is included; an
      exact read (no samples) of a memory with a closed-form posterior gets ``num_samples`` exact
      draws of ``z``.

    Args:
        model, data, kwargs: the Pyro model and what it was conditioned on, as in
            :func:`varmem.fit`: ``data`` a tensor or a tuple of tensors passed positionally
            (for a memory ``(cue, mask)``), ``kwargs`` keyword arguments; needed for
            ``posterior_predictive``, ``log_likelihood``, ``observed_data`` and the prior.
            ``args=`` is the old name of ``data`` (deprecated).
        num_samples: guide draws (``guide``), or ``recalled`` draws for a retrieval without samples.
        num_prior_samples: draws of the prior and prior predictive (0 = no prior groups).
        posterior_predictive, log_likelihood: include these groups (need ``model``).
        coords, dims: passed to ``from_dict`` (dims of a retrieval's variables default to
            ``query`` / ``item``).
        seed: makes the draws reproducible without touching the global RNG (``None``: use it).
    """
    kwargs = dict(kwargs or {})
    if args is not None:
        if not (isinstance(data, tuple) and not data):
            raise ValueError("give data= (args= is its deprecated name), not both")
        warnings.warn("to_inference_data(args=...) is deprecated: pass data=, as for varmem.fit", DeprecationWarning,
                      stacklevel=2)
        data = args
    args = data if isinstance(data, tuple) else (() if data is None else (data,))
    sources = [s for s in (mcmc, guide, samples, retrieval) if s is not None]
    if len(sources) > 1:
        raise ValueError("give at most one of mcmc=, guide=, samples=, retrieval=")
    check_positive_int(num_samples, "num_samples")
    check_int(num_prior_samples, "num_prior_samples", minimum=0)
    if mcmc is not None:
        model = model or mcmc.kernel.model
        args = args or tuple(getattr(mcmc, "_args", ()) or ())
        kwargs = kwargs or dict(getattr(mcmc, "_kwargs", {}) or {})
    if memory is None and isinstance(getattr(model, "__self__", None), Memory):
        memory = model.__self__  # memory.model: the memory's dims and mask apply
    if retrieval is not None:
        if not isinstance(retrieval, Retrieval):
            raise TypeError(f"retrieval must be a varmem.Retrieval, got {type(retrieval).__name__}")
        if model is None and memory is not None and args:
            model = memory.model
    if guide is not None and model is None:
        raise ValueError("guide= needs the model (and its data) too")

    device = next((a.device for a in args if torch.is_tensor(a)), torch.device("cpu"))
    rng = nullcontext()
    if seed is not None:
        rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    groups: dict[str, dict[str, Tensor]] = {}
    extra: dict[str, dict[str, Tensor]] = {}
    dims = dict(dims or {})
    with rng:
        if seed is not None:
            pyro.set_rng_seed(seed)
        draws: dict[str, Tensor] = {}
        if mcmc is not None:
            draws = {k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()}
        elif guide is not None:
            draws = _posterior_from_guide(guide, args, kwargs, num_samples)
        elif samples is not None:
            draws = {k: torch.as_tensor(v)[None] for k, v in samples.items()}
        elif retrieval is not None:
            site = getattr(memory, "latent_site", "z")
            if retrieval.samples is None and isinstance(memory, ClosedFormPosterior) and args:
                retrieval = _with_exact_draws(retrieval, memory, args, num_samples)
            posterior, item_posterior = _retrieval_groups(retrieval, memory, num_samples, site)
            draws = {site: posterior.pop(site)} if site in posterior else {}
            chains = retrieval.info.get("chains") if isinstance(retrieval.info, dict) else None
            if torch.is_tensor(chains) and chains.dim() == 4 and site in draws:
                if "pairs" in retrieval.info:  # mode-split: the chains of each (cue, item) mode
                    extra["mode_chains"] = {site: chains, "pairs": retrieval.info["pairs"]}
                elif chains.shape[2:] == draws[site].shape[2:]:  # plain NUTS: the chains are the draws
                    draws[site] = chains
                    posterior = {k: v for k, v in posterior.items() if k not in ("item_prob", "recalled")}
            groups["posterior"] = posterior
            extra["item_posterior"] = item_posterior
            for name, d in RETRIEVAL_DIMS.items():
                dims.setdefault(name, d)
            if site in draws:
                dims.setdefault(site, ["query", f"{site}_dim"])

        if model is not None:
            trace = poutine.trace(poutine.condition(model, data={k: v[0, 0] for k, v in draws.items()})).get_trace(
                *args, **kwargs
            )
            _, observed = _sites(trace)
            groups["observed_data"] = {k: s["value"] for k, s in observed.items() if k not in draws}
            if draws and (posterior_predictive or log_likelihood):
                pp, ll, det = _run_draws(model, args, kwargs, draws, log_likelihood, posterior_predictive)
                if posterior_predictive:
                    groups["posterior_predictive"] = pp
                if log_likelihood:
                    groups["log_likelihood"] = ll
                draws.update(det)
            if num_prior_samples:
                prior, prior_pred = _prior(model, args, kwargs, num_prior_samples)
                groups["prior"], groups["prior_predictive"] = prior, prior_pred
        groups["posterior"] = {**draws, **groups.get("posterior", {})}
    if memory is not None and hasattr(memory, "latent_site"):
        _memory_conventions(memory, args, groups, dims)

    if mcmc is not None and draws:
        chains, num = next(iter(draws.values())).shape[:2]
        diverging = _diverging(mcmc, chains, num)
        if diverging is not None:
            groups["sample_stats"] = {"diverging": diverging}

    az = _arviz()
    arrays = {g: {k: v if isinstance(v, np.ndarray) else _numpy(v) for k, v in d.items()} for g, d in groups.items()}
    datasets = {}
    if extra.get("item_posterior"):
        import xarray as xr

        datasets["item_posterior"] = xr.Dataset(
            {k: (dims.get(k, RETRIEVAL_DIMS[k]), _numpy(v)) for k, v in extra["item_posterior"].items()},
            coords={k: v for k, v in (coords or {}).items() if k in ("query", "item")},
        )
    if extra.get("mode_chains"):
        import xarray as xr

        site = next(k for k in extra["mode_chains"] if k != "pairs")
        value, pairs = _numpy(extra["mode_chains"][site]), _numpy(extra["mode_chains"]["pairs"])
        C, S = value.shape[:2]
        datasets["mode_chains"] = xr.Dataset(
            {site: (("chain", "draw", "mode", f"{site}_dim"), value)},
            coords={"chain": np.arange(C), "draw": np.arange(S), "mode_query": ("mode", pairs[:, 0]),
                    "mode_item": ("mode", pairs[:, 1])},
        )
    return _from_dict(az, arrays, datasets, coords, dims or None)


# --------------------------------------------------------------------------- model comparison
def evidence_elpd(evidence: Evidence, *, log_likelihood: Any = None, dim: str = "query") -> Any:
    """ArviZ's ``ELPDData`` (``az.loo``'s result, ``pointwise=True``) holding the exact
    leave-one-out predictive of each cue: its log evidence.

    A memory does not learn from its cues, and each cue has its own latent ``z_b``, so the
    leave-one-out predictive density of cue ``b`` is ``p(x_b | x_{-b}, M) = p(x_b | M)``, the
    evidence: ``elpd_loo = Σ_b log p(x_b | M)`` exactly, with ``se = √(B · Var_b log p(x_b | M))``
    (ArviZ's formula).  PSIS-LOO on posterior draws instead reweights ``p(z_b | x_b)`` towards
    ``p(z_b)``, the whole prior over stored items, which importance sampling cannot reach (large
    Pareto k): it reports tens of nats off.  ``log_likelihood`` (``[S, B]`` values
    ``log p(x_b | z_s)`` at posterior draws, e.g. ``data.log_likelihood["x"]``) gives ``p_loo =
    lppd - elpd_loo``; without it ``p_loo`` is NaN.  ``pareto_k`` is 0 for an exact evidence and
    NaN for an estimate (no Pareto smoothing was done); ``warning`` is set when an estimate's
    total standard error exceeds 0.5 nat.  Use it with ``az.compare({name: evidence_elpd(...)})``
    (:func:`compare_evidence`).  ArviZ < 1: ``arviz.stats.ELPDData`` (a pandas Series indexed
    ``elpd_loo``, ``se``, ``p_loo``, ..., ``loo_i``); ArviZ ≥ 1: ``arviz_stats``' ``ELPDDataLOO``
    (a dataclass with ``kind="loo"``, ``elpd``, ``se``, ``p``, ..., ``elpd_i``).
    """
    az = _arviz()
    if not isinstance(evidence, Evidence):
        raise TypeError(f"evidence must be a varmem.Evidence (memory.evidence(cue, mask)), got "
                        f"{type(evidence).__name__}")
    import xarray as xr

    values = evidence.log_evidence.detach().to("cpu", torch.float64).numpy()
    n = values.shape[0]
    elpd = float(values.sum())
    se = float((n * values.var()) ** 0.5)
    p_loo = math.nan
    n_samples = evidence.num_samples or 0
    if log_likelihood is not None:
        ll = np.asarray(getattr(log_likelihood, "values", log_likelihood), dtype=float)
        ll = ll.reshape(-1, ll.shape[-1])
        if ll.shape[-1] != n:
            raise ValueError(f"log_likelihood must be [S, {n}] (one column per cue), got {tuple(ll.shape)}")
        lppd = float((np.logaddexp.reduce(ll, axis=0) - math.log(ll.shape[0])).sum())
        p_loo, n_samples = lppd - elpd, ll.shape[0]
    exact = evidence.kind == "exact"
    _, total_se = evidence.total()
    pointwise = xr.DataArray(values, dims=[dim], name="loo_i")
    pareto_k = xr.DataArray(np.zeros(n) if exact else np.full(n, np.nan), dims=[dim], name="pareto_shape")
    warning = bool(total_se > 0.5)
    if arviz_major_version(az) >= 1:
        from arviz_stats import utils

        loo_data = getattr(utils, "ELPDDataLOO", None) or utils.ELPDData
        return loo_data(kind="loo", elpd=elpd, se=se, p=p_loo, n_samples=n_samples, n_data_points=n, scale="log",
                        warning=warning, good_k=0.7, elpd_i=pointwise, pareto_k=pareto_k)
    from arviz.stats.stats_utils import ELPDData

    return ELPDData(
        data=[elpd, se, p_loo, n_samples, n, warning, pointwise, pareto_k, "log", 0.7],
        index=["elpd_loo", "se", "p_loo", "n_samples", "n_data_points", "warning", "loo_i", "pareto_k", "scale",
               "good_k"],
    )


def compare_evidence(evidences: dict[str, Evidence], *, method: str = "stacking", **kwargs: Any) -> Any:
    """``az.compare`` of memories by the exact leave-one-out predictive of their cues (their log
    evidence, :func:`evidence_elpd`): one row per memory, ranked by the elpd, with ArviZ's ``se``,
    ``elpd_diff``, ``dse`` and weights (``method``: ``"stacking"``, ``"BB-pseudo-BMA"``,
    ``"pseudo-BMA"``).  The columns are the installed ArviZ's (``elpd_loo`` / ``p_loo`` before 1.0,
    ``elpd`` / ``p`` from 1.0).  Every memory must have been given the same cues (same count)."""
    if not isinstance(evidences, dict) or len(evidences) < 2:
        raise ValueError("compare_evidence needs a dict of at least two {name: Evidence}")
    counts = {name: int(e.log_evidence.shape[0]) for name, e in evidences.items() if isinstance(e, Evidence)}
    if len(counts) != len(evidences):
        bad = [n for n, e in evidences.items() if not isinstance(e, Evidence)]
        raise TypeError(f"values must be varmem.Evidence (memory.evidence(cue, mask)); not: {bad}")
    if len(set(counts.values())) != 1:
        raise ValueError(f"every memory must be scored on the same cues; cue counts differ: {counts}")
    az = _arviz()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="The inplace keyword")  # ArviZ 0.x's sort, pandas >= 3
        elpds = {name: evidence_elpd(e) for name, e in evidences.items()}
        if arviz_major_version(az) >= 1:  # arviz_stats.compare: PSIS-LOO only, no ic argument
            return az.compare(elpds, method=method, **kwargs)
        return az.compare(elpds, ic="loo", method=method, **kwargs)


def evidence_grid(build: Callable[[Any], Any], values: Any, cues: Tensor, mask: Tensor | None = None,
                  **options: Any) -> Any:
    """Empirical Bayes over one hyper-parameter: ``build(value)`` returns a memory (with its items
    written) for each of ``values``; each is scored by the log evidence of held-out ``cues``
    (never stored).  Returns a ``pandas.DataFrame`` with ``value``, ``log_evidence`` (the sum over
    cues), ``stderr`` (0 when exact), ``per_cue`` (the mean) and ``best`` (the maximiser), the
    type-II maximum-likelihood choice ``argmax_value Σ_b log p(x_b | M_value)``.
    ``options`` go to ``memory.evidence``."""
    import pandas as pd

    rows = []
    for value in values:
        memory = build(value)
        evidence = memory.evidence(cues, mask, **options)
        total, err = evidence.total()
        rows.append({"value": value, "log_evidence": total, "stderr": err,
                     "per_cue": total / evidence.log_evidence.shape[0], "kind": evidence.kind})
    if not rows:
        raise ValueError("evidence_grid needs at least one value")
    table = pd.DataFrame(rows)
    table["best"] = table["log_evidence"] == table["log_evidence"].max()
    return table
