"""``varmem.fit`` under ``torch.distributed``: two CPU ranks (gloo) launched with ``torchrun``.

The same ``fit`` call as in a single process trains data-parallel; DDP averages the gradients, so
both ranks must finish with bit-identical parameters, away from the initialisation, with a loss
that went down.  Each rank also records the rows of its first minibatch: the ranks' shards are
disjoint (they do not train on the same data).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    import varmem
    from varmem.models import VAE
    from varmem.training import _Batches

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    x = varmem.datasets.load_digits().flat()[:256]
    torch.manual_seed(0)
    vae = VAE(64, code_dim=3, hidden=(16,), likelihood="bernoulli")
    start = {k: v.clone() for k, v in vae.state_dict().items()}
    result = varmem.fit(vae.model, vae.guide, x, batch_size=32, kwargs={"num_data": len(x)},
                        num_steps=40, lr=2e-2, seed=3, progress=False, log_every=7)
    first_batch = _Batches(len(x), 32, 3, rank, world, x.device).next()
    torch.save({"start": start, "params": vae.state_dict(), "losses": result.losses,
                "world_size": result.world_size, "steps": result.steps, "first_batch": first_batch},
               f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def test_two_ranks_end_with_identical_parameters(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["steps"] == r1["steps"] == 40
    assert set(r0["params"]) == set(r1["params"]) and r0["params"]
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name  # bit-identical after 40 DDP steps
        assert torch.equal(r0["start"][name], r1["start"][name])  # same initialisation
    moved = max((r0["params"][k] - r0["start"][k]).abs().max().item() for k in r0["params"])
    assert moved > 1e-2  # training changed the weights

    losses = r0["losses"]
    assert losses.shape == (40,) and torch.equal(losses, r1["losses"])  # rank-averaged losses
    assert losses[-10:].mean() < 0.9 * losses[:10].mean()

    # the ranks trained on disjoint rows
    b0, b1 = r0["first_batch"], r1["first_batch"]
    assert b0.shape == b1.shape == (32,)
    assert not set(b0.tolist()) & set(b1.tolist())
