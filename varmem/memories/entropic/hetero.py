"""Entropic hetero-associative memory: the 4-D relation between two domains (Morales & Pineda,
"Entropic Hetero-Associative Memory", arXiv 2411.02438; operations as in the official code
``eam-experiments/hetero:hetero_associative_4d.py``, written again as batched tensor code).

An item is a pair ``(a, b)`` written side by side, ``[a | b]`` of ``dim = n + p`` features in
``[0, 1]`` (``split = n``); ``a`` is quantised into ``m = rows`` rows, ``b`` into ``q = rows_b``.
State: ``counts [n, p, m, q]`` and the number of registered pairs.

* **register**: ``R(i, j, q(a_i), q(b_j)) += 1`` for every ``i, j`` (unit feature weights:
  ``round(√(ω_a ω_b)) = 1``); cells saturate at ``2**16 - 1``.
* **ι-filter**: in each ``(i, j)`` plane, cells below ``ι`` times the plane's mean non-zero cell
  are ignored (``R_ι``).
* **recognise a pair**: ``mismatches = #{(i, j): R_ι(i, j, a_i, b_j) = 0} ≤ ξ`` and
  ``mean_ij R(i, j, a_i, b_j) ≥ κ · mean_ij μ_ij`` (:meth:`EntropicHeteroMemory.recognise`).
* **projection** of a cue ``a`` onto B's ``p × q`` plane: ``P(j, l) = Σ_i R_ι(i, j, a_i, l)`` if
  every factor is non-zero, else 0 (intersection with summation); unobserved cue columns add no
  constraint.  The cue is recognised iff at most ``ξ`` columns of ``P`` are all zero.
* **entropy**: the mean over the ``(i, j)`` planes of ``H(R(i, j) / Σ R(i, j))`` (bits).

The projection is still indeterminate (the "missing cue problem"); three reads construct ``b``:

1. ``"random"``: ``b_j ~ P(j, ·) / Σ_l P(j, l)`` independently per column (uniform for a column
   that is all zero);
2. ``"sample_and_test"``: ``num_samples`` (127 = 2·64 − 1) random draws; each is projected back onto
   A and scored by ``d = mean_{i observed} Σ_k (k − a_i)² P̂_i(k)``, ``P̂_i`` the normalised
   back-projection (``(m − 1)²`` for a column it leaves empty); the draw of least ``d`` is kept;
3. ``"search_and_test"``: from that draw, hill climbing over ``±1`` changes of one column (to
   non-zero cells of ``P`` only), moving to a uniformly chosen improving neighbour (what the
   official code's first improvement in a shuffled order amounts to) until none improves.

Reads generalise to any mask: each side's unobserved columns are constructed from the projection of
the other side's observed columns, observed columns are kept (quantised); a side whose partner has
no observed column is drawn from the relation's marginal.  The draws may repeat (the official code
retries duplicates).

This memory has no Pyro model; its energy counts mismatches and measures squared distances in
row units (``Δ_d`` the row spacing of feature ``d``)::

    E(z; x) = #{(i, j): R_ι(i, j, q(a_i), q(b_j)) = 0} + Σ_d ((z_d - g(q(z_d))) / Δ_d)²
              + Σ_{d observed} ((z_d - g(q(x_d))) / Δ_d)²

so at a grid point ``z`` (a quantised pair) ``E(z) ≤ ξ`` iff the pair passes the containment test.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ...domains import UNIT
from ...engine import engine
from ...helpers import make_generator
from ...memory import Memory
from ...retrieval import Retrieval
from ...validation import check_int, check_non_negative, check_positive_int, check_seed
from .register import entropy_bits, grid, quantise, row_spacing

__all__ = ["EntropicHeteroMemory", "HeteroReadable", "retrieve_random", "retrieve_sample_and_test",
           "retrieve_search_and_test"]

MAX_COUNT = 2**16 - 1
_CHUNK = 2**22  # elements per block of the back-projection


def _plane_means(counts: Tensor) -> Tensor:
    """``[n, p]`` the mean non-zero cell of each ``(i, j)`` plane (0 for an empty plane)."""
    return counts.sum((-1, -2)) / (counts > 0).sum((-1, -2)).clamp_min(1)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per ``[..., q]`` row of non-negative weights (uniform where a row is all zero)."""
    total = probs.sum(-1, keepdim=True)
    probs = torch.where(total > 0, probs, torch.ones_like(probs))
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=probs.dtype)
    cdf = probs.cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


