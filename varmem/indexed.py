"""Indexed reads: kernel sums over the top-k candidates of a nearest-neighbour index (faiss).

An exact read of a kernel-sum memory costs ``O(B N D)``.  When the kernel is sharp, almost all of
the mass ``Σ_i exp ℓ_bi`` sits on a few items near the cue; an :class:`IndexedMemory` asks a faiss
index (L2 for the Gaussian kernel, inner product for the dot kernel: the logit is a decreasing
resp. increasing function of the index's score) for the ``k`` best items of each cue, and computes
the exact kernel on those candidates ``C_b`` only.  The mass it leaves out is bounded by the
``k``-th logit: every other item has ``ℓ_bi ≤ ℓ_(k)`` (if the index returned the true top-k), so

    ε_b = Σ_{i∉C_b} e^{ℓ_bi} / Σ_i e^{ℓ_bi}  ≤  (N - k) e^{ℓ_(k)} / (Σ_{i∈C_b} e^{ℓ_bi} + (N - k) e^{ℓ_(k)})
        = sigmoid(log(N - k) + ℓ_(k) - lse_C).

Each read reports that bound per cue (``Retrieval.info["neglected_mass_bound"]``, the largest over
the kernel sums of the read) and recomputes exactly (all ``N`` items) the cues whose bound exceeds
``tol`` (``info["exact_fallback"]``).  With ``index="flat"`` (exact k-NN) the bound is a proof;
with an inverted-file index (``"IVF<nlist>,Flat"``, ``"IVF<nlist>,SQ8"``) the candidates are the
best of the ``nprobe`` probed lists, and the bound holds only if those contain the true top-k
(``experiments/bench_indexed.py`` measures how often).  Reads whose kernel the index cannot rank
(a partial cue's per-dimension precision, item biases, separate values, another kernel) are exact.

The index is kept in step with :meth:`IndexedMemory.write`, :meth:`~IndexedMemory.forget` and
:meth:`~IndexedMemory.delete` (each stored row carries a faiss id) and saved with the memory in one
safetensors file (:func:`faiss.serialize_index` bytes as a uint8 tensor; nothing is pickled).

faiss is an optional dependency: ``pip install varmem[faiss]`` (the ``faiss-cpu`` wheel).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ._version import __version__
from .helpers import match_rows, row_selection
from .kernels import KernelBackend, KernelStats, as_kernel, kernel_stats
from .memory import Memory, memory_class
from .validation import check_int, check_non_negative, check_positive_int, check_seed

__all__ = ["IndexedMemory", "IndexBackend", "neglected_mass_bound"]

_FORMAT = "varmem-indexed"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("indexed reads need faiss (CPU build): pip install 'varmem[faiss]' "
                          "(or pip install faiss-cpu)") from None
    return faiss


def neglected_mass_bound(kth_logit: Tensor, lse_candidates: Tensor, num_items: int, num_candidates: Tensor | int,
                         *, log: bool = False) -> Tensor:
    """``[B]`` the bound ``sigmoid(log(N - k) + ℓ_(k) - lse_C)`` on the softmax mass outside the
    candidates (module docstring); 0 where the candidates are all the items.  ``log=True``: its
    logarithm (``logsigmoid``, accurate far below the dtype's smallest number; ``-inf`` for 0)."""
    rest = (num_items - torch.as_tensor(num_candidates, device=kth_logit.device)).to(kth_logit.dtype)
    log_rest = rest.clamp_min(1).log() + kth_logit
    value = torch.nn.functional.logsigmoid(log_rest - lse_candidates)
    value = torch.where(rest > 0, value, torch.full_like(value, -math.inf))
    return value if log else value.exp()


class IndexBackend(KernelBackend):
    """The :class:`varmem.kernels.KernelBackend` of an :class:`IndexedMemory` (module docstring).

    ``bound`` / ``fallback`` (``[B]``) accumulate over the kernel sums of one read (:meth:`reset`).
    """

    holds_all_items = True

    def __init__(self, index: Any, kernel: str, k: int, tol: float) -> None:
        self.index, self.kernel, self.k, self.tol = index, kernel, k, tol
        self.ids = torch.zeros(0, dtype=torch.long)  # the faiss id of every stored row, increasing
        self.next_id = 0
        self.reset(0)

    def reset(self, batch: int) -> None:
        self.log_bound = torch.full((batch,), -math.inf, dtype=torch.float64)
        self.fallback = torch.zeros(batch, dtype=torch.bool)
        self.indexed_calls = 0

    @property
    def bound(self) -> Tensor:
        """``[B]`` the largest bound on the neglected mass over the read's kernel sums (0: exact)."""
        return self.log_bound.exp()

    def _record(self, log_bound: Tensor, fallback: Tensor) -> None:
        if self.log_bound.shape != log_bound.shape:
            self.reset(log_bound.shape[0])
        self.log_bound = torch.maximum(self.log_bound, log_bound.detach().to("cpu", torch.float64))
        self.fallback |= fallback.to("cpu")

    def _usable(self, query: Tensor, precision: Any, kernel: Any, item_bias: Any, values: Any) -> bool:
        scalar = not torch.is_tensor(precision) or precision.dim() == 0
        return (scalar and item_bias is None and values is None and as_kernel(kernel).name == self.kernel
                and not (torch.is_grad_enabled() and query.requires_grad))

    def search(self, query: Tensor) -> Tensor:
        """``[B, k]`` faiss ids of each query's candidates (-1 where the index found fewer)."""
        q = np.ascontiguousarray(query.detach().to("cpu", torch.float32).numpy())
        _, ids = self.index.search(q, min(self.k, self.index.ntotal))
        return torch.from_numpy(ids).to(query.device)

    def kernel_stats(self, query: Tensor, items: Tensor, precision: Tensor | float, *, kernel: Any = "gaussian",
                     second_moment: bool = False, weights: bool = False, item_bias: Tensor | None = None,
                     values: Tensor | None = None, return_index: bool = True, return_lse: bool = True,
                     chunk_size: int | None = None, workspace: Any = None) -> KernelStats:
        options = dict(kernel=kernel, second_moment=second_moment, weights=weights, item_bias=item_bias,
                       values=values, return_index=return_index, return_lse=return_lse, chunk_size=chunk_size,
                       workspace=workspace)
        B, N = query.shape[0], items.shape[0]
        if N != self.ids.shape[0]:
            raise RuntimeError(f"the memory holds {N} items but its index {self.ids.shape[0]}: change an indexed "
                               "memory only through IndexedMemory (write / forget / delete)")
        if not self._usable(query, precision, kernel, item_bias, values) or N <= self.k:
            self._record(torch.full((B,), -math.inf), torch.ones(B, dtype=torch.bool))
            return kernel_stats(query, items, precision, **options)
        self.indexed_calls += 1
        found = self.search(query)  # [B, k]
        pos = torch.searchsorted(self.ids.to(query.device), found.clamp_min(0)).clamp_max(N - 1)
        valid = (found >= 0) & (self.ids.to(query.device)[pos] == found)
        cand = items[pos]  # [B, k, D]
        p = precision if not torch.is_tensor(precision) else precision.to(query.dtype)
        if self.kernel == "gaussian":
            logits = (query.unsqueeze(1) - cand).square_().sum(-1).mul_(-0.5 * p)
        else:
            logits = torch.einsum("bd,bkd->bk", query, cand).mul_(p)
        logits = logits.masked_fill(~valid, -math.inf)
        lse = torch.logsumexp(logits, -1)
        w = torch.softmax(logits, -1)
        mean = torch.einsum("bk,bkd->bd", w, cand)
        second = torch.einsum("bk,bkd->bd", w, cand * cand) if second_moment else None
        kth = logits.masked_fill(~valid, math.inf).amin(-1)
        log_bound = neglected_mass_bound(kth, lse, N, valid.sum(-1), log=True)
        top, arg = logits.max(-1)
        index = pos.gather(1, arg[:, None])[:, 0]
        dense = None
        if weights:
            dense = query.new_zeros(B, N).scatter_add_(1, pos, w.masked_fill(~valid, 0.0))
        redo = log_bound > math.log(self.tol) if self.tol > 0 else log_bound > -math.inf
        if bool(redo.any()):  # the cues whose neglected mass may exceed tol: exact over all items
            rows = redo.nonzero().flatten()
            exact = kernel_stats(query[rows], items, precision, **{**options, "return_index": True,
                                                                   "return_lse": True, "workspace": None})
            lse, mean, index = lse.clone(), mean.clone(), index.clone()
            lse[rows], mean[rows], index[rows] = exact.lse, exact.mean, exact.index
            if second is not None:
                second[rows] = exact.second_moment
            if dense is not None:
                dense[rows] = exact.weights
            log_bound = log_bound.masked_fill(redo, -math.inf)
        self._record(log_bound, redo)
        return KernelStats(lse=lse if return_lse else None, mean=mean, index=index if return_index else None,
                           second_moment=second, weights=dense, top=top if return_index else None)


def _make_index(spec: str, dim: int, metric: str) -> Any:
    faiss = _faiss()
    kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    if spec == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatL2(dim) if metric == "l2" else faiss.IndexFlatIP(dim))
    index = faiss.index_factory(dim, spec, kind)
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        index = faiss.IndexIDMap2(index)
    return index


