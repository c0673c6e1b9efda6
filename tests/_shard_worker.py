"""Worker processes of ``tests/test_sharding.py`` (spawned; importable because ``tests`` is on the path).

Each worker joins a localhost gloo group of ``world`` ranks, runs the checks and raises on the
first failure (``torch.multiprocessing`` re-raises it in the test).  The single-process reference
is the same memory class holding the gathered shards in rank-major order.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _reference(memory, cls, **config):
    """A single-process memory holding the shards' items in rank-major order (the test gathers them)."""
    sizes = memory.sizes
    width = max(sizes)
    padded = torch.zeros(width, memory.dim, dtype=torch.float64)
    padded[: sizes[memory.rank]] = memory.local.items
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    items = torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])
    return cls(**config, dtype=torch.float64).write(items), items


def _close(a, b, what, tol=1e-10):
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    assert err <= tol, f"{what}: max error {err}"


def check_reads(rank: int, world: int, port: int, directory: str) -> None:
    """Writes, reads, forget / delete, bad input and a checkpoint on ``world`` ranks."""
    _join(rank, world, port)
    from varmem import KernelDensityMemory, ModernHopfield
    from varmem.sharding import ShardedMemory

    g = torch.Generator().manual_seed(0)
    items = torch.randn(37, 5, generator=g, dtype=torch.float64)
    extra = torch.randn(6, 5, generator=g, dtype=torch.float64)
    cues = items[[0, 9, 20, 36]] + 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=g) > 0.3
    config = dict(dim=5, bandwidth=0.6, noise_scale=0.4)
    kde = ShardedMemory(KernelDensityMemory(**config, dtype=torch.float64), timeout=60)
    kde.write(items).write(extra[:1]).write(extra[1:])
    assert len(kde) == 43 and max(kde.sizes) - min(kde.sizes) <= 1, kde.sizes  # balanced
    ref, stored = _reference(kde, KernelDensityMemory, **config)

    for m in (None, mask):  # the exact posterior, with weights, evidence and variance
        got = kde.retrieve(cues, m, method="exact", return_weights=True)
        want = ref.retrieve(cues, m, method="exact", return_weights=True)
        for field in ("pattern", "variance", "weights"):
            _close(getattr(got, field), getattr(want, field), f"exact {field}")
        assert torch.equal(got.index, want.index)
        _close(got.posterior.log_evidence, want.posterior.log_evidence, "log evidence")
        _close(kde.evidence(cues, m).log_evidence, ref.evidence(cues, m).log_evidence, "evidence")
    got = kde.retrieve(cues, mask, method="fixed_point", max_steps=7, return_weights=True)
    want = ref.retrieve(cues, mask, method="fixed_point", max_steps=7, return_weights=True)
    for field in ("pattern", "trace", "weights"):
        _close(getattr(got, field), getattr(want, field), f"fixed point {field}")
    assert torch.equal(got.index, want.index) and got.steps == want.steps
    got = kde.retrieve(cues, method="fixed_point", init="prior_mean", max_steps=2)
    _close(got.pattern, ref.retrieve(cues, method="fixed_point", init="prior_mean", max_steps=2).pattern, "prior mean")

    # exact posterior draws: the sampled items follow p(i | x) (a chi-square-free check on the mean)
    post = kde.retrieve(cues[:1], method="exact", num_samples=4000, seed=1)
    draws = post.samples[:, 0]
    se = (post.variance[0] / 4000).sqrt()
    assert ((draws.mean(0) - post.pattern[0]).abs() <= 4.5 * se).all()
    wrong = ref.retrieve(cues[1:2], method="exact").pattern[0]  # negative control: another cue's mean
    assert ((draws.mean(0) - wrong).abs() > 4.5 * se).any()

    # forget and delete find the owning shard
    kde.forget([0, 20, 42])
    ref.forget([0, 20, 42])
    kde.delete(stored[[5, 30]])
    ref.delete(stored[[5, 30]])
    assert len(kde) == len(ref) == 38
    ref2, _ = _reference(kde, KernelDensityMemory, **config)
    _close(ref2.items, ref.items, "items after forget / delete", tol=0.0)
    _close(kde.retrieve(cues, method="exact").pattern, ref.retrieve(cues, method="exact").pattern, "after delete")

    # bad input on one rank, different input on different ranks: an error everywhere, nothing lost
    before = kde.local.items.clone()
    for bad in (lambda: kde.write(torch.zeros(2, 5 if rank else 4, dtype=torch.float64)),
                lambda: kde.write(torch.full((2, 5), float(rank), dtype=torch.float64)),
                lambda: kde.retrieve(cues + rank),
                lambda: kde.retrieve(cues, method="map"),
                lambda: kde.forget(100),
                lambda: kde.delete(torch.full((1, 5), 9.0, dtype=torch.float64))):
        try:
            bad()
        except (ValueError, KeyError, IndexError) as e:
            assert str(e)
        else:
            raise AssertionError("bad input was accepted")
        assert torch.equal(kde.local.items, before) and len(kde) == 38

    # the modern Hopfield network (dot kernel; its energy needs the global max norm)
    hop_config = dict(dim=5, beta=2.0, update_steps_max=4)
    hop = ShardedMemory(ModernHopfield(**hop_config, dtype=torch.float64)).write(items)
    href, _ = _reference(hop, ModernHopfield, **hop_config)
    assert hop.local.max_norm == href.max_norm
    got, want = hop.retrieve(cues, mask, return_weights=True), href.retrieve(cues, mask, return_weights=True)
    for field in ("pattern", "trace", "weights"):
        _close(getattr(got, field), getattr(want, field), f"hopfield {field}")

    # checkpoint: per-shard files plus a manifest; the parent loads them with another group size
    kde.save(directory)
    if rank == 0:
        torch.save({"items": ref.items, "cues": cues}, os.path.join(directory, "reference.pt"))
    dist.barrier()
    dist.destroy_process_group()


