"""Indexed reads (:mod:`varmem.indexed`): exact kernel over faiss top-k candidates, with a bound.

References: the exact read of the same memory (all N items); the true neglected mass
``1 - Σ_{i∈C} w_i`` from the exact weights, which the reported bound must exceed (flat index:
the bound is a theorem); the mean error ``|m_C - m| ≤ ε · (max ξ - min ξ)`` per dimension.
"""

from __future__ import annotations

import sys

import faiss  # a test requirement (setup.py): these tests must run, not skip
import pytest
import torch

import varmem
from varmem.indexed import IndexedMemory, neglected_mass_bound


def _clustered(n: int, d: int, seed: int, clusters: int = 20, spread: float = 0.15) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=g, dtype=torch.float64)
    return centres[torch.randint(clusters, (n,), generator=g)] + spread * torch.randn(n, d, generator=g,
                                                                                       dtype=torch.float64)


def _kde(items, bandwidth=0.05, noise=0.05):
    return varmem.KernelDensityMemory(items.shape[1], bandwidth=bandwidth, noise_scale=noise,
                                      dtype=torch.float64).write(items)


def _true_neglected(indexed, exact, cues):
    """``1 - Σ_{i∈C_b} p(i | x_b)`` from the exact posterior weights at the index's candidates."""
    w = exact.retrieve(cues, method="exact", return_weights=True).weights
    found = indexed._backend.search(cues)
    pos = torch.searchsorted(indexed.ids, found)
    return 1 - w.gather(1, pos).sum(-1)


def test_bound_holds_and_the_read_matches_the_exact_one():
    items = _clustered(3000, 8, 0, clusters=300)
    g = torch.Generator().manual_seed(1)
    cues = items[:40] + 0.05 * torch.randn(40, 8, generator=g, dtype=torch.float64)
    exact = _kde(items)
    indexed = IndexedMemory(_kde(items), k=16, tol=1.0)  # tol 1: never fall back, to test the bound itself
    got = indexed.retrieve(cues, method="exact", return_weights=True)
    want = exact.retrieve(cues, method="exact", return_weights=True)
    bound = got.info["neglected_mass_bound"]
    true = _true_neglected(indexed, exact, cues)
    assert not got.info["exact_fallback"].any()
    assert (true <= bound + 1e-12).all()  # the theorem (flat index: the candidates are the true top-k)
    assert bound.max() < 1e-3 and true.max() > 0  # informative, and there is something to neglect
    span = items.amax(0) - items.amin(0)
    assert ((got.pattern - want.pattern).abs() <= bound[:, None] * span + 1e-12).all()
    assert torch.equal(got.index, want.index)
    assert torch.allclose(got.weights.sum(-1), torch.ones(40, dtype=torch.float64))
    # negative control: one candidate in a cluster of near-duplicates leaves real mass out, and says so
    one = IndexedMemory(_kde(items, bandwidth=0.3), k=1, tol=1.0).retrieve(cues, method="exact")
    assert one.info["neglected_mass_bound"].min() > 0.5


def test_cues_over_the_tolerance_are_read_exactly():
    items = _clustered(1500, 6, 2)
    cues = items[:10] + 0.5
    exact = _kde(items, bandwidth=1.0, noise=1.0)  # a broad kernel: top-k is not enough
    indexed = IndexedMemory(_kde(items, bandwidth=1.0, noise=1.0), k=8, tol=1e-3)
    got = indexed.retrieve(cues, method="exact")
    assert got.info["exact_fallback"].all() and (got.info["neglected_mass_bound"] == 0).all()
    assert torch.allclose(got.pattern, exact.retrieve(cues, method="exact").pattern, atol=1e-12)
    # a partial cue has a per-dimension precision: no index applies, the read is exact
    mask = torch.ones(6, dtype=torch.bool)
    mask[0] = False
    got = indexed.retrieve(cues, mask, method="exact")
    assert got.info["exact_fallback"].all()
    assert torch.allclose(got.pattern, exact.retrieve(cues, mask, method="exact").pattern, atol=1e-12)


