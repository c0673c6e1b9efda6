"""Linear and MLP associative memories with frozen random embeddings (Nichani, Lee & Bietti, ICLR 2025).

The paper's memory maps an input ``x ∈ [N]`` to an output ``y ∈ [M]`` through frozen unit-norm
embeddings ``e_x, u_y ∈ ℝ^d`` and a learned map ``F``::

    f̂(x) = argmax_y  u_yᵀ F(e_x)          F(e) = W e                     (linear, d_out·D parameters)
                                            F(e) = W₂ ReLU(W₁ e + b₁)      (MLP, width m: ≈ 2 m d)

**How it joins varmem's protocol.**  Keys are discrete indices; their input embeddings are
directions in ``ℝ^D``.  A memory of dimension ``D`` stores items ``ξ_i ∈ ℝ^D`` (``write``) and
uses the item's *direction* as its key embedding, ``e_i = ξ_i / ‖ξ_i‖``; every stored item gets
its own frozen random output embedding ``u_i`` (``codes``, unit norm, ``d_out = code_dim``,
drawn from ``seed`` and the item's slot), so the stored map is the paper's identity association
``f*(i) = i`` (Fig. 1).  Writing random unit vectors (:func:`random_embeddings`) is exactly the
paper's capacity experiment; writing images makes the memory a learned readout of its own items.
A cue ``x`` (unobserved entries set to 0) is read through ``e(x) = x / ‖x‖``.

**Writes.**  ``rule="hebbian"``: the outer-product sum ``W = Σ_i u_i e_iᵀ`` (linear); for the MLP
the first layer stays at its random initialisation and ``W₂ = Σ_i u_i (h_i − h̄)ᵀ`` on the centred
hidden features ``h_i = ReLU(W₁ e_i + b₁)`` (the random-feature Hebbian memory; without centring the
common positive mean of ReLU features swamps the signal).  ``rule="trained"``: full-batch Adam on
the cross-entropy of the categorical likelihood below over every stored item, from the current
weights, stopping as soon as ``accuracy ≥ target_accuracy`` (checked every 32 steps, the paper's
protocol) or after ``max_steps``.

**Probabilistic reading.**  The read is a categorical likelihood over the stored associations::

    p(i | x, M) = softmax_i( β u_iᵀ F(e(x)) )        i ∈ {1 … N}

(the model's Pyro form is :meth:`AssociativeMemory.recall_model`: site ``"item"`` ~
``Categorical(logits)``; a trained write maximises its log-likelihood of the stored pairs, so with
``β = 1`` the weights are the fitted likelihood).  ``retrieve`` (engine ``"categorical"``) returns
these weights (``weights_at="posterior"``), the arg-max item (the paper's prediction) as
``pattern`` (or the posterior mean with ``point="mean"``), the posterior variance and, on request,
draws ``i ~ p(i | x, M)``.  The memory is not a density of its cues: it has no evidence.

Energy (nats; ``s_i(z) = β u_iᵀ F(e(z))``, ``z`` a query in data space)::

    E(z) = log N − log Σ_i exp s_i(z)            (the cue and mask do not enter)

so ``−max_i s_i ≤ E ≤ log N − max_i s_i``, and ``−∂E/∂s_i = p(i | z, M)``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Protocol, runtime_checkable

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ...engine import engine
from ...helpers import make_generator, want_weights
from ...memory import Memory
from ...retrieval import Retrieval
from ...validation import (
    check_bool,
    check_choice,
    check_int,
    check_positive,
    check_positive_int,
    check_seed,
    check_values,
)

__all__ = [
    "AssociativeMemory",
    "LinearAssociativeMemory",
    "MLPAssociativeMemory",
    "CategoricalReadout",
    "retrieve_categorical",
    "random_embeddings",
    "RULES",
]

RULES = ("trained", "hebbian")
_BLOCK = 256  # output embeddings are drawn in seeded blocks of this many slots
_CHECK_EVERY = 32  # the paper checks the accuracy of a trained write every 32 steps


def random_embeddings(n: int, dim: int, seed: int = 0, *, dtype: torch.dtype | None = None,
                      device: Any = None) -> Tensor:
    """``[n, dim]`` i.i.d. uniform directions on the unit sphere (normalised Gaussians), drawn on the
    CPU in float64 from ``seed``: the paper's frozen input / output embeddings."""
    n = check_int(n, "n", minimum=0)
    dim = check_positive_int(dim, "dim")
    seed = check_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)
    return x.to(device=device, dtype=dtype or torch.get_default_dtype())


