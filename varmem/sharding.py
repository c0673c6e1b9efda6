"""Memories whose stored items are split across the processes of a ``torch.distributed`` group.

A kernel-sum memory (``Memory.shardable``: :class:`varmem.KernelDensityMemory`,
:class:`varmem.ModernHopfield`) reads through kernel sums ``Σ_i exp(ℓ_bi) f(ξ_i)`` over its
``N`` items.  Split the items into shards ``S_1 … S_W``, one per rank; each rank computes on its own
shard the log-normaliser ``lse_r = log Σ_{i∈S_r} exp ℓ_bi`` and the softmax moments
``m_r = Σ_{i∈S_r} w^{(r)}_bi ξ_i`` (``w^{(r)}`` normalised within the shard), and the group merges

    lse = log Σ_r exp(lse_r),     m = Σ_r exp(lse_r - lse) · m_r,

(the same online log-sum-exp that :func:`varmem.kernels.kernel_stats` uses between chunks), so a
read equals the single-process read of the concatenated items ``S_1 ‖ S_2 ‖ … ‖ S_W`` to float
tolerance: weights ``[B, N]`` (each shard's scaled by ``exp(lse_r - lse)``, gathered only when asked
for), the arg-max (the rank with the largest logit, ties to the lower rank), the exact posterior of
the kernel-density memory with its evidence, variance and samples (Gumbel-max per shard with
independent noise, the largest perturbed logit wins: an exact draw from the union).  Only ``[B, ·]``
statistics travel (one ``all_gather`` of ``W × B × (3 + 2D)`` numbers per kernel sum); no stored
item leaves its rank, except the sampled component means of posterior draws (the owner adds them).

Positions of items (``Retrieval.index``, ``weights`` columns, :meth:`ShardedMemory.forget`) are
rank-major: shard 0's items, then shard 1's, ...  A write fills the smallest shards first
(balanced), so it can move the positions of items on higher ranks, as ``forget`` moves those after
the forgotten ones in a single memory.

Every public method is collective (SPMD, as ``DistributedDataParallel``): all ranks call it with
the same arguments, checked (a fingerprint of the items or cues is compared across ranks; bad input
on any rank raises ``ValueError`` on every rank and changes nothing).  A rank that fails during a
read makes the others raise :class:`ShardFailure` (when its process exits, or after the group's
``timeout``); reads never change the shards, so every surviving rank still holds its items and can
write them with :meth:`ShardedMemory.save_shard`.

Checkpoints (:meth:`ShardedMemory.save`) are one safetensors file per shard plus ``manifest.json``
(class, configuration, dtype, shard sizes and SHA-256 checksums); :meth:`ShardedMemory.load` splits
the concatenated items contiguously over a group of any size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ._version import __version__
from .helpers import match_rows, row_selection, want_weights
from .kernels import KernelBackend, KernelStats, gumbel_max_items, kernel_stats
from .memory import Memory, memory_class
from .validation import check_non_negative

__all__ = ["ShardedMemory", "ShardGroup", "ShardFailure", "balanced_counts"]

MANIFEST = "manifest.json"
_FORMAT = "varmem-shards"
_MESSAGE_BYTES = 512


class ShardFailure(RuntimeError):
    """A collective operation of a sharded memory failed: another rank failed or left the group."""


def balanced_counts(sizes: list[int], n: int) -> list[int]:
    """How many of ``n`` new items each shard takes so that the sizes end as equal as possible
    (water-filling: the smallest shards first, ties to the lower rank)."""
    counts = [0] * len(sizes)
    target = list(sizes)
    for _ in range(n):  # n is a write's size; O(n W) with W ≤ a few hundred is negligible next to the copy
        r = min(range(len(target)), key=lambda k: (target[k], k))
        target[r] += 1
        counts[r] += 1
    return counts


class ShardGroup(KernelBackend):
    """The :class:`varmem.kernels.KernelBackend` of one shard: merges kernel sums over the group.

    ``sizes`` are the shard sizes in rank order (kept by :class:`ShardedMemory`); positions are
    rank-major, ``offsets[r] = Σ_{r' < r} sizes[r']``.
    """

    holds_all_items = False

    def __init__(self, group: Any = None) -> None:
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.sizes = [0] * self.world
        nccl = dist.get_backend(group) == "nccl"
        self.comm_device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        """Where collectives run: NCCL needs CUDA tensors, gloo takes CPU ones (and CUDA ones)."""

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for s in self.sizes:
            out.append(out[-1] + s)
        return out

    def total(self, local: int) -> int:
        return sum(self.sizes)

    # --- collectives, with failures named --------------------------------------------------
    def _fail(self, what: str, error: BaseException) -> ShardFailure:
        return ShardFailure(
            f"rank {self.rank} of {self.world}: the collective {what} of a sharded memory failed ({error}); another "
            f"rank failed or left the group.  This rank's {self.sizes[self.rank]} items are intact: write them with "
            "ShardedMemory.save_shard(path), then restart the group and load")

    def all_gather(self, t: Tensor, what: str) -> Tensor:
        """``[W, *t.shape]`` every rank's ``t`` (same shape on all ranks)."""
        home, t = t.device, t.to(self.comm_device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        try:
            dist.all_gather(out, t, group=self.group)
        except RuntimeError as e:
            raise self._fail(what, e) from e
        return torch.stack(out).to(home)

    def all_reduce(self, t: Tensor, what: str, op: Any = dist.ReduceOp.SUM) -> Tensor:
        home, t = t.device, t.to(self.comm_device, copy=True)
        try:
            dist.all_reduce(t, op=op, group=self.group)
        except RuntimeError as e:
            raise self._fail(what, e) from e
        return t.to(home)

    def barrier(self, what: str) -> None:
        self.all_reduce(torch.zeros(1), what)

    # --- kernel sums -------------------------------------------------------------------------
    def _check(self, query: Tensor, items: Tensor) -> None:
        if items.shape[0] != self.sizes[self.rank]:
            raise RuntimeError(f"rank {self.rank}: the shard holds {items.shape[0]} items but the group recorded "
                               f"{self.sizes[self.rank]}: change a sharded memory only through ShardedMemory")
        if torch.is_grad_enabled() and query.requires_grad:
            raise NotImplementedError("a sharded kernel sum is not differentiable; read under torch.no_grad()")

    def kernel_stats(self, query: Tensor, items: Tensor, precision: Tensor | float, *, kernel: Any = "gaussian",
                     second_moment: bool = False, weights: bool = False, item_bias: Tensor | None = None,
                     values: Tensor | None = None, return_index: bool = True, return_lse: bool = True,
                     chunk_size: int | None = None, workspace: Any = None) -> KernelStats:
        """:func:`varmem.kernels.kernel_stats` over all shards (module docstring: the merge)."""
        self._check(query, items)
        B = query.shape[0]
        dv = items.shape[1] if values is None else values.shape[1]
        if items.shape[0]:
            s = kernel_stats(query, items, precision, kernel=kernel, second_moment=second_moment, weights=weights,
                             item_bias=item_bias, values=values, return_index=return_index, return_lse=True,
                             chunk_size=chunk_size, workspace=workspace)
            lse, mean, second, local_w = s.lse, s.mean, s.second_moment, s.weights
            top = s.top if return_index else query.new_zeros(B)
            idx = s.index.to(torch.float64) if return_index else query.new_zeros(B, dtype=torch.float64)
        else:  # an empty shard adds no mass
            lse, top = query.new_full((B,), -math.inf), query.new_full((B,), -math.inf)
            idx = query.new_zeros(B, dtype=torch.float64)
            mean = query.new_zeros(B, dv)
            second = query.new_zeros(B, dv) if second_moment else None
            local_w = query.new_zeros(B, 0) if weights else None
        parts = [lse[:, None], top[:, None], idx[:, None], mean] + ([second] if second_moment else [])
        packed = torch.cat([p.to(torch.float64) for p in parts], -1)
        g = self.all_gather(packed, "kernel_stats")  # [W, B, 3 + dv (+ dv)], merged in float64
        lses = g[..., 0]
        total = torch.logsumexp(lses, 0)
        share = (lses - total).exp().nan_to_num(0.0)  # [W, B]: each shard's part of the mass
        merged_mean = (share.unsqueeze(-1) * g[..., 3 : 3 + dv]).sum(0).to(query.dtype)
        merged_second = None
        if second_moment:
            merged_second = (share.unsqueeze(-1) * g[..., 3 + dv :]).sum(0).to(query.dtype)
        index = best = None
        if return_index:
            winner = g[..., 1].argmax(0)  # the first maximum: ties go to the lower rank, as in one process
            offsets = torch.tensor(self.offsets[:-1], dtype=torch.float64, device=query.device)
            index = (offsets[winner] + g[..., 2].gather(0, winner[None])[0]).long()
            best = g[..., 1].amax(0).to(query.dtype)
        dense = None
        if weights:
            width = max(self.sizes)
            padded = query.new_zeros(B, width)
            padded[:, : local_w.shape[1]] = local_w * share[self.rank].to(query.dtype).unsqueeze(-1)
            gw = self.all_gather(padded, "kernel_stats weights")
            dense = torch.cat([gw[r, :, : self.sizes[r]] for r in range(self.world)], -1)
        return KernelStats(lse=total.to(query.dtype) if return_lse else None, mean=merged_mean, index=index,
                           second_moment=merged_second, weights=dense, top=best)

    def sample_items(self, query: Tensor, items: Tensor, precision: Tensor | float, num_samples: int, *,
                     kernel: Any = "gaussian", item_bias: Tensor | None = None,
                     generator: torch.Generator | None = None, chunk_size: int | None = None) -> Tensor:
        """``[S, B]`` exact draws from ``softmax_i ℓ_bi`` over all shards: Gumbel-max per shard with noise
        independent across ranks (a seed drawn from ``generator``, the same on every rank, mixed with
        the rank), the largest perturbed logit wins."""
        self._check(query, items)
        device = generator.device if generator is not None else torch.device("cpu")
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        local = torch.Generator(device=query.device).manual_seed((base + 1_000_003 * (self.rank + 1)) % 2**63)
        S, B = num_samples, query.shape[0]
        if items.shape[0]:
            value, index = gumbel_max_items(query, items, precision, num_samples, kernel=kernel, item_bias=item_bias,
                                            generator=local, chunk_size=chunk_size)
        else:
            value, index = query.new_full((S, B), -math.inf), torch.zeros(S, B, dtype=torch.long, device=query.device)
        g = self.all_gather(torch.stack([value.to(torch.float64), index.to(torch.float64)]), "sample_items")
        winner = g[:, 0].argmax(0)  # [S, B]
        offsets = torch.tensor(self.offsets[:-1], dtype=torch.float64, device=query.device)
        return (offsets[winner] + g[:, 1].gather(0, winner[None])[0]).long()

    def rows(self, items: Tensor, index: Tensor) -> Tensor:
        """``[..., D]`` the items at rank-major positions ``index``: the owners fill their rows, then a sum."""
        offsets = torch.tensor(self.offsets, device=index.device)
        owner = torch.searchsorted(offsets[1:], index, right=True)
        mine = owner == self.rank
        out = items.new_zeros(*index.shape, items.shape[1])
        out[mine] = items[index[mine] - offsets[self.rank]]
        return self.all_reduce(out, "rows")

    def all_max(self, value: float) -> float:
        return float(self.all_reduce(torch.tensor([value], dtype=torch.float64), "all_max", dist.ReduceOp.MAX))

    def mean_item(self, items: Tensor) -> Tensor:
        total = self.all_reduce(items.to(torch.float64).sum(0), "mean_item")
        return (total / max(1, sum(self.sizes))).to(items.dtype)


def _fingerprint(*tensors: Tensor | None) -> Tensor:
    """``[3 · len(tensors)]`` float64 numbers that differ, almost surely, between different tensors."""
    out = []
    for t in tensors:
        if t is None:
            out += [-1.0, 0.0, 0.0]
            continue
        flat = t.detach().reshape(-1).to(torch.float64).nan_to_num(0.0)
        ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        out += [float(flat.numel()), float(flat.sum()), float((flat * ramp).sum())]
    return torch.tensor(out, dtype=torch.float64)


def _sha256(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


class ShardedMemory:
    """A kernel-sum memory whose items are split over the ranks of a ``torch.distributed`` group.

    Args:
        memory: this rank's shard: a memory with ``shardable = True``, built with the same class,
            configuration and dtype on every rank (checked); items it already holds stay on this
            rank (each rank can load its own part of a data set).
        group: the process group (default: the default group, which must be initialised, e.g. by
            ``torchrun`` and ``dist.init_process_group("gloo")``; ``"nccl"`` on GPUs).
        timeout: seconds after which a collective of this memory gives up (a new gloo group is
            made); None keeps ``group``'s own timeout.

    Every method is collective (module docstring).  Reads: :meth:`retrieve` (``"exact"`` where the
    memory has it, ``"fixed_point"``) and :meth:`evidence`; ``len()`` is the total over shards.

    Example (under ``torchrun --nproc_per_node=2``)::

        dist.init_process_group("gloo")
        memory = ShardedMemory(KernelDensityMemory(64, bandwidth=0.3, noise_scale=0.2))
        memory.write(items)            # the same [N, 64] on every rank: each keeps about N / 2
        result = memory.retrieve(cues)  # equals the single-process read
    """

    def __init__(self, memory: Memory, group: Any = None, *, timeout: float | None = None) -> None:
        if not isinstance(memory, Memory) or not type(memory).shardable:
            raise TypeError(f"ShardedMemory needs a shardable varmem memory (a kernel-sum memory such as "
                            f"KernelDensityMemory or ModernHopfield), got {type(memory).__name__}")
        if memory.kernel_backend is not None:
            raise ValueError(f"this {type(memory).__name__} already has a kernel backend "
                             f"({type(memory.kernel_backend).__name__}); wrap a plain memory")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedMemory needs an initialised torch.distributed process group: launch with "
                               "torchrun and call torch.distributed.init_process_group('gloo') (or 'nccl') first")
        if timeout is not None:
            check_non_negative(timeout, "timeout")
            group = dist.new_group(ranks=list(range(dist.get_world_size(group))), timeout=timedelta(seconds=timeout),
                                   backend="gloo")
        self.local = memory
        self._group = ShardGroup(group)
        header = json.dumps([type(memory).__name__, memory.config(), str(memory.dtype)], sort_keys=True)
        self._agree_same(_fingerprint(torch.tensor(list(header.encode()), dtype=torch.float64)),
                         "the memory's class, configuration and dtype")
        sizes = self._group.all_gather(torch.tensor([len(memory)]), "init")
        self._group.sizes = [int(s) for s in sizes.flatten()]
        memory.__dict__["_kernel_backend"] = self._group
        memory.refresh_derived_state()

    # --- size and layout -----------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._group.rank

    @property
    def world_size(self) -> int:
        return self._group.world

    @property
    def sizes(self) -> list[int]:
        """Items per shard, in rank order."""
        return list(self._group.sizes)

    @property
    def dim(self) -> int:
        return self.local.dim

    def __len__(self) -> int:
        return sum(self._group.sizes)

    def __repr__(self) -> str:
        return f"ShardedMemory({type(self.local).__name__}, rank={self.rank}/{self.world_size}, sizes={self.sizes})"

    # --- agreement across ranks -----------------------------------------------------------------
    def _agree(self, error: BaseException | None, what: str) -> None:
        """Raise on every rank if ``error`` happened on any (the failing rank re-raises its own)."""
        message = b"" if error is None else f"{type(error).__name__}: {error}".encode()[:_MESSAGE_BYTES]
        row = torch.zeros(_MESSAGE_BYTES + 1, dtype=torch.int64)
        row[0] = len(message) if error is not None else -1
        row[1 : 1 + len(message)] = torch.tensor(list(message), dtype=torch.int64)
        g = self._group.all_gather(row, what)
        failed = [r for r in range(self.world_size) if int(g[r, 0]) >= 0]
        if not failed:
            return
        if error is not None:
            raise error
        r = failed[0]
        text = bytes(g[r, 1 : 1 + int(g[r, 0])].tolist()).decode(errors="replace")
        raise ValueError(f"{what} was refused on rank {r} ({text}); nothing was changed on any rank")

    def _agree_same(self, fingerprint: Tensor, what: str) -> None:
        g = self._group.all_gather(fingerprint, f"check of {what}")
        differ = [r for r in range(self.world_size) if not torch.allclose(g[r], g[0], rtol=1e-12, atol=0.0)]
        if differ:
            raise ValueError(f"ranks {differ} passed different {what} than rank 0: every rank must call a sharded "
                             "memory with the same arguments (nothing was changed)")

    def _prepared(self, fn: Any, what: str) -> Any:
        try:
            value, error = fn(), None
        except (ValueError, TypeError, IndexError, KeyError) as e:
            value, error = None, e
        self._agree(error, what)
        return value

    # --- writing and forgetting -----------------------------------------------------------------
    def write(self, items: Any) -> "ShardedMemory":
        """Store ``items`` (``[N, D]``, the same on every rank): each shard keeps a contiguous block,
        the smallest shards filled first (:func:`balanced_counts`).  No item crosses ranks."""
        rows = self._prepared(lambda: self.local.prepare_items(items), "write")
        self._agree_same(_fingerprint(rows), "items to write")
        counts = balanced_counts(self._group.sizes, rows.shape[0])
        start = sum(counts[: self.rank])
        mine = rows[start : start + counts[self.rank]]
        if mine.shape[0]:
            self.local.append_rows("items", mine)
        self._group.sizes = [s + c for s, c in zip(self._group.sizes, counts, strict=True)]
        self.local.refresh_derived_state()
        return self

    def _remove(self, selected_local: Tensor, removed_per_rank: list[int]) -> None:
        self.local.items = self.local.items[~selected_local]
        self.local.__dict__.pop("_growth", None)
        self._group.sizes = [s - k for s, k in zip(self._group.sizes, removed_per_rank, strict=True)]
        self.local.refresh_derived_state()

    def forget(self, index: Any) -> "ShardedMemory":
        """Remove the items at rank-major positions ``index`` (what ``forget`` of the memory accepts:
        an int, ints, a slice, a bool mask over all ``len(self)`` items); the owning shards drop them."""
        selected = self._prepared(lambda: row_selection(index, len(self), self.local.device), "forget")
        self._agree_same(_fingerprint(selected), "positions to forget")
        off = self._group.offsets
        counts = [int(selected[off[r] : off[r + 1]].sum()) for r in range(self.world_size)]
        self._remove(selected[off[self.rank] : off[self.rank + 1]], counts)
        return self

    def delete(self, items: Any, *, atol: float = 0.0) -> "ShardedMemory":
        """Remove one stored copy of each given item (within ``atol`` in max-norm), from whichever
        shard holds it (the lowest rank with a free match).  ``KeyError`` on every rank, and nothing
        removed anywhere, if some item is stored on no shard."""
        targets = self._prepared(lambda: (self.local.prepare_items(items), check_non_negative(atol, "atol"))[0],
                                 "delete")
        self._agree_same(_fingerprint(targets), "items to delete")
        local = self.local.items
        have = torch.zeros(targets.shape[0], dtype=torch.long)
        for j, target in enumerate(targets):  # deletions are few; each scan over the shard is vectorised
            if local.shape[0]:
                have[j] = int(((local - target).abs().amax(-1) <= atol).sum())
        counts = self._group.all_gather(have.cpu(), "delete")  # [W, T]
        missing = [j for j in range(targets.shape[0]) if int(counts[:, j].sum()) == 0]
        if missing:
            raise KeyError(f"items {missing} are stored on no shard; nothing was deleted")
        remaining = counts.clone()
        owner = []
        for j in range(targets.shape[0]):
            r = int((remaining[:, j] > 0).nonzero()[0])
            owner.append(r)
            same = [k for k in range(targets.shape[0]) if torch.equal(targets[k], targets[j])]
            remaining[r, same] -= 1
        mine = [j for j, r in enumerate(owner) if r == self.rank]

        def rows() -> Tensor:
            if not mine:
                return torch.zeros(0, dtype=torch.long)
            return match_rows(local, targets[mine], atol, what="not stored on this shard (copies split over shards)")

        found = self._prepared(rows, "delete")
        selected = torch.zeros(local.shape[0], dtype=torch.bool, device=local.device)
        selected[found] = True
        per_rank = [sum(1 for r in owner if r == k) for k in range(self.world_size)]
        self._remove(selected, per_rank)
        return self

    # --- reading --------------------------------------------------------------------------------
    def retrieve(self, cue: Any, mask: Any = None, method: str | None = None, **options: Any) -> Any:
        """Read all shards (the same cue on every rank): the memory's ``retrieve`` with its kernel sums
        merged over the group; equal to the single-process read of the rank-major concatenation.
        Methods: ``"exact"`` (where the memory has it) and ``"fixed_point"``."""
        local = self.local

        def check() -> tuple[Tensor, Tensor | None, str]:
            name = local.default_method if method is None else method
            if name not in ("exact", "fixed_point") or name not in local.methods:
                allowed = [m for m in local.methods if m in ("exact", "fixed_point")]
                raise ValueError(f"a sharded {type(local).__name__} reads with {allowed}, not {name!r} (the other "
                                 "engines differentiate or sample the whole energy)")
            c, m = local.prepare_cue(cue, mask)
            if len(self) == 0:
                raise ValueError(f"sharded {type(local).__name__} is empty: write items before reading it")
            local._engines[name].check_options({**local.default_options(name), **options})
            return c, m, name

        c, m, name = self._prepared(check, "retrieve")
        init = options.get("init")
        self._agree_same(_fingerprint(c, m, init if torch.is_tensor(init) else None), "cues")
        # resolve "automatic" weights with the total size, so that every rank takes the same path
        if options.get("return_weights") is None:
            options["return_weights"] = want_weights(None, c.shape[0], len(self))
        with torch.no_grad():
            return local.retrieve(c, m, name, **options)

    def evidence(self, cue: Any, mask: Any = None) -> Any:
        """``log p(x | M)`` over all shards (memories with a closed-form posterior)."""
        c, m = self._prepared(lambda: self.local.prepare_cue(cue, mask), "evidence")
        self._agree_same(_fingerprint(c, m), "cues")
        with torch.no_grad():
            return self.local.evidence(c, m)

    # --- checkpoints ----------------------------------------------------------------------------
    def _shard_metadata(self) -> dict[str, str]:
        local = self.local
        return {"format": _FORMAT, "class": type(local).__name__, "config": json.dumps(local.config()),
                "dtype": str(local.dtype).removeprefix("torch."), "rank": str(self.rank),
                "world_size": str(self.world_size), "varmem_version": __version__}

    def save_shard(self, path: str | os.PathLike) -> Path:
        """Write this rank's items to ``path`` (safetensors) without any collective: what a surviving
        rank does after a :class:`ShardFailure`.  Returns the path."""
        path = Path(path)
        items = self.local.items.detach().to("cpu").clone().contiguous()
        meta = {**self._shard_metadata(), "count": str(items.shape[0]), "sha256": _sha256(items)}
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            save_file({"items": items}, str(partial), metadata=meta)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``directory/shard-<rank>-of-<W>.safetensors`` on every rank and, on rank 0,
        ``directory/manifest.json`` (class, configuration, dtype, shard files, sizes, checksums)."""
        directory = Path(directory)
        name = f"shard-{self.rank:05d}-of-{self.world_size:05d}.safetensors"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.save_shard(directory / name)
            error = None
        except OSError as e:
            error = e
        self._agree(error, "save")
        items = self.local.items.detach().to("cpu").contiguous()
        digest = torch.tensor(list(bytes.fromhex(_sha256(items))), dtype=torch.int64)
        digests = self._group.all_gather(digest, "save")
        if self.rank == 0:
            meta = self._shard_metadata()
            manifest = {
                "format": _FORMAT, "format_version": "1", "class": meta["class"], "config": self.local.config(),
                "dtype": meta["dtype"], "dim": self.dim, "total": len(self), "varmem_version": __version__,
                "shards": [
                    {"file": f"shard-{r:05d}-of-{self.world_size:05d}.safetensors", "count": self._group.sizes[r],
                     "sha256": bytes(digests[r].tolist()).hex()}
                    for r in range(self.world_size)
                ],
            }
            tmp = directory / f".{MANIFEST}.partial"
            tmp.write_text(json.dumps(manifest, indent=1))
            os.replace(tmp, directory / MANIFEST)
        self._group.barrier("save")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, group: Any = None, *, timeout: float | None = None,
             device: torch.device | str | None = None) -> "ShardedMemory":
        """Rebuild a sharded memory from :meth:`save`'s directory on a group of any size: the items, in
        rank-major order of the saved shards, are split contiguously and evenly over the new ranks;
        each rank reads only its slice.  ``ValueError`` (on every rank) for a missing or inconsistent
        manifest or shard file; the checksums of fully read shards are verified."""
        directory = Path(directory)
        rank, world = dist.get_rank(group), dist.get_world_size(group)

        def read() -> Memory:
            manifest = json.loads((directory / MANIFEST).read_text())
            if manifest.get("format") != _FORMAT:
                raise ValueError(f"{directory / MANIFEST} is not a varmem shard manifest")
            memory = memory_class(manifest["class"])(**manifest["config"], dtype=getattr(torch, manifest["dtype"]),
                                                     device=device)
            counts = [int(s["count"]) for s in manifest["shards"]]
            total = sum(counts)
            if total != manifest["total"]:
                raise ValueError(f"manifest sizes {counts} do not add up to its total {manifest['total']}")
            lo, hi = rank * total // world, (rank + 1) * total // world
            parts, start = [], 0
            for shard, count in zip(manifest["shards"], counts, strict=True):
                a, b = max(lo, start), min(hi, start + count)
                if a < b or count == 0:
                    with safe_open(str(directory / shard["file"]), framework="pt") as f:
                        meta = f.metadata()
                        if int(meta["count"]) != count or meta["class"] != manifest["class"]:
                            raise ValueError(f"shard {shard['file']} does not match the manifest")
                        if a < b:
                            if a == start and b == start + count:
                                rows = f.get_tensor("items")
                                if _sha256(rows) != shard["sha256"]:
                                    raise ValueError(f"shard {shard['file']} fails its checksum (corrupted file)")
                            else:
                                rows = f.get_slice("items")[a - start : b - start]
                            parts.append(rows)
                start += count
            rows = torch.cat(parts) if parts else torch.empty(0, memory.dim, dtype=memory.dtype)
            if rows.dtype != memory.dtype or rows.dim() != 2 or rows.shape[1] != memory.dim:
                raise ValueError(f"shard items of dtype {rows.dtype}, shape {tuple(rows.shape)} do not fit "
                                 f"{manifest['class']}(dim={memory.dim}, dtype={memory.dtype})")
            if rows.shape[0]:
                memory.append_rows("items", memory.prepare_items(rows))
            return memory

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedMemory.load needs an initialised torch.distributed process group")
        probe = ShardGroup(group)
        try:
            memory, error = read(), None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            memory, error = None, e
        holder = cls.__new__(cls)
        holder._group = probe
        holder._agree(error, "load")
        return cls(memory, group, timeout=timeout)
