"""A small (β-)VAE as a Pyro model/guide pair, trained with :func:`varmem.fit`.

Generative model (``B`` items of ``D`` entries, codes of ``L`` entries)::

    z ~ N(0, I_L)                                   (the code prior; its log-density scaled by β)
    x ~ N(g(z), σ² I_D)        likelihood="normal"
    x ~ Bernoulli(g(z))        likelihood="bernoulli" (g squashed to (0, 1); data in [0, 1])

Guide (amortised posterior): ``q(z | x) = N(μ(x), diag s(x)²)`` with the same β scaling.  The
loss :func:`varmem.fit` minimises is the negative β-ELBO::

    L = -E_q[log p(x | z)] + β KL(q(z | x) ‖ N(0, I))          per item, summed over the data.

Sites: ``"z"`` (latent, ``[B, L]``) and ``"x"`` (observed, ``[B, D]``) under the plate ``"data"``
(``dim=-1``) of size ``num_data`` (the full data size when training on minibatches; default
``B``), which is the plate :func:`varmem.fit` gives the minibatch indices to.

The encoder and decoder are :class:`varmem.models.Encoder` / :class:`varmem.models.Decoder`
(``"dense"`` MLPs by default; ``"linear"`` and ``"conv"`` also work), so a trained VAE's coders can
be handed to a latent memory.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import Tensor

from ..checkpoint import register_checkpoint_class
from ..validation import check_int_sequence, check_positive, check_positive_int
from .coders import build_coders

__all__ = ["VAE", "LIKELIHOODS"]

LIKELIHOODS: tuple[str, ...] = ("normal", "bernoulli")
_EPS = 1e-6


@register_checkpoint_class
class VAE(PyroModule):
    """A (β-)VAE: ``model`` and ``guide`` are methods; ``forward`` is the model.

    Args:
        data_shape: ``D`` or ``(C, H, W)`` of one item (items are passed flat, ``[B, D]``).
        code_dim: ``L``.
        hidden: hidden widths of the dense coders (conv channels for ``"conv"``).
        architecture: ``"dense"`` (default), ``"linear"`` or ``"conv"``.
        likelihood: ``"normal"`` (noise ``noise_scale``) or ``"bernoulli"`` (data in ``[0, 1]``,
            continuous values allowed as in Pyro's VAE example).
        noise_scale: ``σ`` of the normal likelihood.
        beta: weight of the KL term (1 = the ordinary ELBO).
        device, dtype: where the parameters live.

    Example:
        >>> import varmem
        >>> x = varmem.datasets.load_digits().flat()[:256]          # [256, 64] in [0, 1]
        >>> vae = VAE(64, code_dim=4, hidden=(32,))
        >>> result = varmem.fit(vae.model, vae.guide, x, batch_size=64, kwargs={"num_data": len(x)},
        ...                     num_steps=50, lr=1e-2, progress=False)
        >>> result.losses.shape
        torch.Size([50])
    """

    def __init__(
        self,
        data_shape: int | Sequence[int],
        code_dim: int = 8,
        hidden: Sequence[int] = (128,),
        *,
        architecture: str = "dense",
        likelihood: str = "normal",
        noise_scale: float = 0.1,
        beta: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        shape = check_int_sequence(data_shape, "data_shape")
        check_positive_int(code_dim, "code_dim")
        hidden = check_int_sequence(hidden, "hidden")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose from {list(LIKELIHOODS)}")
        dtype = dtype or torch.get_default_dtype()
        self.data_shape, self.code_dim, self.hidden = shape, code_dim, hidden
        self.architecture, self.likelihood_name = architecture, likelihood
        self.noise_scale = check_positive(noise_scale, "noise_scale")
        self.beta = check_positive(beta, "beta")
        output = "sigmoid" if likelihood == "bernoulli" else "identity"
        self.encoder, self.decoder = build_coders(
            architecture, shape, code_dim, hidden, output, device=device, dtype=dtype
        )
        self.dim = self.encoder.in_dim

    # --- bookkeeping -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.encoder.loc_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.loc_head.weight.dtype

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (with ``state_dict()``, enough to rebuild the VAE)."""
        return {
            "data_shape": list(self.data_shape),
            "code_dim": self.code_dim,
            "hidden": list(self.hidden),
            "architecture": self.architecture,
            "likelihood": self.likelihood_name,
            "noise_scale": self.noise_scale,
            "beta": self.beta,
        }

    def check_state(self) -> None:
        """Raise ``ValueError`` if a weight is NaN or inf (used after loading)."""
        for name, p in self.state_dict().items():
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise ValueError(f"weight {name!r} contains NaN or inf")

    def _check_x(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")

    # --- the networks ------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ(x), s(x))``, each ``[B, L]``."""
        self._check_x(x)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``g(z)``: the mean of ``p(x | z)``, ``[..., D]``."""
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """``g(μ(x))``: decode the encoder mean."""
        return self.decode(self.encode(x)[0])

    def likelihood(self, z: Tensor, mask: Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)`` with event shape ``[D]``; entries where ``mask`` is False are left out."""
        mean = self.decode(z)
        if self.likelihood_name == "bernoulli":
            base = dist.Bernoulli(probs=mean.clamp(_EPS, 1 - _EPS), validate_args=False)
        else:
            base = dist.Normal(mean, self.noise_scale)
        if mask is not None:
            base = base.mask(mask)
        return base.to_event(1)

    # --- Pyro model and guide ----------------------------------------------------------------
    def model(self, x: Tensor | None = None, num_data: int | None = None) -> Tensor:
        """``z ~ N(0, I)`` (scaled by β), ``x ~ p(x | z)`` (observed at ``x``; sampled if None).

        ``num_data``: size of the ``"data"`` plate (the full data size for minibatches; default
        ``B``).  Without ``x``, draws ``num_data`` (default 1) items.
        """
        if x is not None:
            self._check_x(x)
        batch = x.shape[0] if x is not None else (num_data or 1)
        ref = self.encoder.loc_head.weight
        loc = ref.new_zeros(batch, self.code_dim)
        with pyro.plate("data", num_data or batch, subsample=torch.arange(batch, device=ref.device)):
            with poutine.scale(scale=self.beta):
                z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", self.likelihood(z), obs=x)
        return z

    def guide(self, x: Tensor, num_data: int | None = None) -> Tensor:
        """``z ~ q(z | x) = N(μ(x), diag s(x)²)`` (scaled by β, like the prior)."""
        loc, scale = self.encode(x)
        with pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0], device=x.device)):
            with poutine.scale(scale=self.beta):
                return pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def forward(self, x: Tensor | None = None, num_data: int | None = None) -> Tensor:
        return self.model(x, num_data)
