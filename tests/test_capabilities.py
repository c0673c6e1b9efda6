"""Capabilities are declared and checked: a memory listing a method it cannot honour cannot exist."""

import pytest
import torch
from _toy import StoredItems

import varmem
from varmem.capabilities import (
    ClosedFormPosterior,
    FixedPointStep,
    ItemWeights,
    PyroModel,
    SpinDynamics,
    capability_members,
    missing_members,
)
from varmem.memory import registered_memories


class _Minimal(StoredItems, varmem.Memory):
    """The least a memory has: write, len, config and an energy."""

    def __init__(self, dim=2, **kw):
        super().__init__(dim, **kw)

    def compute_energy(self, z, cue=None, mask=None):
        return (z * z).sum(-1)


def test_capability_members_are_the_protocol_methods():
    assert capability_members(ClosedFormPosterior) == ["posterior", "decode"]
    assert set(capability_members(PyroModel)) == {"latent_site", "model", "init_latent", "decode"}
    assert set(capability_members(SpinDynamics)) == {"init_spins", "spin_cache", "preferred_spins", "update_cache",
                                                     "compute_energy"}
    assert missing_members(_Minimal, ClosedFormPosterior) == ["posterior"]  # decode comes from Memory
    assert missing_members(varmem.KernelDensityMemory, ClosedFormPosterior) == []


def test_listing_a_method_without_its_capability_fails_at_class_definition():
    with pytest.raises(TypeError, match=r"lists method 'exact'.*ClosedFormPosterior.*\['posterior'\]"):
        type("NoPosterior", (_Minimal,), {"methods": ("exact",), "default_method": "exact"})
    with pytest.raises(TypeError, match=r"'fixed_point'.*FixedPointStep.*fixed_point_step.*init_latent"):
        type("NoStep", (_Minimal,), {"methods": ("fixed_point",), "default_method": "fixed_point"})
    with pytest.raises(ValueError, match="unknown retrieval method 'telepathy'"):
        type("Unknown", (_Minimal,), {"methods": ("telepathy",), "default_method": "telepathy"})
    with pytest.raises(TypeError, match=r"default_method 'map' is not one of its methods"):
        type("BadDefault", (varmem.KernelDensityMemory,), {"methods": ("exact",), "default_method": "map"})


def test_an_abstract_method_does_not_count_as_a_capability():
    from abc import abstractmethod

    class Half(_Minimal):  # abstract: it is not checked until a concrete subclass exists
        methods = ("exact",)
        default_method = "exact"

        @abstractmethod
        def posterior(self, cue, mask=None, *, return_weights=None, chunk_size=None): ...

    assert missing_members(Half, ClosedFormPosterior) == ["posterior"]
    with pytest.raises(TypeError, match="abstract"):
        Half()  # and it cannot be instantiated


def test_a_memory_with_the_capability_is_defined_and_read():
    class Closed(_Minimal):
        methods = ("exact",)
        default_method = "exact"

        def posterior(self, cue, mask=None, *, return_weights=None, chunk_size=None):
            class Post:  # the Posterior protocol's fields
                mean, variance, weights, index, log_evidence = cue, torch.ones_like(cue), None, None, cue[:, 0]

            return Post()

    r = Closed().write(torch.zeros(1, 2)).retrieve(torch.ones(3, 2))
    assert r.method == "exact" and torch.equal(r.pattern, torch.ones(3, 2)) and r.converged is None


def test_every_registered_memory_has_what_its_methods_need_and_no_stubs():
    classes = registered_memories()
    assert {c.__name__ for c in classes} >= {"KernelDensityMemory", "ModernHopfield", "BayesPCN", "NTM"}
    for cls in classes:
        for name in cls.methods:
            for cap in cls._engines[name].requires:
                assert missing_members(cls, cap) == [], (cls.__name__, name, cap.__name__)
    # the memories that used to stub model() or item weights no longer pretend to have them
    for name in ("ClassicalHopfield", "DenseAssociativeMemory", "MemN2N", "NTM"):
        cls = getattr(varmem, name)
        assert not hasattr(cls, "model"), name
    assert not isinstance(varmem.RandomFeatureMemory(2, beta=1.0, num_features=4), ItemWeights)
    assert isinstance(varmem.ModernHopfield(2, beta=1.0), FixedPointStep)