def _project(table: Tensor, rows: Tensor, observed: Tensor) -> Tensor:
    """``[B, c_out, r_out]``: the projection of cues ``rows [B, c_in]`` (``observed`` columns only)
    through ``table [c_in, r_in, c_out, r_out]`` (intersection with summation)."""
    c_in = table.shape[0]
    slices = table[torch.arange(c_in, device=rows.device), rows]  # [B, c_in, c_out, r_out]
    obs = observed[..., None, None]
    alive = ((slices > 0) | ~obs).all(1)
    return torch.where(alive, (slices * obs).sum(1), torch.zeros((), dtype=table.dtype, device=table.device))


def _distance_from_stats(sums: Tensor, zeros: Tensor, rows: Tensor, observed: Tensor) -> Tensor:
    """``d`` (module docstring) from the back-projection's sums and zero counts ``[..., c, r]``, the
    cue's rows ``[..., c]`` and its observed columns."""
    back = torch.where(zeros == 0, sums, torch.zeros_like(sums))
    total = back.sum(-1, keepdim=True)
    r = back.shape[-1]
    k = torch.arange(r, device=back.device, dtype=back.dtype)
    sq = (k - rows.unsqueeze(-1).to(back.dtype)) ** 2
    per_col = torch.where(total[..., 0] > 0, (back * sq).sum(-1) / total[..., 0].clamp_min(1e-300),
                          torch.full_like(total[..., 0], float((r - 1) ** 2)))
    obs = observed.to(back.dtype)
    return (per_col * obs).sum(-1) / obs.sum(-1).clamp_min(1)


@runtime_checkable
class HeteroReadable(Protocol):
    """What the hetero-associative reads need: :meth:`EntropicHeteroMemory.hetero_read`."""

    def hetero_read(self, cue: Tensor, mask: Tensor | None, how: str, generator: Any, num_samples: int,
                    max_steps: int | None) -> tuple[Tensor, dict[str, Any], int]: ...


def _read(memory: HeteroReadable, cue: Tensor, mask: Tensor | None, how: str, seed: Any, num_samples: int = 1,
          max_steps: int | None = None) -> Retrieval:
    seed = check_seed(seed, "option seed", allow_none=True)
    pattern, info, steps = memory.hetero_read(cue, mask, how, make_generator(seed, cue.device), num_samples,
                                              max_steps)
    return Retrieval(pattern=pattern, method=how, steps=steps, info=info)


@engine("random", requires=(HeteroReadable,))
def retrieve_random(memory: HeteroReadable, cue: Tensor, mask: Tensor | None, *, seed: int | None = None) -> Retrieval:
    """Hetero-associative recall, method 1: one independent draw per column from the projection.

    Options:
        seed: seed of the draws (None: the global RNG).
    """
    return _read(memory, cue, mask, "random", seed)


@engine("sample_and_test", requires=(HeteroReadable,))
def retrieve_sample_and_test(memory: HeteroReadable, cue: Tensor, mask: Tensor | None, *, seed: int | None = None,
                             num_samples: int = 127) -> Retrieval:
    """Hetero-associative recall, method 2: the best of ``num_samples`` draws by the back-projection
    distance to the cue (``info["distance"]``).

    Options:
        seed: seed of the draws (None: the global RNG).
        num_samples: draws per cue (the official 2·64 − 1 = 127).
    """
    num_samples = check_positive_int(num_samples, "option num_samples")
    return _read(memory, cue, mask, "sample_and_test", seed, num_samples)


@engine("search_and_test", requires=(HeteroReadable,))
def retrieve_search_and_test(memory: HeteroReadable, cue: Tensor, mask: Tensor | None, *, seed: int | None = None,
                             num_samples: int = 127, max_steps: int | None = None) -> Retrieval:
    """Hetero-associative recall, method 3: sample-and-test, then hill climbing by ±1 changes of one
    column until no neighbour lowers the distance (``steps``: climbing steps; ``converged``: stopped
    because none improved).

    Options:
        seed: seed of the draws (None: the global RNG).
        num_samples: draws per cue before climbing.
        max_steps: largest number of climbing steps (None: until no neighbour improves; a climb
            lowers a bounded distance, so it ends).
    """
    num_samples = check_positive_int(num_samples, "option num_samples")
    max_steps = check_int(max_steps, "option max_steps", minimum=0, allow_none=True)
    r = _read(memory, cue, mask, "search_and_test", seed, num_samples, max_steps)
    r.converged = r.info.pop("converged")
    return r


