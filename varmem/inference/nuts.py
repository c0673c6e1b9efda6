"""``"nuts"``: full posterior samples with ``pyro.infer.MCMC(NUTS)``, for small problems."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide import init_to_value
from pyro.ops.stats import effective_sample_size
from torch import Tensor

from ..capabilities import ItemWeights, PyroModel
from ..engine import engine
from ..helpers import WEIGHTS_LIMIT
from ..retrieval import Retrieval
from ..validation import check_bool, check_int, check_number, check_positive_int, check_seed

__all__ = ["retrieve_nuts"]


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run the block with ``dtype`` as torch's default floating dtype, then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@engine("nuts", requires=(PyroModel,))
def retrieve_nuts(
    memory: PyroModel,
    cue: Tensor,
    mask: Tensor | None,
    *,
    num_samples: int = 500,
    warmup_steps: int = 300,
    init: str | Tensor = "cue",
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    seed: int | None = None,
    return_weights: bool | None = None,
    progress: bool = False,
) -> Retrieval:
    """Sample ``p(z | x, M)`` with the No-U-Turn sampler on ``memory.model`` (one chain, all cues
    jointly: their posteriors are independent, so this is ``B`` chains in one state vector).

    ``samples`` is ``[S, B, L]``; ``pattern`` the decoded sample mean; ``variance`` the sample
    variance; ``weights`` the responsibilities averaged over samples, ``E[p(i | z, M) | x]``
    (``weights_at = "samples"``; equal to the exact ``p(i | x)`` in expectation); ``info["ess"]``
    the effective sample size per coordinate ``[B, L]``; ``info["mcmc"]`` the ``MCMC`` object (for
    ArviZ).  A sampler has no stopping rule: ``converged`` is None.

    Options:
        num_samples, warmup_steps: draws kept (at least 2: the variance and the effective sample
            size need two) and adaptation steps.
        init: ``"cue"``, ``"prior_mean"`` (and others the memory defines) or a ``[B, L]`` tensor.
        target_accept_prob, max_tree_depth: NUTS settings.
        seed: if given, the run is reproducible and leaves the global RNG state untouched.
        return_weights: keep the ``[B, N]`` averaged responsibilities (None = if small).
        progress: show Pyro's progress bar.
    """
    num_samples = check_int(num_samples, "option num_samples", minimum=2)
    warmup_steps = check_int(warmup_steps, "option warmup_steps", minimum=0)
    check_positive_int(max_tree_depth, "option max_tree_depth")
    accept = check_number(target_accept_prob, "option target_accept_prob")
    if not 0 < accept < 1:
        raise ValueError(f"option target_accept_prob must lie in (0, 1), got {target_accept_prob!r}")
    seed = check_seed(seed, "option seed", allow_none=True)
    check_bool(return_weights, "option return_weights", allow_none=True)
    check_bool(progress, "option progress")
    z0 = memory.init_latent(cue, mask, init).detach()
    site = memory.latent_site

    rng = nullcontext()
    if seed is not None:
        devices = [cue.device] if cue.device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices)
    with rng, _default_dtype(cue.dtype):  # Pyro's adaptation builds its tensors in the default dtype
        if seed is not None:
            torch.manual_seed(seed)
        kernel = NUTS(
            memory.model, init_strategy=init_to_value(values={site: z0}),
            target_accept_prob=accept, max_tree_depth=max_tree_depth,
        )
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        mcmc.run(cue, mask)
    samples = mcmc.get_samples()[site].detach()  # [S, B, L]
    ess = effective_sample_size(samples.unsqueeze(0), chain_dim=0, sample_dim=1)

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
        steps=num_samples + warmup_steps,
        info={"ess": ess, "mcmc": mcmc},
    )

