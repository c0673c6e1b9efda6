"""Engines are named objects with keyword-only options and the capabilities they need."""

import ast

import pytest
import torch

import varmem
from varmem.capabilities import FixedPointStep
from varmem.engine import Engine, available_engines, engine, get_engine
from varmem.retrieval import Retrieval


def test_the_built_in_engines_are_registered_with_their_requirements():
    names = set(available_engines())
    assert names >= {"exact", "fixed_point", "map", "nuts", "sync", "async", "pc", "pc_pyro", "amortized",
                     "iterative", "hybrid", "learned_precision", "attention"}
    fp = get_engine("fixed_point")
    assert isinstance(fp, Engine) and fp.requires == (FixedPointStep,)
    assert fp.options == {"max_steps": 100, "tol": 1e-6, "init": "cue", "trace": True, "return_weights": None,
                          "progress": False}
    assert "FixedPointStep" in repr(fp)
    with pytest.raises(ValueError, match=r"unknown retrieval method 'nope'; registered: \[") as err:
        get_engine("nope")
    listed = str(err.value).split("registered: ")[1]
    assert "'amortized'" in listed and "'fixed_point'" in listed and listed == str(sorted(ast.literal_eval(listed)))


def test_unknown_options_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['steps'\] for retrieval method 'fixed_point'"):
        get_engine("fixed_point").check_options({"steps": 3})


def test_a_user_engine_reads_any_memory_with_the_capability():
    @engine("one_step_probe", requires=(FixedPointStep,))
    def one_step(memory, cue, mask, *, scale: float = 1.0) -> Retrieval:
        step = memory.fixed_point_step(memory.init_latent(cue, mask, "cue"), cue, mask, energy=False)
        return Retrieval(pattern=scale * step.state, method="one_step_probe")

    class Probe(varmem.ModernHopfield):
        methods = varmem.ModernHopfield.methods + ("one_step_probe",)

    X = torch.eye(3)
    probe = Probe(3, beta=20.0).write(X)
    r = probe.retrieve(torch.tensor([[0.9, 0.1, 0.0]]), method="one_step_probe", scale=2.0)
    torch.testing.assert_close(r.pattern, 2.0 * varmem.ModernHopfield(3, beta=20.0).write(X).retrieve(
        torch.tensor([[0.9, 0.1, 0.0]])).pattern)
    with pytest.raises(ValueError, match="unknown option"):
        probe.retrieve(torch.ones(1, 3), method="one_step_probe", steps=2)
    with pytest.raises(ValueError, match="identifier"):
        engine("not a name")(one_step.fn)
