"""Sharded kernel-sum memories on 2 and 4 localhost gloo ranks (:mod:`varmem.sharding`).

References: each sharded read is compared, to 1e-10 in float64, with the single-process read of
the same items (the shards gathered in rank-major order) — weights, arg-max, exact posterior,
evidence, fixed-point trace; a checkpoint written by 4 ranks is loaded by 2; a rank that dies in a
read leaves the other with a ShardFailure and its items.  The checks run inside the workers
(``tests/_shard_worker.py``); a failing assertion there fails the spawn here.
"""

from __future__ import annotations

import socket

import _shard_worker
import pytest
import torch.multiprocessing as mp

from varmem.sharding import ShardedMemory, balanced_counts


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn, world: int, directory: str) -> None:
    """Run ``fn(rank, world, port, directory)`` on ``world`` forked ranks (forked: no re-import of
    varmem per rank, the bulk of a spawn's time); a worker's exception is raised here."""
    mp.start_processes(fn, args=(world, _port(), directory), nprocs=world, start_method="fork")


def test_balanced_counts_fill_the_smallest_shards():
    assert balanced_counts([0, 0], 5) == [3, 2]
    assert balanced_counts([4, 1, 2], 4) == [0, 3, 1]  # ends [4, 4, 3]
    assert balanced_counts([2, 2], 0) == [0, 0]


def test_needs_a_process_group_and_a_shardable_memory():
    import varmem

    with pytest.raises(TypeError, match="shardable"):
        ShardedMemory(varmem.ClassicalHopfield(4))
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedMemory(varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.5))


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_reads_equal_the_single_process_read(world, tmp_path):
    (tmp_path / "ckpt").mkdir()
    _run(_shard_worker.check_reads, world, str(tmp_path / "ckpt"))
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert "manifest.json" in files and sum(f.startswith("shard-") for f in files) == world
    other = 2 if world == 4 else 4 - 1  # load with a group of another size (3 ranks after 2)
    _run(_shard_worker.check_load, other, str(tmp_path / "ckpt"))


def test_a_rank_that_dies_mid_read_leaves_the_others_their_items(tmp_path):
    ctx = mp.start_processes(_shard_worker.check_failure, args=(2, _port(), str(tmp_path)), nprocs=2, join=False,
                             start_method="fork")
    for p in ctx.processes:
        p.join(120)
    codes = [p.exitcode for p in ctx.processes]
    assert codes == [0, 3], codes
    assert (tmp_path / "rank0-ok").exists() and (tmp_path / "survivor.safetensors").exists()


def test_the_default_backend_is_the_plain_kernel_sum():
    """``KernelBackend`` itself computes what ``kernel_stats`` / ``sample_items`` compute without one
    (the hook memories pass is transparent)."""
    import torch

    from varmem.kernels import KernelBackend, kernel_stats, sample_items

    g = torch.Generator().manual_seed(0)
    q, x = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    plain = kernel_stats(q, x, 2.0, second_moment=True, weights=True)
    hooked = kernel_stats(q, x, 2.0, second_moment=True, weights=True, backend=KernelBackend())
    for field in ("lse", "mean", "second_moment", "weights", "index", "top"):
        assert torch.equal(getattr(plain, field), getattr(hooked, field)), field
    draws = [sample_items(q, x, 2.0, 5, generator=torch.Generator().manual_seed(1), backend=b)
             for b in (None, KernelBackend())]
    assert torch.equal(*draws)
