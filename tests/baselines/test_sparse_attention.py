"""sparsemax / 1.5-entmax against independent computations (brute force, scipy) and their properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from varmem.baselines.sparse_attention import (
    canonical_separation,
    entmax15,
    separation_conjugate,
    sparsemax,
)


def _brute_sparsemax(z: np.ndarray) -> np.ndarray:
    """Projection onto the simplex by enumerating supports: the KKT-consistent support wins."""
    n = len(z)
    best, best_dist = None, np.inf
    for k in range(1, n + 1):
        for support in itertools.combinations(range(n), k):
            s = list(support)
            tau = (z[s].sum() - 1) / k
            p = np.zeros(n)
            p[s] = z[s] - tau
            if (p[s] < 0).any():
                continue
            dist = ((p - z) ** 2).sum()
            if dist < best_dist:
                best, best_dist = p, dist
    return best


def _scipy_entmax15(z: np.ndarray) -> np.ndarray:
    """argmax_{p ∈ Δ} ⟨p, z⟩ - (Σ p^{3/2} - 1)/0.75 by SLSQP (the defining problem)."""
    n = len(z)
    obj = lambda p: -(p @ z - (np.clip(p, 0, None) ** 1.5).sum() / 0.75)
    res = minimize(
        obj, np.full(n, 1.0 / n), method="SLSQP", bounds=[(0, 1)] * n,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1}], options={"ftol": 1e-14, "maxiter": 500},
    )
    return res.x


def test_sparsemax_matches_brute_force_projection():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(30, 6, generator=g) * 1.5
    p = sparsemax(z)
    for row, prow in zip(z.numpy(), p.numpy(), strict=True):
        np.testing.assert_allclose(prow, _brute_sparsemax(row), atol=1e-12)


def test_entmax15_matches_scipy_optimisation_of_the_defining_problem():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(12, 5, generator=g) * 2
    p = entmax15(z)
    for row, prow in zip(z.numpy(), p.numpy(), strict=True):
        np.testing.assert_allclose(prow, _scipy_entmax15(row), atol=2e-5)  # SLSQP precision


@pytest.mark.parametrize("fn", [sparsemax, entmax15])
def test_simplex_sparsity_and_ordering(fn):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(200, 9, generator=g) * 3
    p = fn(z)
    torch.testing.assert_close(p.sum(-1), torch.ones(200), atol=1e-12, rtol=0)
    assert (p >= 0).all()
    assert (p == 0).any(-1).float().mean() > 0.9  # genuinely sparse at this scale (softmax never is)
    # order preserving: larger logits never get smaller probabilities
    order = z.argsort(-1)
    assert (p.gather(-1, order).diff(dim=-1) >= -1e-15).all()
    # invariance to adding a constant
    torch.testing.assert_close(fn(z + 3.7), p, atol=1e-12, rtol=0)
    # a clear winner takes everything; equal logits give the uniform distribution
    assert fn(torch.tensor([10.0, 0.0, -1.0])).tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(fn(torch.zeros(4)), torch.full((4,), 0.25))


def test_entmax_is_between_softmax_and_sparsemax_in_support_size():
    z = torch.randn(500, 8, generator=torch.Generator().manual_seed(4))
    nnz = lambda p: (p > 0).sum(-1)
    assert (nnz(sparsemax(z)) <= nnz(entmax15(z))).all()
    assert (nnz(entmax15(z)) <= 8).all() and nnz(entmax15(z)).float().mean() < 8


@pytest.mark.parametrize("fn", [sparsemax, entmax15])
def test_backward_matches_finite_differences_and_closed_form(fn):
    z = (torch.randn(3, 6, generator=torch.Generator().manual_seed(5)) * 0.7).requires_grad_()
    assert torch.autograd.gradcheck(fn, (z,))
    p = fn(z).detach()
    g = (p > 0).to(p.dtype) if fn is sparsemax else p.sqrt()
    jac = torch.diag_embed(g) - g.unsqueeze(-1) * g.unsqueeze(-2) / g.sum(-1, keepdim=True).unsqueeze(-1)
    auto = torch.stack([torch.autograd.functional.jacobian(fn, z[i]) for i in range(3)])
    torch.testing.assert_close(auto, jac, atol=1e-12, rtol=0)


def test_dim_argument_and_minus_inf_entries():
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(sparsemax(z, dim=0), sparsemax(z.T).T)
    torch.testing.assert_close(entmax15(z, dim=0), entmax15(z.T).T)
    masked = torch.tensor([1.0, float("-inf"), 0.5])
    for fn in (sparsemax, entmax15):
        p = fn(masked)
        assert p[1] == 0 and torch.isclose(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("name", ["softmax", "entmax15", "sparsemax"])
def test_conjugate_gradient_is_the_map_and_it_tends_to_max(name):
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(7)).requires_grad_()
    value, p = separation_conjugate(z, name)
    (grad,) = torch.autograd.grad(value.sum(), z)
    torch.testing.assert_close(grad, p.detach(), atol=1e-10, rtol=0)  # Danskin: ∇Ψ* = p
    big = z.detach() * 1e3  # Ω vanishes at vertices: Ψ*(t z)/t → max z
    torch.testing.assert_close(separation_conjugate(big, name)[0] / 1e3, z.detach().max(-1).values, atol=1e-3, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown separation"):
        canonical_separation("relu")
    assert canonical_separation("1.5-entmax") == "entmax15"
    with pytest.raises(ValueError, match="NaN"):
        sparsemax(torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="floating"):
        entmax15(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="non-empty"):
        sparsemax(torch.empty(3, 0))
