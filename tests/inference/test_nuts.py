"""The NUTS engine: reproducible with a seed, in the memory's own dtype whatever torch's default."""

import torch

import varmem


def test_a_float32_memory_samples_under_a_float64_default_and_the_default_is_restored():
    assert torch.get_default_dtype() == torch.float64  # conftest's default
    items = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    memory = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.3, dtype=torch.float32).write(items)
    r = memory.retrieve(items[:2] + 0.05, method="nuts", num_samples=30, warmup_steps=30, seed=0)
    assert r.samples.dtype == torch.float32 and r.samples.shape == (30, 2, 3)
    assert torch.get_default_dtype() == torch.float64
    again = memory.retrieve(items[:2] + 0.05, method="nuts", num_samples=30, warmup_steps=30, seed=0)
    assert torch.equal(again.samples, r.samples)  # same seed, same draws
    assert r.converged is None and r.trace is None and r.weights_at == "samples"
