"""The MAP engine: Pyro's Trace_ELBO loss of an AutoDelta guide, kept per cue for the trace."""

import pyro
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoDelta, init_to_value

import varmem
from varmem.inference import per_cue_loss


def test_per_cue_loss_is_the_trace_elbo_split_by_cue():
    items = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    kde = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.3).write(items)
    cue = torch.randn(4, 3)
    mask = torch.tensor([[True, False, True]] * 4)
    z0 = torch.randn(4, 3)
    with pyro.settings.context(module_local_params=True):
        guide = AutoDelta(kde.model, init_loc_fn=init_to_value(values={"z": z0}))
        guide(cue, mask)
        loss, per_cue = per_cue_loss(kde.model, guide, (cue, mask), 4)
        elbo = Trace_ELBO().differentiable_loss(kde.model, guide, cue, mask)
    torch.testing.assert_close(loss, elbo)
    torch.testing.assert_close(per_cue, kde.energy(z0, cue, mask))  # -log p(x_b, z_b | M) per cue
    torch.testing.assert_close(per_cue.sum(), loss)


def test_the_trace_holds_every_cues_energy_and_ends_at_the_mode():
    items = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    kde = varmem.KernelDensityMemory(2, bandwidth=0.5, noise_scale=0.5).write(items)
    cue = torch.tensor([[0.4, -0.2], [2.5, 3.1], [0.1, 0.2]])
    r = kde.retrieve(cue, method="map", optimizer="adam", lr=0.05, max_steps=400, tol=1e-12)
    assert r.trace.shape == (r.steps, 3) and r.converged.shape == (3,)
    torch.testing.assert_close(r.trace[0], kde.energy(cue, cue))  # the first evaluation is at the start
    torch.testing.assert_close(r.trace[-1], kde.energy(r.code, cue), atol=1e-6, rtol=0)
    fp = kde.retrieve(cue, method="fixed_point", tol=1e-12, max_steps=1000)
    torch.testing.assert_close(r.code, fp.code, atol=1e-4, rtol=0)
    assert torch.equal(r.index, torch.tensor([0, 1, 0])) and r.weights_at == "final_state"