class IndexedMemory:
    """A kernel-sum memory read through a nearest-neighbour index (module docstring).

    Args:
        memory: a memory with ``shardable = True`` (its state is the ``items`` buffer and its reads are
            kernel sums: :class:`varmem.KernelDensityMemory`, :class:`varmem.ModernHopfield`); the
            items it holds are indexed now.
        k: candidates per cue.
        tol: largest reported bound on the neglected mass before a cue is read exactly.
        index: ``"flat"`` (exact k-NN, a rigorous bound) or a faiss factory string with an inverted
            file (``"IVF1024,Flat"``, ``"IVF1024,SQ8"``), trained on the stored items (at least
            ``nlist`` of them must be stored first).
        nprobe: inverted lists searched per cue (IVF indexes).
        kernel: the kernel of the memory's reads, ``"gaussian"`` (L2 index) or ``"dot"`` (inner
            product); default: the memory's ``_kernel`` where it has one, else ``"gaussian"``.
        train_size: items sampled (seeded by ``seed``) to train an IVF index.

    Reads: :meth:`retrieve` as the memory's (all its methods; kernel sums that an index cannot rank
    are exact); ``info`` gains ``neglected_mass_bound`` ``[B]``, ``exact_fallback`` ``[B]`` and
    ``candidates``.  Posterior draws (``num_samples``) are exact.
    """

    def __init__(self, memory: Memory, *, k: int = 64, tol: float = 1e-3, index: str = "flat", nprobe: int = 8,
                 kernel: str | None = None, train_size: int = 262_144, seed: int = 0) -> None:
        if not isinstance(memory, Memory) or not type(memory).shardable:
            raise TypeError(f"IndexedMemory needs a kernel-sum varmem memory (KernelDensityMemory, ModernHopfield), "
                            f"got {type(memory).__name__}")
        if memory.kernel_backend is not None:
            raise ValueError(f"this {type(memory).__name__} already has a kernel backend; wrap a plain memory")
        k = check_positive_int(k, "k")
        tol = check_non_negative(tol, "tol")
        nprobe = check_positive_int(nprobe, "nprobe")
        check_positive_int(train_size, "train_size")
        check_seed(seed, "seed")
        if not isinstance(index, str) or not (index == "flat" or index.startswith("IVF")):
            raise ValueError(f"index must be 'flat' or a faiss IVF factory string such as 'IVF1024,Flat', "
                             f"got {index!r}")
        kernel = kernel or getattr(memory, "_kernel", "gaussian")
        if kernel not in ("gaussian", "dot"):
            raise ValueError(f"kernel must be 'gaussian' or 'dot', got {kernel!r}")
        self.memory = memory
        self.spec, self.nprobe, self.train_size, self.seed = index, nprobe, train_size, seed
        faiss_index = _make_index(index, memory.dim, "l2" if kernel == "gaussian" else "ip")
        self._backend = IndexBackend(faiss_index, kernel, k, tol)
        if index != "flat":
            if len(memory) == 0:
                raise ValueError(f"an IVF index is trained on the stored items: write items before indexing "
                                 f"(or use index='flat'); {type(memory).__name__} is empty")
            self._train()
        self._add(memory.items)
        memory.__dict__["_kernel_backend"] = self._backend

    # --- the index ----------------------------------------------------------------------------
    @property
    def index(self) -> Any:
        """The faiss index (ids: :attr:`ids`)."""
        return self._backend.index

    @property
    def ids(self) -> Tensor:
        """``[N]`` the faiss id of each stored row."""
        return self._backend.ids

    def _ivf(self) -> Any:
        return _faiss().extract_index_ivf(self._backend.index)

    def _train(self) -> None:
        items = self.memory.items
        g = torch.Generator().manual_seed(self.seed)
        take = torch.randperm(items.shape[0], generator=g)[: self.train_size].sort().values
        sample = np.ascontiguousarray(items[take.to(items.device)].detach().to("cpu", torch.float32).numpy())
        ivf = self._ivf()
        if sample.shape[0] < ivf.nlist:
            raise ValueError(f"an IVF index with {ivf.nlist} lists needs at least {ivf.nlist} stored items to train, "
                             f"got {sample.shape[0]}")
        self._backend.index.train(sample)
        ivf.nprobe = self.nprobe

    def _add(self, rows: Tensor) -> None:
        b = self._backend
        n = rows.shape[0]
        if not n:
            return
        ids = torch.arange(b.next_id, b.next_id + n, dtype=torch.long)
        for s in range(0, n, 1 << 20):  # float32 copies of bounded size
            block = np.ascontiguousarray(rows[s : s + (1 << 20)].detach().to("cpu", torch.float32).numpy())
            b.index.add_with_ids(block, np.ascontiguousarray(ids[s : s + (1 << 20)].numpy()))
        b.ids = torch.cat([b.ids, ids])
        b.next_id += n

    def _remove(self, selected: Tensor) -> None:
        b = self._backend
        gone = b.ids[selected.cpu()]
        if gone.numel():
            b.index.remove_ids(np.ascontiguousarray(gone.numpy()))
        b.ids = b.ids[~selected.cpu()]
        self.memory.items = self.memory.items[~selected]
        self.memory.__dict__.pop("_growth", None)
        self.memory.refresh_derived_state()

    def __len__(self) -> int:
        return len(self.memory)

    def __repr__(self) -> str:
        return (f"IndexedMemory({type(self.memory).__name__}, stored={len(self)}, index={self.spec!r}, "
                f"k={self._backend.k}, tol={self._backend.tol})")

    # --- writing and forgetting -----------------------------------------------------------------
    def write(self, items: Any) -> "IndexedMemory":
        """Store ``items`` in the memory and the index (a refused write changes neither)."""
        rows = self.memory.prepare_items(items)
        start = self._backend.next_id
        self._add(rows)
        try:
            self.memory.append_rows("items", rows)
            self.memory.refresh_derived_state()
        except BaseException:
            b = self._backend
            b.index.remove_ids(np.arange(start, b.next_id, dtype=np.int64))
            b.ids = b.ids[: len(self.memory)]
            raise
        return self

    def forget(self, index: Any) -> "IndexedMemory":
        """Remove the items at ``index`` (as the memory's ``forget``) from the memory and the index."""
        self._remove(row_selection(index, len(self), self.memory.device))
        return self

    def delete(self, items: Any, *, atol: float = 0.0) -> "IndexedMemory":
        """Remove one stored copy of each item (within ``atol``); ``KeyError`` and nothing removed if
        some item is not stored."""
        return self.forget(match_rows(self.memory.items, self.memory.prepare_items(items), atol))

    # --- reading --------------------------------------------------------------------------------
    def retrieve(self, cue: Any, mask: Any = None, method: str | None = None, **options: Any) -> Any:
        """The memory's read with indexed kernel sums; ``info`` gains ``neglected_mass_bound`` (``[B]``,
        the largest bound over the read's kernel sums; 0 for exact ones) and its logarithm
        ``log_neglected_mass_bound`` (float64, exact far below float32's range), ``exact_fallback``
        (``[B]``: read over all items) and ``candidates`` (``k``)."""
        self._backend.reset(0)
        result = self.memory.retrieve(cue, mask, method, **options)
        b = self._backend
        B = result.pattern.shape[0]
        if b.bound.shape[0] != B:  # no kernel sum ran (e.g. max_steps=0 without weights)
            b.reset(B)
        result.info.update(neglected_mass_bound=b.bound, log_neglected_mass_bound=b.log_bound.clone(),
                           exact_fallback=b.fallback.clone(), candidates=b.k)
        return result

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: the items, their faiss ids, the serialised index (uint8), and the
        configuration as metadata."""
        faiss = _faiss()
        path = Path(path)
        b = self._backend
        tensors = {
            "items": self.memory.items.detach().to("cpu").clone().contiguous(),
            "ids": b.ids.clone().contiguous(),
            "index": torch.from_numpy(np.ascontiguousarray(faiss.serialize_index(b.index))).clone(),
        }
        meta = {"format": _FORMAT, "class": type(self.memory).__name__, "config": json.dumps(self.memory.config()),
                "dtype": str(self.memory.dtype).removeprefix("torch."), "varmem_version": __version__,
                "options": json.dumps({"k": b.k, "tol": b.tol, "index": self.spec, "nprobe": self.nprobe,
                                       "kernel": b.kernel, "train_size": self.train_size, "seed": self.seed,
                                       "next_id": b.next_id})}
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            save_file(tensors, str(partial), metadata=meta)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str | None = None) -> "IndexedMemory":
        """The memory and its index from :meth:`save`'s file (``ValueError`` for a file that is not one,
        or whose ids, items and index disagree)."""
        faiss = _faiss()
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not an IndexedMemory file (format {meta.get('format')!r})")
            items, ids, raw = f.get_tensor("items"), f.get_tensor("ids"), f.get_tensor("index")
        options = json.loads(meta["options"])
        memory = memory_class(meta["class"])(**json.loads(meta["config"]), dtype=getattr(torch, meta["dtype"]),
                                             device=device)
        increasing = ids.numel() < 2 or bool((ids.diff() > 0).all())
        if ids.dtype != torch.long or ids.shape != items.shape[:1] or not increasing:
            raise ValueError(f"{path}: the ids must be [N] increasing int64, one per item")
        index = faiss.deserialize_index(np.ascontiguousarray(raw.numpy()))
        if index.ntotal != items.shape[0] or index.d != memory.dim:
            raise ValueError(f"{path}: the index holds {index.ntotal} vectors of dim {index.d}, the memory "
                             f"{items.shape[0]} of dim {memory.dim}")
        if items.shape[0]:
            memory.append_rows("items", memory.prepare_items(items))
            memory.refresh_derived_state()
        self = cls.__new__(cls)
        self.memory = memory
        self.spec, self.nprobe = options["index"], check_int(options["nprobe"], "nprobe", minimum=1)
        self.train_size, self.seed = options["train_size"], options["seed"]
        self._backend = IndexBackend(index, options["kernel"], options["k"], options["tol"])
        self._backend.ids, self._backend.next_id = ids.clone(), int(options["next_id"])
        if self.spec != "flat":
            self._ivf().nprobe = self.nprobe
        memory.__dict__["_kernel_backend"] = self._backend
        return self