def _derived_seed(seed: int, stream: int, index: int = 0) -> int:
    """A generator seed for ``(seed, stream, index)`` (a splitmix-style hash), so that the memory's
    own draws (stream 1: initial weights, stream 2: output embeddings) are independent of keys drawn
    by :func:`random_embeddings` with the same small seed."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % 2**64
    x = ((x ^ (x >> 31)) * 0xD6E8FEB86659FD93) % 2**64
    return (x ^ (x >> 32)) % 2**63


def _slot_codes(seed: int, start: int, count: int, dim: int) -> Tensor:
    """Output embeddings of slots ``start … start+count-1`` (float64 CPU): slot ``i`` is row
    ``i mod 256`` of a block drawn from a generator seeded by ``(seed, i // 256)`` (hashed), so an item's
    code depends on its slot alone (writing in one call or several gives the same codes)."""
    rows = []
    first, last = start // _BLOCK, (start + count - 1) // _BLOCK
    for block in range(first, last + 1):
        g = torch.Generator().manual_seed(_derived_seed(seed, 2, block))
        b = torch.randn(_BLOCK, dim, generator=g, dtype=torch.float64)
        rows.append(b / b.norm(dim=-1, keepdim=True))
    codes = torch.cat(rows)
    offset = start - first * _BLOCK
    return codes[offset: offset + count]


def unit_keys(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``e(x) = x / ‖x‖`` over the observed entries (unobserved ones set to 0); a zero vector stays 0."""
    if mask is not None:
        x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


@runtime_checkable
class CategoricalReadout(Protocol):
    """A memory whose read is a categorical distribution over its stored items:
    ``logits(cue, mask) -> [B, N]`` and ``stored_items() -> [N, D]``."""

    def logits(self, cue: Tensor, mask: Tensor | None = None) -> Tensor: ...

    def stored_items(self) -> Tensor: ...


@engine("categorical", requires=(CategoricalReadout,))
def retrieve_categorical(
    memory: Any, cue: Tensor, mask: Tensor | None, *, point: str = "argmax", return_weights: bool | None = None,
    num_samples: int = 0, seed: int | None = None,
) -> Retrieval:
    """``"categorical"``: the read ``p(i | x, M) = softmax_i(logits)`` of a categorical readout.

    ``pattern`` is the stored item at the arg-max (``point="argmax"``, the paper's prediction
    ``argmax_y u_yᵀ F(e_x)``) or the posterior mean ``Σ_i p_i ξ_i`` (``point="mean"``); ``weights``
    the posterior over the stored items (``weights_at="posterior"``; materialised as
    :func:`varmem.helpers.want_weights` decides), ``index`` its arg-max, ``variance`` the
    posterior variance ``Σ_i p_i ξ_i² − mean²``, ``trace`` ``[1, B]`` the energy at the cue, ``steps =
    0``.  With ``num_samples = S > 0``, ``samples`` ``[S, B, D]`` are stored items drawn from
    ``p(i | x, M)`` with ``seed``.
    """
    point = check_choice(point, "option point", ("argmax", "mean"))
    check_bool(return_weights, "option return_weights", allow_none=True)
    num_samples = check_int(num_samples, "option num_samples", minimum=0)
    seed = check_seed(seed, "option seed", allow_none=True)
    with torch.no_grad():
        logits = memory.logits(cue, mask)
        if not bool(torch.isfinite(logits).all()):
            raise FloatingPointError(
                f"{type(memory).__name__}: the read's logits overflow {logits.dtype} with settings "
                f"{memory.config()} (beta too large for these weights?); nothing was changed")
        log_p = torch.log_softmax(logits, -1)
        p = log_p.exp()
        items = memory.stored_items()
        index = logits.argmax(-1)
        mean = p @ items
        pattern = items[index] if point == "argmax" else mean
        variance = (p @ items.square() - mean.square()).clamp_min(0)
        energy = math.log(len(memory)) - torch.logsumexp(logits, -1)
        samples = None
        if num_samples:
            gen = make_generator(seed, p.device)
            draws = torch.multinomial(p, num_samples, replacement=True, generator=gen)  # [B, S]
            samples = items[draws.T]
    keep = want_weights(return_weights, p.shape[0], p.shape[1])
    return Retrieval(pattern=pattern, method="categorical", weights=p if keep else None, weights_at="posterior",
                     index=index, variance=variance, samples=samples, trace=energy.unsqueeze(0), steps=0,
                     info={"point": point})


class AssociativeMemory(Memory):
    """Shared state of the linear and MLP associative memories (module docstring for the math).

    State: ``items [N, D]`` (buffer: the stored items, whose directions are the keys), ``codes
    [N, d_out]`` (buffer: the frozen random output embeddings) and the subclass's weights.  A write
    appends items and codes and then applies the rule (Hebbian sum or CE training); a write that
    fails leaves everything as it was.
    """

    methods = (retrieve_categorical,)
    default_method = "categorical"
    default_lr = 1e-2
    default_max_steps = 4096

    def __init__(
        self, dim: int, code_dim: int | None = None, rule: str = "trained", beta: float = 1.0,
        lr: float | None = None, max_steps: int | None = None, target_accuracy: float = 0.99, seed: int = 0,
        *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.code_dim = self.dim if code_dim is None else check_positive_int(code_dim, "code_dim", allow_none=True)
        self._code_dim_arg = None if code_dim is None else self.code_dim
        self.rule = check_choice(rule, "rule", RULES)
        self.beta = check_positive(beta, "beta")
        self.lr = self.default_lr if lr is None else check_positive(lr, "lr")
        self._lr_arg = None if lr is None else self.lr
        self.max_steps = self.default_max_steps if max_steps is None else check_positive_int(max_steps, "max_steps")
        self._max_steps_arg = None if max_steps is None else self.max_steps
        target = check_positive(target_accuracy, "target_accuracy")
        if target > 1:
            raise ValueError(f"target_accuracy must lie in (0, 1], got {target_accuracy!r}")
        self.target_accuracy = target
        self.seed = check_seed(seed)
        self.register_buffer("items", torch.empty(0, self.dim, device=self.device, dtype=self.dtype))
        self.register_buffer("codes", torch.empty(0, self.code_dim, device=self.device, dtype=self.dtype))
        self.last_fit: dict[str, Any] = {}

    # --- the map F ----------------------------------------------------------------------------------
    @abstractmethod
    def transform(self, keys: Tensor) -> Tensor:
        """``F(e)``: ``[..., D]`` unit keys → ``[..., d_out]``."""

    @abstractmethod
    def _hebbian(self, keys: Tensor, codes: Tensor) -> None:
        """Set the weights by the Hebbian rule for all stored ``keys [N, D]`` and ``codes [N, d_out]``."""

    @abstractmethod
    def _init_weights(self, generator: torch.Generator) -> None:
        """Draw the initial weights (float64 CPU draws, cast to the memory's dtype and device)."""

    @property
    def num_parameters(self) -> int:
        """Parameters of ``F`` (``d_out·D`` linear, ``m·D + m + d_out·m`` MLP)."""
        return sum(p.numel() for p in self.parameters())

    def _draw(self, generator: torch.Generator, *shape: int, std: float) -> torch.nn.Parameter:
        w = std * torch.randn(*shape, generator=generator, dtype=torch.float64)
        return torch.nn.Parameter(w.to(device=self.device, dtype=self.dtype))

    # --- reading --------------------------------------------------------------------------------------
    def stored_items(self) -> Tensor:
        """``[N, D]`` the stored items (what a read returns)."""
        return self.items

    def logits(self, cue: Tensor, mask: Tensor | None = None) -> Tensor:
        """``[B, N]`` ``s_i(x) = β u_iᵀ F(e(x))`` for validated cues ``[B, D]``."""
        return self.beta * self.transform(unit_keys(cue, mask)) @ self.codes.T

    def item_weights(self, z: Tensor, return_weights: bool | None = None) -> tuple[Tensor | None, Tensor]:
        """``(p(i | z, M) [B, N] or None, argmax [B])``: the read's posterior at query states ``z [B, D]``."""
        s = self.logits(z)
        w = torch.softmax(s, -1)
        return (w if want_weights(return_weights, z.shape[0], w.shape[-1]) else None), s.argmax(-1)

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``E(z) = log N − logsumexp_i s_i(z)`` (nats; module docstring), ``z [..., D]`` → ``[...]``;
        differentiable in ``z`` and the weights.  ``cue`` / ``mask`` do not enter."""
        s = self.beta * self.transform(unit_keys(z)) @ self.codes.T
        return math.log(len(self)) - torch.logsumexp(s, -1)

    def recall_model(self, cue: Tensor, mask: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """The categorical likelihood as a Pyro model: ``item ~ Categorical(logits = s(x))`` under the
        plate ``"cues"`` (``dim=-1``), observed at ``index [B]`` when given.  Its log-density at the
        stored pairs is minus the cross-entropy a trained write minimises."""
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        with pyro.plate("cues", cue.shape[0], dim=-1):
            return pyro.sample("item", dist.Categorical(logits=self.logits(cue, mask)), obs=index)

    def log_likelihood(self, cue: Any, index: Any, mask: Any = None) -> Tensor:
        """``[B]`` ``log p(i_b | x_b, M)``: the log-probability that cue ``b`` recalls stored item ``index[b]``."""
        self._check_not_empty()
        cue, mask = self.prepare_cue(cue, mask)
        index = torch.as_tensor(index, device=self.device)
        if index.dtype in (torch.bool,) or index.is_floating_point() or index.is_complex():
            raise TypeError(f"index must hold integers, got {index.dtype}")
        if index.shape != (cue.shape[0],) or bool(((index < 0) | (index >= len(self))).any()):
            raise ValueError(f"index must be [B={cue.shape[0]}] ints in [0, {len(self)}), got {index.tolist()}")
        return torch.log_softmax(self.logits(cue, mask), -1).gather(-1, index.long()[:, None])[:, 0]

    def accuracy(self) -> float:
        """Fraction of stored items whose clean read recalls themselves (the paper's accuracy)."""
        self._check_not_empty()
        with torch.no_grad():
            s = self.transform(unit_keys(self.items)) @ self.codes.T
            return (s.argmax(-1) == torch.arange(len(self), device=self.device)).double().mean().item()

    # --- writing --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def write(self, items: Any) -> "AssociativeMemory":
        """Store ``items [N, D]`` (each with a fresh output embedding), then apply the rule: the Hebbian
        sum, or CE training of every stored association (``last_fit`` records its steps, loss and
        accuracy).  ``ValueError`` for items of zero norm (they have no direction); a training run
        that diverges (``lr`` or ``beta`` too large) raises ``FloatingPointError`` and restores the state."""
        items = self.prepare_items(items).detach()
        zero = (items.norm(dim=-1) == 0).nonzero().flatten().tolist()
        if zero:
            raise ValueError(f"items {zero} have zero norm: an item's key is its direction, so it must be non-zero")
        before = {k: v.detach().clone() for k, v in self.state_dict().items()}
        growth = self.__dict__.get("_growth")
        try:
            codes = _slot_codes(self.seed, len(self), len(items), self.code_dim).to(self.codes)
            self.append_rows("items", items)
            self.append_rows("codes", codes)
            if self.rule == "hebbian":
                with torch.no_grad():
                    self._hebbian(unit_keys(self.items), self.codes)
            else:
                self._train()
            self.check_parameters()
        except BaseException as e:
            self.items, self.codes = before["items"], before["codes"]
            with torch.no_grad():
                for name, p in self.named_parameters():
                    p.copy_(before[name])
            self.__dict__.pop("_growth", None)
            if growth is not None:
                self.__dict__["_growth"] = growth
            if isinstance(e, ValueError) and "parameter" in str(e):
                raise FloatingPointError(f"{e}: the write diverged with lr={self.lr}, beta={self.beta}; "
                                         "state restored (lower lr)") from None
            raise
        return self

    def _train(self) -> None:
        """Full-batch Adam on ``CE(s(e_i), i)`` over every stored item (module docstring)."""
        keys = unit_keys(self.items)
        target = torch.arange(len(self), device=self.device)
        params = list(self.parameters())
        optimizer = torch.optim.Adam(params, lr=self.lr)
        step, acc, loss_value = 0, 0.0, math.nan
        with torch.enable_grad():
            for step in range(self.max_steps + 1):
                s = self.beta * self.transform(keys) @ self.codes.T
                loss = torch.nn.functional.cross_entropy(s, target)
                if step % _CHECK_EVERY == 0 or step == self.max_steps:  # the paper checks every 32 steps
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(
                            f"{type(self).__name__}: the training loss became {loss_value} at step {step} "
                            f"(lr={self.lr}, beta={self.beta}); state restored (lower lr)")
                    acc = (s.argmax(-1) == target).double().mean().item()
                    if acc >= self.target_accuracy or step == self.max_steps:
                        break
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        for p in params:
            p.grad = None
        self.last_fit = {"steps": step, "accuracy": acc, "loss": loss_value}

    # --- state ----------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "code_dim": self._code_dim_arg, "rule": self.rule, "beta": self.beta,
                "lr": self._lr_arg, "max_steps": self._max_steps_arg, "target_accuracy": self.target_accuracy,
                "seed": self.seed}

    def check_state(self) -> None:
        self.check_stored_items()
        check_values(self.codes, "stored codes")
        if self.codes.shape != (len(self), self.code_dim):
            raise ValueError(f"codes must have shape [{len(self)}, {self.code_dim}] (one per stored item), "
                             f"got {tuple(self.codes.shape)}")
        self.check_parameters()


class LinearAssociativeMemory(AssociativeMemory):
    """The linear associative memory ``F(e) = W e``, ``W ∈ ℝ^{d_out × D}`` (module docstring).

    Args:
        dim: ``D``, the item (key) dimension.
        code_dim: ``d_out``, the output-embedding dimension (default ``D``: the paper's ``d × d`` W).
        rule: ``"trained"`` (CE, Adam) or ``"hebbian"`` (``W = Σ_i u_i e_iᵀ``).
        beta: inverse temperature of the read's softmax.
        lr: Adam's learning rate (default 1e-2; the paper's 1000 reaches the same argmax capacity
            within ~10 %, but makes W's entries grow beyond what a saved state may hold).
        max_steps: most training steps per write (default 4096 = 2^12, the paper's).
        target_accuracy: a trained write stops at this accuracy (0.99, the paper's criterion).
        seed: seeds the initial ``W ~ N(0, 1/D)`` and the output embeddings.

    Example:
        >>> keys = random_embeddings(40, 16, seed=1)
        >>> memory = LinearAssociativeMemory(16).write(keys)
        >>> memory.accuracy() >= 0.99, memory.retrieve(keys[:3]).index.tolist()
        (True, [0, 1, 2])
    """

    def __init__(
        self, dim: int, code_dim: int | None = None, rule: str = "trained", beta: float = 1.0,
        lr: float | None = None, max_steps: int | None = None, target_accuracy: float = 0.99, seed: int = 0,
        *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, code_dim, rule, beta, lr, max_steps, target_accuracy, seed, device=device, dtype=dtype)
        self._init_weights(torch.Generator().manual_seed(_derived_seed(self.seed, 1)))

    def _init_weights(self, generator: torch.Generator) -> None:
        self.weight = self._draw(generator, self.code_dim, self.dim, std=1 / math.sqrt(self.dim))
        if self.rule == "hebbian":
            with torch.no_grad():
                self.weight.zero_()

    def transform(self, keys: Tensor) -> Tensor:
        return keys @ self.weight.T

    def _hebbian(self, keys: Tensor, codes: Tensor) -> None:
        self.weight.copy_(codes.T @ keys)


class MLPAssociativeMemory(AssociativeMemory):
    """The MLP associative memory ``F(e) = W₂ ReLU(W₁ e + b₁)`` of width ``m`` (module docstring).

    ``W₁ ∈ ℝ^{m×D}`` (init ``N(0, 1/D)``), ``b₁ = 0`` initially, ``W₂ ∈ ℝ^{d_out×m}`` (init ``N(0, 1/m)``;
    no bias, as in the paper's code).  ``rule="hebbian"`` keeps ``W₁, b₁`` at their random
    initialisation and sets ``W₂ = Σ_i u_i (h_i − h̄)ᵀ``.  Defaults of a trained write: Adam lr 3e-2,
    at most 2^15 steps (the paper's ``mlp_sweep``).  Other arguments as
    :class:`LinearAssociativeMemory`.
    """

    default_lr = 3e-2
    default_max_steps = 2**15

    def __init__(
        self, dim: int, hidden: int = 64, code_dim: int | None = None, rule: str = "trained", beta: float = 1.0,
        lr: float | None = None, max_steps: int | None = None, target_accuracy: float = 0.99, seed: int = 0,
        *, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, code_dim, rule, beta, lr, max_steps, target_accuracy, seed, device=device, dtype=dtype)
        self.hidden = check_positive_int(hidden, "hidden")
        self._init_weights(torch.Generator().manual_seed(_derived_seed(self.seed, 1)))

    def _init_weights(self, generator: torch.Generator) -> None:
        self.W1 = self._draw(generator, self.hidden, self.dim, std=1 / math.sqrt(self.dim))
        self.b1 = self._draw(generator, self.hidden, std=0.0)
        self.W2 = self._draw(generator, self.code_dim, self.hidden, std=1 / math.sqrt(self.hidden))
        if self.rule == "hebbian":
            with torch.no_grad():
                self.W2.zero_()

    def features(self, keys: Tensor) -> Tensor:
        """``h(e) = ReLU(W₁ e + b₁)`` ``[..., m]``."""
        return torch.relu(keys @ self.W1.T + self.b1)

    def transform(self, keys: Tensor) -> Tensor:
        return self.features(keys) @ self.W2.T

    def _hebbian(self, keys: Tensor, codes: Tensor) -> None:
        h = self.features(keys)
        self.W2.copy_(codes.T @ (h - h.mean(0)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "hidden": self.hidden}
