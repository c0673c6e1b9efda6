"""Streaming kernel statistics against the dense computation written out directly."""

import math

import pytest
import torch

from varmem.kernels import (
    DotProductKernel,
    GaussianKernel,
    Kernel,
    Workspace,
    as_kernel,
    default_chunk_size,
    kernel_log_sum_exp,
    kernel_stats,
    sample_items,
)


def _dense(query, items, precision):
    """Independent reference: explicit [B, N, D] quadratic form."""
    logits = -0.5 * (precision.unsqueeze(-2) * (query.unsqueeze(-2) - items) ** 2).sum(-1)
    w = logits.softmax(-1)
    return logits, w


@pytest.mark.parametrize("precision_shape", ["scalar", "shared", "per_query"])
@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_kernel_stats_match_dense(precision_shape, chunk_size):
    query, items = torch.randn(5, 3), torch.randn(50, 3)
    precision = {
        "scalar": torch.tensor(1.7),
        "shared": torch.rand(3) + 0.1,
        "per_query": torch.rand(5, 3) * (torch.rand(5, 3) > 0.3),
    }[precision_shape]
    stats = kernel_stats(query, items, precision, second_moment=True, weights=True, chunk_size=chunk_size)
    p = precision.expand(5, 3) if precision.dim() < 2 else precision
    logits, w = _dense(query, items, p)
    torch.testing.assert_close(stats.lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.mean, w @ items, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.second_moment, w @ items**2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.weights, w, rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.index, logits.argmax(-1))


def test_kernel_stats_extreme_logits_do_not_overflow():
    # items far apart with a sharp kernel: logits of order -1e6, still a proper softmax
    query = torch.tensor([[0.0, 0.0]])
    items = torch.tensor([[1000.0, 0.0], [1001.0, 0.0]])
    stats = kernel_stats(query, items, torch.tensor(1.0), weights=True, chunk_size=1)
    torch.testing.assert_close(stats.weights.sum(), torch.tensor(1.0))
    torch.testing.assert_close(stats.weights, torch.tensor([[1.0, 0.0]]))  # exp(-1000.5) underflows to 0
    assert stats.index.item() == 0
    torch.testing.assert_close(stats.lse, torch.tensor([-0.5 * 1000.0**2]), rtol=1e-12, atol=1e-6)


def test_log_sum_exp_gradient_is_the_mean_shift_direction():
    query = torch.randn(4, 2, 3, requires_grad=True)  # extra batch dims are allowed
    items = torch.randn(30, 3)
    lse = kernel_log_sum_exp(query, items, 2.5, chunk_size=8)
    (grad,) = torch.autograd.grad(lse.sum(), query)
    ref_query = query.detach().clone().requires_grad_()
    ref = (-1.25 * ((ref_query.unsqueeze(-2) - items) ** 2).sum(-1)).logsumexp(-1)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_query)
    torch.testing.assert_close(lse, ref)
    torch.testing.assert_close(grad, ref_grad)


def test_log_sum_exp_differentiable_in_items_uses_autograd_path():
    query, items = torch.randn(3, 2), torch.randn(6, 2, requires_grad=True)
    (g,) = torch.autograd.grad(kernel_log_sum_exp(query, items, 1.0).sum(), items)
    w = (-0.5 * ((query.unsqueeze(1) - items.detach()) ** 2).sum(-1)).softmax(-1)  # [B, N]
    expected = (w.unsqueeze(-1) * (query.unsqueeze(1) - items.detach())).sum(0)
    torch.testing.assert_close(g, expected)


def test_streaming_never_allocates_more_than_a_chunk_block():
    """Memory is O(B * chunk): the profiler's largest single allocation is one [B, chunk] block,
    far below [B, N] (and [B, N, D])."""
    B, N, D, chunk = 16, 20_000, 8, 512
    query, items = torch.randn(B, D, device="cpu"), torch.randn(N, D, device="cpu")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        kernel_stats(query, items, torch.tensor(1.0, device="cpu"), chunk_size=chunk)
    largest = max(e.cpu_memory_usage for e in prof.events())
    elem = query.element_size()
    assert largest <= 2 * B * chunk * elem  # a block plus slack, never [B, N] = 20k * 16
    assert largest < B * N * elem / 10


