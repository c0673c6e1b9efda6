"""RandomFeatureMemory (DrDAM): features, energy, fast gradient, writing/deleting, retrieval, checkpoints.

References: the random-feature identities (Rahimi & Recht; Performer positive features), the DrDAM
energy ``-(1/β) log max(⟨φ(x), T⟩, ε)`` and its autograd gradient, the L2 log-sum-exp slot energy
(``varmem.kernels``), and the kernel-density memory it is the ``β = 1/s²`` form of.
"""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import varmem
from varmem.baselines.random_features import (
    KERNELS,
    RandomFeatureMemory,
    gradient_descent,
    random_feature_matrix,
    slot_energy,
    slot_energy_grad,
)


def binary_patterns(n: int, d: int, seed: int) -> torch.Tensor:
    """DrDAM's data: entries in {0, 1/√D}, so ‖x - y‖² ∈ [0, 1]."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return ((torch.rand(n, d, generator=gen) > 0.5).to(torch.get_default_dtype()) / math.sqrt(d)).to(
        torch.get_default_device()
    )


@pytest.fixture
def patterns():
    return binary_patterns(8, 10, seed=1)


# --- features -------------------------------------------------------------------------------
def test_features_are_a_deterministic_function_of_the_seed():
    s1, b1 = random_feature_matrix(50, 4, seed=3)
    s2, b2 = random_feature_matrix(50, 4, seed=3)
    s3, _ = random_feature_matrix(50, 4, seed=4)
    assert torch.equal(s1, s2) and torch.equal(b1, b2)
    assert not torch.allclose(s1, s3)  # negative control: another seed, other features
    assert float(b1.min()) >= 0 and float(b1.max()) <= 2 * math.pi


def test_orthogonal_features_have_orthogonal_rows_within_a_block():
    s, _ = random_feature_matrix(12, 4, seed=0, orthogonal=True)
    block = s[:4]
    gram = block @ block.T
    off = gram - torch.diag(torch.diagonal(gram))
    assert float(off.abs().max()) < 1e-10
    assert s.shape == (12, 4)


def test_sincos_inner_product_is_the_mean_of_cosines_of_projected_differences():
    """Closed form: ⟨φ(x), φ(y)⟩ = (1/Y) Σ_y cos(√β s_yᵀ(x - y)) for the sin/cos features."""
    mem = RandomFeatureMemory(3, beta=4.0, num_features=64, seed=2)
    x, y = torch.randn(2, 3)
    expected = torch.cos(2.0 * (mem.projection @ (x - y))).mean()
    torch.testing.assert_close(mem.features(x[None]) @ mem.features(y[None]).T, expected.reshape(1, 1))


@pytest.mark.parametrize("kernel", KERNELS)
def test_feature_inner_products_approximate_the_gaussian_kernel(kernel):
    """|⟨φ(x), φ(y)⟩ - exp(-(β/2)‖x - y‖²)| is O(1/√Y); negative control: features of another β.

    Per-feature standard deviation: ≤ 1 for the trigonometric features; for the positive (exp)
    features up to ``exp(2β‖x‖²) ≈ e²`` here (‖x‖² ≤ 1), so their bound is 8× wider.
    Observed max errors (3 seeds): sincos/cos ≤ 0.01, exp/expexp ≤ 0.065; wrong β: ≥ 0.24.
    """
    beta, y_feat = 2.0, 40_000
    pts = binary_patterns(6, 5, seed=5)
    exact = torch.exp(-0.5 * beta * torch.cdist(pts, pts) ** 2)
    mem = RandomFeatureMemory(5, beta=beta, num_features=y_feat, kernel=kernel, seed=1)
    phi = mem.features(pts)
    assert phi.shape == (6, mem.feature_dim)
    err = float((phi @ phi.T - exact).abs().max())
    assert err < (5 if kernel in ("sincos", "cos") else 40) / math.sqrt(y_feat), err  # 0.025 / 0.2
    wrong = RandomFeatureMemory(5, beta=2 * beta, num_features=y_feat, kernel=kernel, seed=1).features(pts)
    assert float((wrong @ wrong.T - exact).abs().max()) > 0.2


# --- energy and its gradient ------------------------------------------------------------------
@pytest.mark.parametrize("kernel", KERNELS)
def test_fast_gradient_matches_autograd_of_the_energy(kernel, patterns):
    mem = RandomFeatureMemory(10, beta=5.0, num_features=3000, kernel=kernel, seed=0, chunk_size=700)
    mem.write(patterns)
    z = (patterns[:5] + 0.05 * torch.randn(5, 10)).requires_grad_(True)
    (auto,) = torch.autograd.grad(mem.energy(z).sum(), z)
    energy, fast = mem.energy_and_grad(z.detach())
    torch.testing.assert_close(fast, auto, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(energy, mem.energy(z.detach()))
    assert float(fast.abs().max()) > 1e-3  # not trivially zero


def test_energy_floor_gives_zero_gradient_where_the_kernel_sum_is_not_positive():
    mem = RandomFeatureMemory(2, beta=400.0, num_features=50, seed=0, eps=1e-5)
    mem.write(torch.zeros(1, 2))
    far = torch.randn(200, 2) * 3 + 10.0
    s, _ = mem.kernel_sum(far)
    clipped = s <= mem.eps
    assert bool(clipped.any())
    energy, grad = mem.energy_and_grad(far)
    torch.testing.assert_close(energy[clipped], torch.full_like(energy[clipped], -math.log(1e-5) / 400.0))
    assert float(grad[clipped].abs().max()) == 0.0


def test_chunking_does_not_change_the_result(patterns):
    a = RandomFeatureMemory(10, beta=10.0, num_features=1000, seed=4, chunk_size=97).write(patterns)
    b = RandomFeatureMemory(10, beta=10.0, num_features=1000, seed=4).write(patterns)
    torch.testing.assert_close(a.feature_sum, b.feature_sum)
    z = torch.randn(7, 10) * 0.2
    for x, y in zip(a.energy_and_grad(z), b.energy_and_grad(z), strict=True):
        torch.testing.assert_close(x, y)


def test_slot_energy_is_the_kernel_density_energy_at_beta_one_over_s_squared(patterns):
    """E_β(z; Ξ) = s² (E_KDE(z) - log N - (D/2) log 2πs²), β = 1/s² (reference §0 / §5.3)."""
    s = 0.3
    kde = varmem.KernelDensityMemory(10, bandwidth=s, noise_scale=1.0).write(patterns)
    z = patterns[:4] + 0.1 * torch.randn(4, 10)
    n, d = patterns.shape
    expected = s**2 * (kde.energy(z) - math.log(n) - 0.5 * d * math.log(2 * math.pi * s**2))
    torch.testing.assert_close(slot_energy(z, patterns, 1 / s**2), expected)
    # its gradient step with α = 1 is one mean-shift / modern-Hopfield step (the KDE fixed point without a cue)
    _, grad = slot_energy_grad(z, patterns, 1 / s**2)
    w = torch.softmax(-0.5 * torch.cdist(z, patterns) ** 2 / s**2, -1)
    torch.testing.assert_close(z - grad, w @ patterns)
    zg = z.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(slot_energy(zg, patterns, 1 / s**2).sum(), zg)
    torch.testing.assert_close(grad, auto)


def test_slot_energy_is_modern_hopfield_l2_without_the_log_n(patterns):
    """varmem.ModernHopfield(similarity="l2") holds the same energy (+ log N / β) and its update is
    one gradient step of size 1 on it: the slot memory DrDAM approximates, one copy of the math."""
    beta = 25.0
    hop = varmem.ModernHopfield(10, beta, similarity="l2").write(patterns)
    z = patterns[:5] + 0.05 * torch.randn(5, 10)
    torch.testing.assert_close(slot_energy(z, patterns, beta), hop.energy(z) - math.log(8) / beta)
    _, grad = slot_energy_grad(z, patterns, beta)
    torch.testing.assert_close(hop.update(z), z - grad)


def test_random_feature_energy_approximates_the_slot_energy(patterns):
    """DrDAM energy error shrinks with Y (≈1/√Y); negative control: an empty-ish (other patterns) memory."""
    z = patterns + 0.02 * torch.randn_like(patterns)
    exact = slot_energy(z, patterns, 20.0)
    errors = []
    for y_feat in (500, 32_000):
        mem = RandomFeatureMemory(10, beta=20.0, num_features=y_feat, seed=0).write(patterns)
        errors.append(float((mem.energy(z) - exact).abs().mean()))
    assert errors[1] < 0.002 and errors[1] < errors[0] / 3, errors  # observed 0.0030 → 0.0005 (√64 = 8)
    other = RandomFeatureMemory(10, beta=20.0, num_features=32_000, seed=0).write(binary_patterns(8, 10, seed=99))
    assert float((other.energy(z) - exact).abs().mean()) > 0.02


# --- writing and deleting ---------------------------------------------------------------------
def test_writing_adds_features_and_deleting_subtracts_them(patterns):
    mem = RandomFeatureMemory(10, beta=10.0, num_features=500, seed=0)
    mem.write(patterns[:3]).write(patterns[3])
    torch.testing.assert_close(mem.feature_sum, mem.features(patterns[:4]).sum(0))
    assert len(mem) == 4
    mem.delete(patterns[1:3])
    torch.testing.assert_close(mem.feature_sum, mem.features(patterns[[0, 3]]).sum(0))
    assert len(mem) == 2
    mem.delete(patterns[[0, 3]])
    assert len(mem) == 0 and float(mem.feature_sum.abs().max()) < 1e-12


def test_parameter_count_does_not_depend_on_the_number_of_memories():
    sizes = {}
    for n in (1, 300):
        mem = RandomFeatureMemory(10, beta=10.0, num_features=256, seed=0).write(binary_patterns(n, 10, seed=n))
        sizes[n] = sum(t.numel() for t in mem.state_dict().values())
        assert mem.num_parameters == 2 * 256
    # T (fixed) and one 64-bit fingerprint per item (for verifiable deletes); S and b are not state
    assert (sizes[1], sizes[300]) == (2 * 256 + 1, 2 * 256 + 300)
    # negative control: the slot memory it approximates grows with N
    kde = varmem.KernelDensityMemory(10, bandwidth=0.2, noise_scale=1.0)
    assert sum(t.numel() for t in kde.write(binary_patterns(300, 10, seed=0)).state_dict().values()) == 3000


BAD_ITEMS = [
    (torch.ones(2, 4), ValueError, "shape"),
    (torch.ones(0, 10), ValueError, "empty"),
    (torch.ones(2, 10, dtype=torch.int64), TypeError, "floating dtype"),
    (torch.full((1, 10), float("nan")), ValueError, "NaN"),
    ("abc", TypeError, "tensor or array"),
]


@pytest.mark.parametrize("items, error, words", BAD_ITEMS)
def test_failed_write_or_delete_names_the_problem_and_changes_nothing(patterns, items, error, words):
    mem = RandomFeatureMemory(10, beta=10.0, num_features=200, seed=0).write(patterns)
    before = mem.feature_sum.clone()
    for op in (mem.write, mem.delete):
        with pytest.raises(error, match=words):
            op(items)
        assert torch.equal(mem.feature_sum, before) and len(mem) == 8


def test_deleting_an_item_that_was_never_written_is_refused(patterns):
    """The feature sum cannot tell, so the memory keeps fingerprints: a never-written item, an item
    deleted more often than written, or a nearby item is refused and nothing changes."""
    mem = RandomFeatureMemory(10, beta=10.0, num_features=200, seed=0).write(patterns[:2]).write(patterns[0])
    before = (mem.feature_sum.clone(), mem.digests.clone())
    for bad in (patterns[:3], patterns[[0, 0, 0]], patterns[:1] + 1e-12):
        with pytest.raises(KeyError, match="never written"):
            mem.delete(bad)
        assert torch.equal(mem.feature_sum, before[0]) and torch.equal(mem.digests, before[1]) and len(mem) == 3
    mem.delete(patterns[[0, 0]])  # written twice: deleted twice
    assert len(mem) == 1
    torch.testing.assert_close(mem.feature_sum, mem.features(patterns[1:2]).sum(0))
    mem.delete(patterns[1].tolist())  # the same values as a list are the same item
    assert len(mem) == 0 and float(mem.feature_sum.abs().max()) < 1e-12


def test_items_whose_features_are_not_finite_are_refused():
    mem = RandomFeatureMemory(2, beta=1.0, num_features=64, seed=0)
    with pytest.raises(ValueError, match="outside the supported range"):
        mem.write(torch.full((1, 2), 1e308))  # √β Sx would overflow to ±inf, cos(inf) = NaN
    assert len(mem) == 0 and float(mem.feature_sum.abs().max()) == 0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"num_features": 0}, "num_features"),
        ({"kernel": "rbf"}, "kernel must be one of"),
        ({"seed": -1}, "seed"),
        ({"step_size": -0.1}, "step_size"),
        ({"eps": -1.0}, "eps"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_constructor_arguments_name_the_problem(kwargs, words):
    args = {"beta": 10.0, **kwargs}
    with pytest.raises((ValueError, TypeError), match=words):
        RandomFeatureMemory(4, **args)


# --- retrieval --------------------------------------------------------------------------------
def test_retrieval_descends_the_energy_to_the_stored_pattern(patterns):
    mem = RandomFeatureMemory(10, beta=30.0, num_features=8000, seed=0, step_size=0.5).write(patterns)
    cue = patterns + 0.05 * torch.randn_like(patterns)
    out = mem.retrieve(cue, max_steps=60, tol=1e-9)
    assert isinstance(out, varmem.Retrieval) and out.method == "fixed_point"
    assert out.trace.shape == (out.steps, 8)  # the energy before each update
    assert bool((out.trace[1:] <= out.trace[:-1] + 1e-12).all())  # monotone at this small α
    assert float((out.pattern - patterns).norm(dim=-1).max()) < 0.05
    assert out.weights is None and out.index is None
    with pytest.raises(ValueError, match="no weights"):
        mem.retrieve(cue, max_steps=1, return_weights=True)


def test_gradient_descent_trajectories_match_the_exact_slot_memory(patterns):
    """The fast update = gradient_descent on the energy, and it follows the exact (slot) dynamics."""
    mem = RandomFeatureMemory(10, beta=25.0, num_features=20_000, seed=0, step_size=0.1).write(patterns)
    flip = torch.rand(8, 10, generator=torch.Generator(device="cpu").manual_seed(3)).to(patterns) < 0.2
    cue = torch.where(flip, 1 / math.sqrt(10) - patterns, patterns)  # 20 % of the bits flipped
    out = mem.retrieve(cue, max_steps=10, tol=0.0)
    x_rf, e_rf = gradient_descent(mem.energy_and_grad, cue, 0.1, 10)
    torch.testing.assert_close(out.pattern, x_rf)
    torch.testing.assert_close(out.trace, e_rf[:-1])
    x_ex, e_ex = gradient_descent(lambda x: slot_energy_grad(x, patterns, 25.0), cue, 0.1, 10)
    assert bool((e_ex[1:] <= e_ex[:-1] + 1e-12).all())  # exact energy: Hessian ≤ I, so α ≤ 1 descends
    divergence = (x_rf - x_ex).norm(dim=-1)
    # Y = 2·10⁴, D = 10, 20 % flips: observed max 0.066, mean 0.02 (cf. 0.02–0.045 at Y = 10⁵, D = 30)
    assert float(divergence.max()) < 0.1 and float(divergence.mean()) < 0.04
    assert float((x_ex - cue).norm(dim=-1).mean()) > 5 * float(divergence.mean())  # it did move


def test_partial_cue_keeps_observed_coordinates_clamped(patterns):
    mem = RandomFeatureMemory(10, beta=30.0, num_features=8000, seed=0, step_size=0.5).write(patterns)
    mask = torch.zeros(10, dtype=torch.bool)
    mask[:6] = True
    cue = torch.where(mask, patterns[:3], torch.full_like(patterns[:3], float("nan")))
    out = mem.retrieve(cue, mask, max_steps=60, tol=1e-9)
    assert torch.equal(out.pattern[:, :6], patterns[:3, :6])
    # energy with a partial cue is the energy of the clamped state
    z = torch.randn(3, 10)
    torch.testing.assert_close(mem.energy(z, out.pattern, mask), mem.energy(torch.where(mask, out.pattern, z)))


def test_model_trace_log_density_is_minus_beta_times_the_energy(patterns):
    mem = RandomFeatureMemory(10, beta=20.0, num_features=2000, seed=0).write(patterns)
    cue = patterns[:3] + 0.1
    z = torch.randn(3, 10) * 0.1
    tr = pyro.poutine.trace(pyro.poutine.condition(mem.model, data={"z": z})).get_trace(cue)
    torch.testing.assert_close(tr.log_prob_sum(), -mem.beta * mem.energy(z).sum())
    mask = torch.tensor([True] * 4 + [False] * 6)
    tr = pyro.poutine.trace(pyro.poutine.condition(mem.model, data={"z": z})).get_trace(cue, mask)
    torch.testing.assert_close(tr.log_prob_sum(), -mem.beta * mem.energy(z, cue, mask).sum())
    tr = pyro.poutine.trace(pyro.poutine.condition(mem.model, data={"z": z})).get_trace(num_cues=3)
    torch.testing.assert_close(tr.log_prob_sum(), -mem.beta * mem.energy(z).sum())
    with pytest.raises(NotImplementedError, match="does not support sampling"):
        mem.model()  # the density ⟨φ(z), T⟩ is improper: condition the site or read with map


def test_map_retrieval_reaches_the_same_minimum_as_gradient_descent(patterns):
    mem = RandomFeatureMemory(10, beta=30.0, num_features=4000, seed=0, step_size=0.5).write(patterns)
    cue = patterns[:2] + 0.03 * torch.randn(2, 10)
    fixed = mem.retrieve(cue, max_steps=100, tol=1e-10).pattern
    mapped = mem.retrieve(cue, method="map", max_steps=30)
    assert mapped.method == "map"
    torch.testing.assert_close(mapped.pattern, fixed, atol=2e-4, rtol=0)


def test_reading_an_empty_memory_or_unknown_options_fails_clearly():
    mem = RandomFeatureMemory(4, beta=10.0, num_features=10)
    with pytest.raises(ValueError, match="empty"):
        mem.retrieve(torch.zeros(1, 4))
    mem.write(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="unknown option"):
        mem.retrieve(torch.zeros(1, 4), step=3)
    with pytest.raises(ValueError, match="unknown init"):
        mem.retrieve(torch.zeros(1, 4), init="prior_mean")
    with pytest.raises(ValueError, match="unknown retrieval method"):
        mem.retrieve(torch.zeros(1, 4), method="exact")


# --- checkpoints, dtype -----------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["sincos", "cos"])
def test_save_load_regenerates_identical_features_from_the_seed(tmp_path, patterns, kernel):
    mem = RandomFeatureMemory(10, beta=25.0, num_features=300, kernel=kernel, seed=11, orthogonal=True).write(patterns)
    path = varmem.save(mem, tmp_path / "drdam.safetensors")
    assert set(mem.state_dict()) == {"feature_sum", "digests"}  # no random matrix in the file
    loaded = varmem.load(path)
    assert isinstance(loaded, RandomFeatureMemory) and loaded.config() == mem.config() and len(loaded) == 8
    assert torch.equal(loaded.projection, mem.projection) and torch.equal(loaded.phase, mem.phase)
    assert torch.equal(loaded.feature_sum, mem.feature_sum)
    cue = patterns + 0.05
    assert torch.equal(loaded.retrieve(cue, max_steps=5).pattern, mem.retrieve(cue, max_steps=5).pattern)


def test_dtype_and_device_follow_the_module(patterns):
    mem = RandomFeatureMemory(10, beta=25.0, num_features=300, seed=0, dtype=torch.float32).write(patterns)
    assert mem.feature_sum.dtype == mem.projection.dtype == torch.float32
    out = mem.retrieve(patterns.double(), max_steps=3)
    assert out.pattern.dtype == torch.float32
    ref = RandomFeatureMemory(10, beta=25.0, num_features=300, seed=0).write(patterns)
    torch.testing.assert_close(mem.feature_sum.double(), ref.feature_sum, rtol=1e-5, atol=1e-5)