def check_load(rank: int, world: int, port: int, directory: str) -> None:
    """Load a checkpoint written by a group of another size; reads equal the saved memory's."""
    _join(rank, world, port)
    from varmem import KernelDensityMemory
    from varmem.sharding import ShardedMemory

    memory = ShardedMemory.load(directory)
    saved = torch.load(os.path.join(directory, "reference.pt"), weights_only=True)
    assert len(memory) == saved["items"].shape[0] and max(memory.sizes) - min(memory.sizes) <= 1
    ref = KernelDensityMemory(5, bandwidth=0.6, noise_scale=0.4, dtype=torch.float64).write(saved["items"])
    got = memory.retrieve(saved["cues"], method="exact", return_weights=True)
    want = ref.retrieve(saved["cues"], method="exact", return_weights=True)
    _close(got.pattern, want.pattern, "loaded pattern")
    _close(got.weights, want.weights, "loaded weights")
    dist.destroy_process_group()


def check_failure(rank: int, world: int, port: int, directory: str) -> None:
    """Rank 1 dies in the middle of a read: rank 0 gets a ShardFailure and still has its items."""
    _join(rank, world, port)
    from varmem import KernelDensityMemory
    from varmem.sharding import ShardedMemory, ShardFailure

    memory = ShardedMemory(KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.5, dtype=torch.float64), timeout=30)
    items = torch.arange(30, dtype=torch.float64).reshape(10, 3) / 10
    memory.write(items)
    mine = memory.local.items.clone()
    if rank == 1:
        backend = memory.local.kernel_backend
        original = backend.all_gather

        def die(t, what):  # the local kernel sum is done; the process dies before merging
            sys.stdout.flush()
            os._exit(3)

        backend.all_gather = die
        assert original
    try:
        memory.retrieve(items[:2], method="fixed_point", max_steps=3)
    except ShardFailure as e:
        assert "failed" in str(e) and "intact" in str(e), str(e)
        assert torch.equal(memory.local.items, mine)
        path = memory.save_shard(os.path.join(directory, "survivor.safetensors"))
        from safetensors.torch import load_file
        assert torch.equal(load_file(str(path))["items"], mine)
        open(os.path.join(directory, "rank0-ok"), "w").close()
        os._exit(0)  # the group is broken: leave without destroying it
    raise AssertionError("the read did not fail")