class EntropicHeteroMemory(Memory):
    """The 4-D entropic hetero-associative memory (module docstring).

    Args:
        dim: ``n + p``, the width of a pair ``[a | b]``.
        split: ``n``, the columns of domain A (``1 ≤ n < dim``).
        rows: ``m``, rows of domain A.
        rows_b: ``q``, rows of domain B (None: ``m``).
        iota, kappa, xi: the recognition parameters ``ι ≥ 0``, ``κ ≥ 0``, ``ξ`` (an int ≥ 0).

    Example:
        >>> import torch, varmem
        >>> pairs = torch.tensor([[0., 1., 1., 0.], [1., 0., 0., 1.]])       # [a | b], n = p = 2
        >>> memory = varmem.EntropicHeteroMemory(4, split=2, rows=2).write(pairs)
        >>> cue, mask = pairs, torch.tensor([True, True, False, False])      # recall b from a
        >>> memory.retrieve(cue, mask, method="search_and_test", seed=0).pattern
        tensor([[0., 1., 1., 0.],
                [1., 0., 0., 1.]])
    """

    methods = ("search_and_test", "sample_and_test", "random")
    default_method = "search_and_test"
    value_domain = UNIT

    def __init__(
        self, dim: int, split: int, rows: int = 16, rows_b: int | None = None, *, iota: float = 0.0,
        kappa: float = 0.0, xi: int = 0, device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        if self.dim < 2:
            raise ValueError(f"dim must be >= 2 (a pair of two domains), got {dim!r}")
        self.split = check_positive_int(split, "split")
        if self.split >= self.dim:
            raise ValueError(f"split must lie in [1, dim - 1] = [1, {self.dim - 1}], got {split!r}")
        self.rows = check_positive_int(rows, "rows")
        self.rows_b = self.rows if rows_b is None else check_positive_int(rows_b, "rows_b")
        self.iota = check_non_negative(iota, "iota")
        self.kappa = check_non_negative(kappa, "kappa")
        self.xi = check_int(xi, "xi", minimum=0)
        n, p = self.split, self.dim - self.split
        self.register_buffer("counts", torch.zeros(n, p, self.rows, self.rows_b, dtype=self.dtype,
                                                   device=self.device))
        self.register_buffer("size", torch.zeros((), dtype=torch.long, device=self.device))

    # --- protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.size)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "split": self.split, "rows": self.rows, "rows_b": self.rows_b, "iota": self.iota,
                "kappa": self.kappa, "xi": self.xi}

    def _rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(q(a) [..., n], q(b) [..., p])``."""
        return quantise(x[..., :self.split], self.rows), quantise(x[..., self.split:], self.rows_b)

    def _values(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([grid(self.rows, self.dtype, self.device)[a], grid(self.rows_b, self.dtype, self.device)[b]],
                         -1)

    def write(self, items: Any) -> "EntropicHeteroMemory":
        """Register pairs ``items [N, n + p]`` (``[a | b]`` in ``[0, 1]``): ``R(i, j, a_i, b_j) += 1``."""
        items = self.prepare_items(items)
        a, b = self._rows(items)
        N, n, p = items.shape[0], self.split, self.dim - self.split
        i = torch.arange(n, device=self.device).view(1, n, 1).expand(N, n, p)
        j = torch.arange(p, device=self.device).view(1, 1, p).expand(N, n, p)
        k, ll = a.unsqueeze(-1).expand(N, n, p), b.unsqueeze(1).expand(N, n, p)
        delta = torch.zeros_like(self.counts).index_put_((i, j, k, ll), torch.ones((), dtype=self.dtype,
                                                                                   device=self.device).expand(N, n, p),
                                                         accumulate=True)
        self.counts = (self.counts + delta).clamp_max(MAX_COUNT)
        self.size = self.size + N
        return self

    def check_state(self) -> None:
        c = self.counts
        shape = (self.split, self.dim - self.split, self.rows, self.rows_b)
        if tuple(c.shape) != shape:
            raise ValueError(f"counts must have shape {list(shape)}, got {list(c.shape)}")
        if self.size.dim() != 0 or int(self.size) < 0:
            raise ValueError("size must be a 0-d count >= 0")
        if bool((c < 0).any()) or bool((c > MAX_COUNT).any()) or not torch.equal(c, c.round()):
            raise ValueError(f"counts must hold whole numbers in [0, {MAX_COUNT}]")
        totals = c.sum((-1, -2))
        if bool((totals > self.size).any()) or bool(((totals != self.size) & (c < MAX_COUNT).all(-1).all(-1)).any()):
            raise ValueError("counts do not match size: every (i, j) plane counts each registered pair once")

    # --- the relation's own quantities ------------------------------------------------------------
    def filtered(self) -> Tensor:
        """``R_ι``: the ι-filtered relation ``[n, p, m, q]``."""
        if self.iota == 0:
            return self.counts
        threshold = (self.iota * _plane_means(self.counts))[..., None, None]
        return torch.where(self.counts >= threshold, self.counts, torch.zeros_like(self.counts))

    def entropy(self) -> Tensor:
        """The memory's entropy in bits: the mean over ``(i, j)`` planes of ``H(R(i, j) / Σ R(i, j))``."""
        flat = self.counts.flatten(-2)
        total = flat.sum(-1, keepdim=True)
        probs = torch.where(total > 0, flat / total.clamp_min(1), torch.zeros_like(flat))
        return entropy_bits(probs).mean()

    def recognise(self, items: Any) -> tuple[Tensor, Tensor]:
        """``(recognised [B], mismatches [B])`` of the pairs ``items [B, n + p]`` (module docstring)."""
        self._check_not_empty()
        items = self.prepare_items(items)
        a, b = self._rows(items)
        mismatches = self._mismatches(a, b)
        n, p = self.split, self.dim - self.split
        i, j = torch.arange(n, device=self.device)[:, None], torch.arange(p, device=self.device)[None, :]
        weight = self.counts[i, j, a[:, :, None], b[:, None, :]].mean((-1, -2))
        recognised = (mismatches <= self.xi) & (weight >= self.kappa * _plane_means(self.counts).mean())
        return recognised, mismatches

    def _mismatches(self, a: Tensor, b: Tensor) -> Tensor:
        n, p = self.split, self.dim - self.split
        i, j = torch.arange(n, device=self.device)[:, None], torch.arange(p, device=self.device)[None, :]
        return (self.filtered()[i, j, a[..., :, None], b[..., None, :]] == 0).sum((-1, -2))

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The energy of the module docstring (``[...]`` for ``z [..., D]``)."""
        a, b = self._rows(z)
        spacing = torch.cat([torch.full((self.split,), row_spacing(self.rows)),
                             torch.full((self.dim - self.split,), row_spacing(self.rows_b))]).to(z)
        e = self._mismatches(a, b).to(z.dtype) + (((z - self._values(a, b)) / spacing) ** 2).sum(-1)
        if cue is not None:
            off = ((z - self._values(*self._rows(cue))) / spacing) ** 2
            if mask is not None:
                off = torch.where(mask, off, torch.zeros_like(off))
            e = e + off.sum(-1)
        return e

    # --- reads ---------------------------------------------------------------------------------
    def hetero_read(self, cue: Tensor, mask: Tensor | None, how: str, generator: Any, num_samples: int,
                    max_steps: int | None) -> tuple[Tensor, dict[str, Any], int]:
        """``(pattern [B, D], info, steps)`` of the reads of the module docstring."""
        B, n = cue.shape[0], self.split
        observed = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand_as(cue).clone()
        a, b = self._rows(cue)
        R = self.filtered()
        sides = {  # (table from the cue side to the filled side, cue rows, cue observed, fill rows, fill observed)
            "b": (R.permute(0, 2, 1, 3), a, observed[:, :n], b, observed[:, n:]),
            "a": (R.permute(1, 3, 0, 2), b, observed[:, n:], a, observed[:, :n]),
        }
        out, recognised, distance = {}, torch.ones(B, dtype=torch.bool, device=cue.device), cue.new_zeros(B)
        converged, steps = torch.ones(B, dtype=torch.bool, device=cue.device), 0
        for side, (table, c_rows, c_obs, f_rows, f_obs) in sides.items():
            if bool(f_obs.all()):
                out[side] = f_rows
                continue
            proj = _project(table, c_rows, c_obs)  # [B, c_out, r_out]
            none = ~c_obs.any(-1)
            if bool(none.any()):
                marginal = table.sum((0, 1)).expand_as(proj)
                proj = torch.where(none[:, None, None], marginal, proj)
            empty = ((proj.sum(-1) == 0) & ~f_obs).sum(-1)
            recognised &= empty <= self.xi
            back = table.permute(2, 3, 0, 1)  # [c_out, r_out, c_in, r_in]
            if how == "random":
                rows = _draw(proj, generator)
            else:
                draws = _draw(proj.unsqueeze(1).expand(B, num_samples, *proj.shape[1:]), generator)  # [B, S, c]
                draws = torch.where(f_obs.unsqueeze(1), f_rows.unsqueeze(1), draws)
                d = self._distances(back, draws, c_rows, c_obs)  # [B, S]
                best = d.argmin(-1)
                rows = draws[torch.arange(B, device=cue.device), best]
                dist_best = d.gather(-1, best[:, None])[:, 0]
                if how == "search_and_test":
                    rows, dist_best, done, taken = self._climb(back, proj, rows, dist_best, c_rows, c_obs, f_obs,
                                                               generator, max_steps)
                    converged &= done
                    steps = max(steps, taken)
                distance = distance + dist_best
            out[side] = torch.where(f_obs, f_rows, rows)
        info: dict[str, Any] = {"recognised": recognised}
        if how != "random":
            info["distance"] = distance
        if how == "search_and_test":
            info["converged"] = converged
        return self._values(out["a"], out["b"]), info, steps

    def _stats(self, back: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Back-projection sums and zero counts ``[..., c_in, r_in]`` of candidates ``rows [..., c_out]``:
        ``Σ_j back[j, rows_j]`` and ``Σ_j [back[j, rows_j] = 0]``, as one-hot matrix products."""
        c_out, r_out, c_in, r_in = back.shape
        onehot = torch.nn.functional.one_hot(rows, r_out).to(back.dtype).flatten(-2)  # [..., c_out·r_out]
        flat = back.reshape(c_out * r_out, c_in * r_in)
        sums = (onehot @ flat).unflatten(-1, (c_in, r_in))
        zeros = (onehot @ (flat == 0).to(back.dtype)).unflatten(-1, (c_in, r_in))
        return sums, zeros

    def _distances(self, back: Tensor, draws: Tensor, c_rows: Tensor, c_obs: Tensor) -> Tensor:
        """``[B, S]`` distances of candidates ``draws [B, S, c_out]``, in blocks of bounded size."""
        B, S, c_out = draws.shape
        per_cue = S * (c_out * back.shape[1] + back.shape[2] * back.shape[3])
        step = max(1, _CHUNK // max(per_cue, 1))
        out = []
        for s in range(0, B, step):
            sums, zeros = self._stats(back, draws[s:s + step])
            out.append(_distance_from_stats(sums, zeros, c_rows[s:s + step, None], c_obs[s:s + step, None]))
        return torch.cat(out)

    def _climb(self, back: Tensor, proj: Tensor, rows: Tensor, dist: Tensor, c_rows: Tensor, c_obs: Tensor,
               f_obs: Tensor, generator: Any, max_steps: int | None) -> tuple[Tensor, Tensor, Tensor, int]:
        """Hill climbing by ±1 changes of one unobserved column to a non-zero cell of the projection,
        to a uniformly chosen improving neighbour; every step evaluates all ``2·c_out`` neighbours of
        every cue still climbing at once (a neighbour changes one column, so its back-projection is
        the current one with one slice swapped)."""
        c_out, r_out = rows.shape[1], proj.shape[-1]
        rows, dist = rows.clone(), dist.clone()
        active = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
        cols = torch.arange(c_out, device=rows.device)
        steps = 0
        while max_steps is None or steps < max_steps:
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            r, d0 = rows[idx], dist[idx]
            sums, zeros = self._stats(back, r)  # [A, c_in, r_in]
            old = back[cols, r]  # [A, c_out, c_in, r_in]
            gains, cands, dists = [], [], []
            for delta in (-1, 1):
                cand = (r + delta).clamp(0, r_out - 1)
                valid = (r + delta >= 0) & (r + delta < r_out) & ~f_obs[idx]
                valid &= proj[idx].gather(-1, cand.unsqueeze(-1)).squeeze(-1) > 0
                new = back[cols, cand]
                n_sums = sums.unsqueeze(1) - old + new
                n_zeros = zeros.unsqueeze(1) - (old == 0).to(old.dtype) + (new == 0).to(old.dtype)
                d = _distance_from_stats(n_sums, n_zeros, c_rows[idx, None], c_obs[idx, None])  # [A, c_out]
                gains.append(torch.where(valid, d0[:, None] - d, torch.full_like(d, -math.inf)))
                cands.append(cand)
                dists.append(d)
            gain, cand, d = torch.cat(gains, -1), torch.cat(cands, -1), torch.cat(dists, -1)  # [A, 2 c_out]
            improving = gain > 1e-12 * (1 + d0[:, None])
            u = torch.rand(gain.shape, generator=generator, device=rows.device, dtype=dist.dtype)
            pick = torch.where(improving, u, torch.full_like(u, -1.0)).argmax(-1)
            moved = improving.any(-1)
            a = torch.arange(idx.numel(), device=rows.device)
            col = pick % c_out
            r[a, col] = torch.where(moved, cand[a, pick], r[a, col])
            rows[idx] = r
            dist[idx] = torch.where(moved, d[a, pick], d0)
            active[idx] = moved
            steps += 1
        return rows, dist, ~active, steps