def test_default_chunk_size_bounds_the_block():
    assert default_chunk_size(256) * 256 <= 2**19  # CPU: a block stays cache-sized
    assert default_chunk_size(1) == 2**19
    assert default_chunk_size(1, "meta") == 2**22  # accelerators: bigger blocks, fewer launches
    assert default_chunk_size(10**9) == 1024


@pytest.mark.parametrize("chunk_size", [16, 100])
def test_results_do_not_alias_the_reused_workspace_blocks(chunk_size):
    """The logits / weights blocks of a workspace are reused between calls: earlier results must
    not change (one block and several)."""
    items = torch.randn(40, 3)
    q1, q2 = torch.randn(5, 3), torch.randn(5, 3)
    ws = Workspace()
    first = kernel_stats(q1, items, 0.7, weights=True, chunk_size=chunk_size, workspace=ws)
    saved = [first.lse.clone(), first.mean.clone(), first.weights.clone(), first.index.clone()]
    kernel_stats(q2, items, 0.7, weights=True, chunk_size=chunk_size, workspace=ws)  # overwrites the blocks
    for before, after in zip(saved, [first.lse, first.mean, first.weights, first.index], strict=True):
        assert torch.equal(before, after)
    logits, w = _dense(q1, items, torch.full((5, 3), 0.7))
    torch.testing.assert_close(first.lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(first.weights, w, rtol=1e-12, atol=1e-12)


def test_workspace_is_bounded_by_two_blocks_owned_and_released_explicitly():
    ws = Workspace()
    assert ws.nbytes == 0
    query, items = torch.randn(16, 4, dtype=torch.float32), torch.randn(5000, 4, dtype=torch.float32)
    plain = kernel_stats(query, items, 1.0, chunk_size=700)
    assert ws.nbytes == 0  # without a workspace nothing is kept
    before = kernel_stats(query, items, 1.0, chunk_size=700, workspace=ws)
    assert ws.nbytes == 2 * 16 * 700 * 4  # one logits and one weights block, float32
    assert torch.equal(before.mean, plain.mean)
    ws.release()
    assert ws.nbytes == 0
    after = kernel_stats(query, items, 1.0, chunk_size=700, workspace=ws)  # allocated again, same numbers
    assert torch.equal(before.mean, after.mean)
    import copy
    import pickle

    assert copy.deepcopy(ws).nbytes == 0 and ws.nbytes > 0  # a copy starts empty, the original keeps its blocks
    assert pickle.loads(pickle.dumps(ws)).nbytes == 0


def test_memories_own_their_workspace():
    import varmem

    a = varmem.KernelDensityMemory(4, bandwidth=1.0, noise_scale=1.0, dtype=torch.float32).write(torch.randn(50, 4))
    b = varmem.KernelDensityMemory(4, bandwidth=1.0, noise_scale=1.0, dtype=torch.float32).write(torch.randn(50, 4))
    assert a.workspace is a.workspace and a.workspace is not b.workspace
    a.retrieve(torch.randn(3, 4), method="fixed_point", max_steps=2)
    assert a.workspace.nbytes > 0 and b.workspace.nbytes == 0


def test_threads_have_their_own_workspace_blocks():
    import threading

    items = torch.randn(300, 4)
    queries = [torch.randn(8, 4) for _ in range(4)]
    ws = Workspace()
    expected = [kernel_stats(q, items, 2.0, chunk_size=64) for q in queries]
    results = [None] * len(queries)

    def work(i):
        for _ in range(20):  # interleave with the other threads many times
            results[i] = kernel_stats(queries[i], items, 2.0, chunk_size=64, workspace=ws)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, ref in zip(results, expected, strict=True):
        assert torch.equal(got.mean, ref.mean) and torch.equal(got.lse, ref.lse)


def test_kernel_stats_is_differentiable_when_inputs_require_grad():
    # with gradients wanted the blocks are fresh tensors (no out= scratch), so autograd works
    query = torch.randn(4, 3, requires_grad=True)
    items = torch.randn(25, 3)
    stats = kernel_stats(query, items, 1.1, chunk_size=10)
    (grad,) = torch.autograd.grad(stats.lse.sum() + stats.mean.square().sum(), query)
    ref_query = query.detach().clone().requires_grad_()
    logits = -0.55 * ((ref_query.unsqueeze(-2) - items) ** 2).sum(-1)
    ref = logits.logsumexp(-1).sum() + (logits.softmax(-1) @ items).square().sum()
    (expected,) = torch.autograd.grad(ref, ref_query)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_a_chunk_of_zero_weight_items_adds_nothing():
    # item_bias -inf = an item with mixture weight 0; a whole chunk of them must not give NaN
    query, items = torch.randn(3, 2), torch.randn(16, 2)
    bias = torch.zeros(16)
    bias[:8] = float("-inf")  # the first two chunks carry no weight at all
    bias[10:12] = float("-inf")
    stats = kernel_stats(query, items, 1.0, item_bias=bias, second_moment=True, weights=True, chunk_size=4)
    keep = torch.isfinite(bias)
    assert torch.equal(stats.weights[:, ~keep], torch.zeros(3, 10))  # zero-weight items get exactly 0, not NaN
    torch.testing.assert_close(stats.weights.sum(-1), torch.ones(3))
    ref = kernel_stats(query, items[keep], 1.0, second_moment=True)
    torch.testing.assert_close(stats.lse, ref.lse, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.mean, ref.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.second_moment, ref.second_moment, rtol=1e-12, atol=1e-12)
    assert keep[stats.index].all()


@pytest.mark.parametrize("chunk_size", [None, 6])
@pytest.mark.parametrize("kernel", ["gaussian", "dot"])
def test_mean_only_and_python_float_precision_give_the_same_numbers(kernel, chunk_size):
    query, items = torch.randn(5, 3), torch.randn(20, 3)
    full = kernel_stats(query, items, torch.tensor(0.9), kernel=kernel, chunk_size=chunk_size)
    lean = kernel_stats(query, items, 0.9, kernel=kernel, return_lse=False, return_index=False, chunk_size=chunk_size)
    assert lean.lse is None and lean.index is None
    torch.testing.assert_close(lean.mean, full.mean, rtol=1e-12, atol=1e-12)
    logits = 0.9 * query @ items.T if kernel == "dot" else -0.45 * torch.cdist(query, items) ** 2
    torch.testing.assert_close(full.mean, logits.softmax(-1) @ items, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full.lse, logits.logsumexp(-1), rtol=1e-10, atol=1e-10)
    with_weights = kernel_stats(query, items, 0.9, kernel=kernel, return_lse=False, weights=True)
    torch.testing.assert_close(with_weights.weights, logits.softmax(-1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_values_are_averaged_with_the_keys_softmax(chunk_size):
    query, keys, values = torch.randn(4, 3), torch.randn(30, 3), torch.randn(30, 5)
    stats = kernel_stats(query, keys, 1.3, values=values, second_moment=True, kernel="dot", chunk_size=chunk_size)
    w = (1.3 * query @ keys.T).softmax(-1)
    torch.testing.assert_close(stats.mean, w @ values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.second_moment, w @ values**2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.lse, (1.3 * query @ keys.T).logsumexp(-1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"values must have shape \[N=30, Dv\]"):
        kernel_stats(query, keys, 1.0, values=values[:5])


def test_kernel_stats_rejects_an_empty_item_set():
    with pytest.raises(ValueError, match="at least one item"):
        kernel_stats(torch.randn(2, 3), torch.empty(0, 3), 1.0)
    with pytest.raises(ValueError, match="at least one item"):
        sample_items(torch.randn(2, 3), torch.empty(0, 3), 1.0, 5)
    with pytest.raises(ValueError, match="at least one item"):
        kernel_log_sum_exp(torch.randn(2, 3), torch.empty(0, 3), 1.0)


@pytest.mark.parametrize("precision_shape", ["scalar", "per_query"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_item_bias_adds_to_the_logits(precision_shape, chunk_size):
    query, items, bias = torch.randn(4, 3), torch.randn(30, 3), 3 * torch.randn(30)
    precision = torch.tensor(0.8) if precision_shape == "scalar" else torch.rand(4, 3) + 0.1
    stats = kernel_stats(query, items, precision, item_bias=bias, weights=True, chunk_size=chunk_size)
    logits, _ = _dense(query, items, precision.expand(4, 3))
    logits = logits + bias
    torch.testing.assert_close(stats.lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.mean, logits.softmax(-1) @ items, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.weights, logits.softmax(-1), rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.index, logits.argmax(-1))
    # without the index: same numbers, no arg-max tracked
    lean = kernel_stats(query, items, precision, item_bias=bias, return_index=False, chunk_size=chunk_size)
    assert lean.index is None
    torch.testing.assert_close(lean.lse, stats.lse, rtol=0, atol=0)


def test_item_bias_gradient_of_the_streaming_log_sum_exp():
    # the analytic backward p (mean - q) still holds with a bias: check against plain autograd
    query = torch.randn(6, 2, requires_grad=True)
    items, bias = torch.randn(40, 2), torch.randn(40)
    lse = kernel_log_sum_exp(query, items, 1.3, item_bias=bias, chunk_size=9)
    (grad,) = torch.autograd.grad(lse.sum(), query)
    dense = (-0.65 * ((query.unsqueeze(-2) - items) ** 2).sum(-1) + bias).logsumexp(-1)
    (expected,) = torch.autograd.grad(dense.sum(), query)
    torch.testing.assert_close(lse, dense.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_sample_items_frequencies_follow_the_softmax(chunk_size):
    gen = torch.Generator().manual_seed(0)
    query, items = torch.randn(2, 2, generator=gen), torch.randn(7, 2, generator=gen)
    bias = torch.tensor([0.0, 1.0, float("-inf"), 0.5, -1.0, 0.0, 2.0])  # item 2 has weight 0
    S = 100_000
    idx = sample_items(query, items, 0.8, S, item_bias=bias, generator=gen, chunk_size=chunk_size)
    assert idx.shape == (S, 2) and idx.dtype == torch.long
    logits, _ = _dense(query, items, torch.full((2, 2), 0.8))
    w = (logits + bias).softmax(-1)  # [B, N]
    freq = torch.stack([torch.bincount(idx[:, b], minlength=7) for b in range(2)]).double() / S
    se = (w * (1 - w) / S).sqrt()
    assert ((freq - w).abs() <= 5 * se + 1e-12).all()  # 5 binomial standard errors
    assert (idx != 2).all()
    # reproducible from the generator; a different seed gives different draws
    again = sample_items(query, items, 0.8, S, item_bias=bias, generator=torch.Generator().manual_seed(5),
                         chunk_size=chunk_size)
    same = sample_items(query, items, 0.8, S, item_bias=bias, generator=torch.Generator().manual_seed(5),
                        chunk_size=chunk_size)
    assert torch.equal(again, same) and not torch.equal(again, idx)


def test_sample_items_never_forms_the_samples_by_items_tensor():
    B, N, D, S, chunk = 4, 20_000, 3, 64, 512
    query, items = torch.randn(B, D), torch.randn(N, D)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        sample_items(query, items, 1.0, S, chunk_size=chunk)
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest <= 2 * S * B * chunk * query.element_size()  # one noise block
    assert largest < S * B * N * query.element_size() / 10
    with pytest.raises(ValueError, match="num_samples"):
        sample_items(query, items, 1.0, 0)


class _LaplaceKernel(Kernel):
    """A kernel written outside varmem: ``ℓ_bi = -Σ_d p |q_bd - ξ_id|`` (no matrix-product form)."""

    name = "laplace"

    def block_logits(self, prep, chunk, bias, out):
        logits = -(prep.p * (prep.query.unsqueeze(-2) - chunk).abs()).sum(-1)
        return logits if bias is None else logits + bias


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_a_new_kernel_gets_streaming_statistics_sampling_and_gradients(chunk_size):
    query, items = torch.randn(5, 3), torch.randn(40, 3)
    kernel = _LaplaceKernel()
    logits = -0.8 * (query.unsqueeze(-2) - items).abs().sum(-1)  # independent dense computation
    stats = kernel_stats(query, items, 0.8, kernel=kernel, weights=True, second_moment=True, chunk_size=chunk_size)
    torch.testing.assert_close(stats.lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.mean, logits.softmax(-1) @ items, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.weights, logits.softmax(-1), rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.index, logits.argmax(-1))
    # the streamed gradient (no closed form: autograd on one chunk at a time)
    q = query.clone().requires_grad_()
    (grad,) = torch.autograd.grad(kernel_log_sum_exp(q, items, 0.8, kernel=kernel, chunk_size=chunk_size).sum(), q)
    ref_q = query.clone().requires_grad_()
    (ref,) = torch.autograd.grad((-0.8 * (ref_q.unsqueeze(-2) - items).abs().sum(-1)).logsumexp(-1).sum(), ref_q)
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)
    idx = sample_items(query, items, 0.8, 4000, kernel=kernel, generator=torch.Generator().manual_seed(1),
                       chunk_size=chunk_size)
    freq = torch.stack([torch.bincount(idx[:, b], minlength=40) for b in range(5)]).double() / 4000
    w = logits.softmax(-1)
    assert ((freq - w).abs() <= 5 * (w * (1 - w) / 4000).sqrt() + 1e-12).all()


def test_dot_kernel_autograd_path_matches_the_dense_gradient():
    """With items that require grad the plain autograd path runs (dense [B, N] logits)."""
    query = torch.randn(4, 3, requires_grad=True)
    keys = torch.randn(12, 3, requires_grad=True)
    lse = kernel_log_sum_exp(query, keys, 0.7, kernel="dot")
    gq, gk = torch.autograd.grad(lse.sum(), (query, keys))
    q2, k2 = query.detach().clone().requires_grad_(), keys.detach().clone().requires_grad_()
    rq, rk = torch.autograd.grad((0.7 * q2 @ k2.T).logsumexp(-1).sum(), (q2, k2))
    torch.testing.assert_close(lse, (0.7 * query @ keys.T).logsumexp(-1))
    torch.testing.assert_close(gq, rq)
    torch.testing.assert_close(gk, rk)
    # and the streaming path (items constant) gives the closed form p * mean
    (gs,) = torch.autograd.grad(kernel_log_sum_exp(q2, keys.detach(), 0.7, kernel="dot", chunk_size=5).sum(), q2)
    torch.testing.assert_close(gs, rq)


def test_kernels_by_name_and_by_object():
    assert isinstance(as_kernel("gaussian"), GaussianKernel) and isinstance(as_kernel("dot"), DotProductKernel)
    assert repr(as_kernel("dot")) == "DotProductKernel()" and repr(_LaplaceKernel()) == "_LaplaceKernel()"
    k = _LaplaceKernel()
    assert as_kernel(k) is k
    for bad in ("cosine", None, 3):
        with pytest.raises(ValueError, match="kernel must be"):
            as_kernel(bad)


def test_empty_item_sets_and_bad_sample_counts_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^sample_items needs at least one item \(items of shape \[N >= 1, D\]\)"):
        sample_items(torch.randn(2, 3), torch.empty(0, 3), 1.0, 5)
    with pytest.raises(ValueError, match=r"^kernel_log_sum_exp needs at least one item"):
        kernel_log_sum_exp(torch.randn(2, 3), torch.empty(0, 3), 1.0)
    with pytest.raises(ValueError, match=r"^kernel_stats needs at least one item"):
        kernel_stats(torch.randn(2, 3), torch.empty(0, 3), 1.0)
    with pytest.raises(ValueError, match=r"^num_samples must"):
        sample_items(torch.randn(2, 3), torch.randn(4, 3), 1.0, 0)


def test_workspace_off_the_cpu_hands_out_plain_blocks():
    """Off the CPU (here the shape-only ``meta`` device) a block is a fresh tensor and nothing is kept."""
    ws = Workspace()
    like = torch.empty(1, dtype=torch.float32, device="meta")
    block = ws.block("logits", 3, 5, like)
    assert block.shape == (3, 5) and block.dtype == torch.float32 and block.device.type == "meta"
    assert ws.nbytes == 0


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_dot_kernel_with_item_bias_matches_the_dense_logits(chunk_size):
    query, items, bias = torch.randn(4, 3), torch.randn(30, 3), 2 * torch.randn(30)
    precision = torch.rand(3) + 0.2
    logits = (precision * query) @ items.T + bias  # ℓ_bi = Σ_d p_d q_bd ξ_id + c_i, written out
    stats = kernel_stats(query, items, precision, kernel="dot", item_bias=bias, weights=True, chunk_size=chunk_size)
    torch.testing.assert_close(stats.lse, logits.logsumexp(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.weights, logits.softmax(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(stats.mean, logits.softmax(-1) @ items, rtol=1e-12, atol=1e-12)
    assert torch.equal(stats.index, logits.argmax(-1))
    torch.testing.assert_close(kernel_log_sum_exp(query, items, precision, kernel="dot", item_bias=bias,
                                                  chunk_size=chunk_size), logits.logsumexp(-1))


def _gumbel_max_reference(logits, num_samples, generator):
    """Gumbel-max over dense ``[B, N]`` logits, noise ``-log(-log U)`` from ``generator`` in the
    logits' dtype (the same uniform stream as one chunk of :func:`sample_items`)."""
    u = torch.rand(num_samples, *logits.shape, generator=generator, dtype=logits.dtype)
    tiny = torch.finfo(logits.dtype).tiny
    return (logits - (-u.clamp_min(tiny).log()).log()).argmax(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_items_is_gumbel_max_with_the_callers_generator(dtype):
    gen = torch.Generator().manual_seed(3)
    query, items = torch.randn(5, 2, generator=gen, dtype=dtype), torch.randn(9, 2, generator=gen, dtype=dtype)
    logits = -0.5 * 1.3 * torch.cdist(query, items) ** 2
    got = sample_items(query, items, 1.3, 40, generator=torch.Generator().manual_seed(8))
    want = _gumbel_max_reference(logits, 40, torch.Generator().manual_seed(8))
    assert torch.equal(got, want)
    # more queries than items (the noise block size is computed from both)
    many = torch.randn(50, 2, generator=gen, dtype=dtype)
    got = sample_items(many, items[:3], 1.3, 20, generator=torch.Generator().manual_seed(8))
    want = _gumbel_max_reference(-0.65 * torch.cdist(many, items[:3]) ** 2, 20, torch.Generator().manual_seed(8))
    assert torch.equal(got, want)


def test_sample_items_over_several_noise_blocks_and_a_zero_weight_first_item():
    """S·B·chunk above the 2**22-entry noise block: the samples are drawn block by block, all of
    them (item 0 has weight 0, so an unwritten draw would show as index 0)."""
    items = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    bias = torch.zeros(64)
    bias[0] = float("-inf")
    S = 70_000  # 2**22 // 64 = 65536 samples per block: two blocks
    idx = sample_items(torch.zeros(1, 2), items, 0.0, S, item_bias=bias, generator=torch.Generator().manual_seed(2))
    assert idx.shape == (S, 1) and (idx != 0).all()
    freq = torch.bincount(idx[:, 0], minlength=64).double() / S  # precision 0: uniform over items 1..63
    assert ((freq[1:] - 1 / 63).abs() <= 5 * math.sqrt((1 / 63) * (62 / 63) / S)).all()
    one = sample_items(torch.zeros(3, 2), items[:2], 1.0, 1, item_bias=bias[:2])
    assert torch.equal(one, torch.ones(1, 3, dtype=torch.long))  # a single draw is written too


class _StreamedGaussian(GaussianKernel):
    """The Gaussian kernel without its closed-form gradient: the per-query constant of ``prepare``
    must then enter the streamed (chunk-by-chunk autograd) gradient."""

    name = "streamed_gaussian"

    def lse_grad(self, prep, mean):
        return None


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_streamed_gradient_with_a_per_query_constant_and_item_bias(chunk_size):
    query, items, bias = torch.randn(3, 2), torch.randn(10, 2), torch.randn(10)
    for item_bias in (None, bias):
        q = query.clone().requires_grad_()
        lse = kernel_log_sum_exp(q, items, 0.9, kernel=_StreamedGaussian(), item_bias=item_bias, chunk_size=chunk_size)
        (grad,) = torch.autograd.grad(lse.sum(), q)
        ref_q = query.clone().requires_grad_()
        logits = -0.45 * ((ref_q.unsqueeze(-2) - items) ** 2).sum(-1) + (0 if item_bias is None else item_bias)
        (ref,) = torch.autograd.grad(logits.logsumexp(-1).sum(), ref_q)
        torch.testing.assert_close(lse, logits.logsumexp(-1).detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


def test_log_sum_exp_dense_path_values_and_gradients_in_every_argument():
    """Items, precision or bias requiring grad: the dense autograd path, whose value includes the
    Gaussian kernel's per-query constant and whose gradients are those of the written-out formula."""
    query, items, bias = torch.randn(4, 2), torch.randn(9, 2), torch.randn(9)
    precision = torch.tensor(1.4)

    def dense(p, xi, c):
        return (-0.5 * p * ((query.unsqueeze(-2) - xi) ** 2).sum(-1) + c).logsumexp(-1)

    for wrt in ("items", "precision", "bias"):
        args = {"items": items.clone(), "precision": precision.clone(), "bias": bias.clone()}
        args[wrt].requires_grad_()
        lse = kernel_log_sum_exp(query, args["items"], args["precision"], item_bias=args["bias"])
        (grad,) = torch.autograd.grad(lse.sum(), args[wrt])
        ref = {"items": items.clone(), "precision": precision.clone(), "bias": bias.clone()}
        ref[wrt].requires_grad_()
        expected = dense(ref["precision"], ref["items"], ref["bias"])
        (ref_grad,) = torch.autograd.grad(expected.sum(), ref[wrt])
        torch.testing.assert_close(lse, expected.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    # ∂ lse / ∂ c_i = Σ_b w_bi (the softmax weights), checked against the weights of kernel_stats
    c = bias.clone().requires_grad_()
    (g,) = torch.autograd.grad(kernel_log_sum_exp(query, items, 1.4, item_bias=c).sum(), c)
    torch.testing.assert_close(g, kernel_stats(query, items, 1.4, item_bias=bias, weights=True).weights.sum(0))


def test_log_sum_exp_with_a_python_float_precision_keeps_the_query_dtype():
    query, items = torch.randn(3, 2, dtype=torch.float32), torch.randn(6, 2, dtype=torch.float32)
    lse = kernel_log_sum_exp(query, items, 0.7)
    assert lse.dtype == torch.float32
    expected = (-0.35 * torch.cdist(query.double(), items.double()) ** 2).logsumexp(-1)
    torch.testing.assert_close(lse.double(), expected, rtol=1e-5, atol=1e-5)


def test_only_the_requested_statistics_are_returned():
    query, items = torch.randn(3, 2), torch.randn(10, 2)
    stats = kernel_stats(query, items, 1.0)
    assert stats.second_moment is None and stats.weights is None
    assert stats.lse is not None and stats.index is not None
    # item_bias with neither lse nor index asked (one block): only the mean
    bias = torch.randn(10)
    lean = kernel_stats(query, items, 1.0, item_bias=bias, return_index=False, return_lse=False)
    assert lean.lse is None and lean.index is None
    logits = -0.5 * torch.cdist(query, items) ** 2 + bias
    torch.testing.assert_close(lean.mean, logits.softmax(-1) @ items, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", ["query", "items", "precision", "item_bias", "values"])
def test_gradients_flow_when_a_workspace_is_given(wrt):
    """A workspace is only used without autograd: with any input requiring grad the blocks are fresh
    tensors and the gradient is that of the written-out formula."""
    base = {"query": torch.randn(4, 3), "items": torch.randn(15, 3), "precision": torch.tensor(0.8),
            "item_bias": torch.randn(15), "values": torch.randn(15, 2)}

    def formula(a):
        logits = -0.5 * a["precision"] * ((a["query"].unsqueeze(-2) - a["items"]) ** 2).sum(-1) + a["item_bias"]
        return logits.logsumexp(-1).sum() + (logits.softmax(-1) @ a["values"]).square().sum()

    args = {k: v.clone() for k, v in base.items()}
    args[wrt].requires_grad_()
    stats = kernel_stats(args["query"], args["items"], args["precision"], item_bias=args["item_bias"],
                         values=args["values"], chunk_size=6, workspace=Workspace())
    (grad,) = torch.autograd.grad(stats.lse.sum() + stats.mean.square().sum(), args[wrt])
    ref = {k: v.clone() for k, v in base.items()}
    ref[wrt].requires_grad_()
    (expected,) = torch.autograd.grad(formula(ref), ref[wrt])
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_the_first_of_tied_items_is_the_arg_max_across_chunks():
    items = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    items = torch.cat([items, items])  # every item stored twice, the copies in another chunk
    query = torch.randn(4, 2)
    for chunk_size in (None, 3, 6):
        stats = kernel_stats(query, items, 1.0, chunk_size=chunk_size)
        assert torch.equal(stats.index, torch.cdist(query, items).argmin(-1))  # the first copy, as torch
        assert (stats.index < 6).all()


def test_workspace_blocks_reuse_one_buffer_per_role():
    ws = Workspace()
    like = torch.empty(1, dtype=torch.float64)
    a = ws.block("logits", 3, 5, like)
    assert a.shape == (3, 5) and a.dtype == torch.float64 and ws.nbytes == 15 * 8
    b = ws.block("logits", 5, 3, like)  # the same number of entries: the same buffer
    assert b.shape == (5, 3) and b.data_ptr() == a.data_ptr() and ws.nbytes == 15 * 8
    assert ws.block("logits", 3, 5, like).data_ptr() == a.data_ptr()
    big = ws.block("logits", 4, 5, like)  # grows: a new buffer, and every later block of the role lives in it
    assert big.data_ptr() != a.data_ptr() and ws.nbytes == 20 * 8
    assert ws.block("logits", 3, 5, like).data_ptr() == big.data_ptr()
    assert ws.block("logits", 5, 3, like).data_ptr() == big.data_ptr()
    w = ws.block("weights", 3, 5, like)  # another role: another buffer
    assert w.data_ptr() != big.data_ptr() and ws.nbytes == (20 + 15) * 8
    wide = ws.block("weights", 5, 5, like)  # growing one role leaves the other's blocks alone
    assert ws.block("logits", 4, 5, like).data_ptr() == big.data_ptr()
    assert ws.block("weights", 3, 5, like).data_ptr() == wide.data_ptr() != w.data_ptr()
    f32 = ws.block("logits", 3, 5, torch.empty(1, dtype=torch.float32))  # and another dtype
    assert f32.dtype == torch.float32 and f32.data_ptr() != big.data_ptr()

