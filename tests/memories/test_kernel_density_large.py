"""Large memories are processed in chunks: reading 256 cues from 10⁶ stored 64-d items never
allocates a [B, N, D] tensor (nor a [B, N] one unless the weights are asked for).

The largest single allocation during a read is measured with the PyTorch profiler."""

import pytest
import torch

import varmem


def _largest_allocation(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    return max(e.cpu_memory_usage for e in prof.events()), out


@pytest.mark.parametrize(
    "N, chunk_size",
    [(20_000, 1_000), pytest.param(1_000_000, None, marks=pytest.mark.slow)],
)
def test_reading_a_large_memory_streams_over_chunks(N, chunk_size):
    B, D = 256, 64
    g = torch.Generator(device="cpu").manual_seed(0)
    items = torch.rand(N, D, generator=g, dtype=torch.float32)
    memory = varmem.KernelDensityMemory(
        D, bandwidth=0.1, noise_scale=0.1, chunk_size=chunk_size, dtype=torch.float32, device="cpu"
    )
    memory.write(items)
    cue = items[:B] + 0.1 * torch.randn(B, D, generator=g, dtype=torch.float32)
    mask = torch.ones(D, dtype=torch.bool)
    mask[D // 2 :] = False  # the second half is unknown and must be recalled
    bytes_bn = B * N * 4
    for method, options in [
        ("fixed_point", dict(max_steps=2, return_weights=False)),
        ("exact", dict(return_weights=False)),
    ]:
        largest, r = _largest_allocation(lambda m=method, o=options: memory.retrieve(cue, mask, method=m, **o))
        assert largest < bytes_bn / 5, f"{method}: largest allocation {largest} bytes"
        # it still recalls: the unknown half equals the right item's for (almost) every cue
        err = (r.pattern[:, D // 2 :] - items[:B, D // 2 :]).pow(2).mean(-1)
        assert (err < 1e-3).float().mean() > 0.95