def test_index_follows_writes_forgets_deletes_and_survives_save(tmp_path):
    items = _clustered(2000, 8, 3)
    extra = _clustered(50, 8, 4)
    indexed = IndexedMemory(_kde(items[:1000]), k=16, index="IVF16,Flat", nprobe=16)
    indexed.write(items[1000:]).write(extra)
    indexed.forget([0, 5, 2049]).delete(items[[10, 1500]])
    keep = torch.ones(2050, dtype=torch.bool)
    keep[[0, 5, 2049, 10, 1500]] = False
    reference = _kde(torch.cat([items, extra])[keep])
    assert len(indexed) == indexed.index.ntotal == 2045 and torch.equal(indexed.memory.items, reference.items)
    cues = reference.items[[3, 700, 2040]] + 0.02
    want = reference.retrieve(cues, method="fixed_point", max_steps=3, return_weights=True)
    got = indexed.retrieve(cues, method="fixed_point", max_steps=3, return_weights=True)
    assert torch.equal(got.index, want.index)  # positions follow the forgets
    assert torch.allclose(got.pattern, want.pattern, atol=1e-6)
    with pytest.raises(KeyError):
        indexed.delete(torch.full((1, 8), 50.0, dtype=torch.float64))
    stray = IndexedMemory(_kde(items[:100]), k=4)
    stray.memory.write(extra[:1])  # behind the index's back: a read refuses instead of ignoring the item
    with pytest.raises(RuntimeError, match="only through IndexedMemory"):
        stray.retrieve(cues)
    assert len(indexed) == indexed.index.ntotal == 2045  # a refused delete removes nothing
    with pytest.raises(ValueError):
        indexed.write(torch.zeros(3, 7))
    assert len(indexed) == indexed.index.ntotal == 2045

    path = indexed.save(tmp_path / "indexed.safetensors")
    loaded = IndexedMemory.load(path)
    assert torch.equal(loaded.ids, indexed.ids) and loaded.index.ntotal == 2045
    again = loaded.retrieve(cues, method="fixed_point", max_steps=3, return_weights=True)
    assert torch.equal(again.pattern, got.pattern) and torch.equal(again.weights, got.weights)
    loaded.write(extra[:2])  # new ids continue after the saved ones
    assert loaded.ids[-2:].tolist() == [2050, 2051]  # 2049 was forgotten: ids are never reused


def test_dot_kernel_of_a_modern_hopfield_network():
    g = torch.Generator().manual_seed(5)
    patterns = varmem.normalize_patterns(torch.randn(3000, 16, generator=g, dtype=torch.float64))
    cues = patterns[:20] + 0.05 * torch.randn(20, 16, generator=g, dtype=torch.float64)
    exact = varmem.ModernHopfield(16, beta=60.0, dtype=torch.float64).write(patterns)
    indexed = IndexedMemory(varmem.ModernHopfield(16, beta=60.0, dtype=torch.float64).write(patterns), k=32)
    got, want = indexed.retrieve(cues, return_weights=True), exact.retrieve(cues, return_weights=True)
    assert indexed._backend.kernel == "dot" and indexed.index.metric_type == faiss.METRIC_INNER_PRODUCT
    bound = got.info["neglected_mass_bound"]
    assert torch.equal(got.index, want.index)
    assert ((got.pattern - want.pattern).abs().amax(-1) <= 2 * bound + 1e-12).all()  # |ξ_d| ≤ 1


def test_bad_options_and_a_missing_faiss(monkeypatch):
    memory = _kde(_clustered(100, 4, 6))
    for bad in (dict(k=0), dict(tol=-1.0), dict(index="HNSW32"), dict(kernel="cosine"), dict(nprobe=0)):
        with pytest.raises(ValueError):
            IndexedMemory(memory, **bad)
    with pytest.raises(ValueError, match="at least"):
        IndexedMemory(memory, index="IVF256,Flat")
    assert memory.kernel_backend is None  # a refused wrap leaves the memory plain
    with pytest.raises(TypeError):
        IndexedMemory(varmem.ClassicalHopfield(4))
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"varmem\[faiss\]"):
        IndexedMemory(memory)
    assert float(neglected_mass_bound(torch.tensor([0.0]), torch.tensor([0.0]), 2, 1)) == pytest.approx(0.5)
