"""The bad-input catalogue: systematic bad values for every public entry point of every memory.

For each memory class (its :mod:`_factories` factory) and each entry point — every constructor
argument, ``write`` and its keywords, ``forget``, ``delete`` and its keywords, ``retrieve`` with
every listed method, its ``cue``, ``mask`` and every engine option, ``energy``, ``evidence`` (where
the memory has one) and
``load_state_dict`` — :func:`catalogue` generates :class:`Case` s from a *spec* of what the argument
accepts.  A case is one of

* ``"invalid"``: must be refused with ``ValueError`` / ``TypeError`` / ``KeyError`` / ``IndexError``
  whose message names the argument, and leave the memory exactly as it was;
* ``"equivalent"``: a valid spelling of a canonical value (a numpy array, a non-contiguous view,
  ``dtype="float32"``, ``np.int64(3)``) that must give exactly what the canonical value gives;
* ``"edge"``: a value that may be valid (``1e30`` for an unbounded scale, an empty index list):
  either refused cleanly, or accepted and then the memory must still work (finite reads).  A
  setting that can only fail numerically (in combination, or in a dtype's range) may instead be
  refused when used, with ``FloatingPointError`` naming it and nothing changed.

:func:`run_case` classifies the outcome as ``clean``, ``obscure`` (another exception type, or a
message that does not name the argument), ``silently accepted`` (an invalid value accepted, or an
edge accepted that breaks the memory), ``refused valid`` / ``different`` (an equivalent spelling
refused or giving another result) or ``state changed`` (a failed call, or a read, that changed the
state).  Everything but ``clean`` is mishandled.
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from conformance._factories import DEVICE, FACTORIES, Factory
from torch import Tensor

from varmem.engine import get_engine
from varmem.memory import Memory
from varmem.retrieval import Retrieval

__all__ = [
    "Case", "Outcome", "catalogue", "run_case", "run_catalogue", "CLEAN_ERRORS", "MISHANDLED",
    "CONSTRUCTOR_SPECS", "OPTION_SPECS", "KEYWORD_SPECS", "FORGET_SPECS",
]

CLEAN_ERRORS = (ValueError, TypeError, KeyError, IndexError)
MISHANDLED = ("obscure", "silently accepted", "refused valid", "different", "state changed")


# --- specs: what an argument accepts, and the bad / equivalent / edge values that follow ------------
Value = tuple[str, Any, str, Any]
"""``(label, value, kind, reference)``: ``reference`` is the canonical value an equivalent one must
behave as (unused for invalid and edge values)."""


def _junk(allow_none: bool) -> list[Value]:
    """Values that no typed argument accepts."""
    out = [("string 'yes'", "yes", "invalid", None), ("empty string", "", "invalid", None),
           ("dict", {}, "invalid", None), ("object()", object(), "invalid", None),
           ("numpy object array", np.array([None, 1], dtype=object), "invalid", None),
           ("complex number", 0.5 + 0.5j, "invalid", None)]
    if not allow_none:
        out.append(("None", None, "invalid", None))
    return out


@dataclass(frozen=True)
class Real:
    """A real number in ``[lo, hi]`` (``lo_open`` / ``hi_open``: excluded), or None if ``allow_none``."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    allow_none: bool = False

    def values(self, canonical: Any) -> list[Value]:
        out = _junk(self.allow_none) + [
            ("string '0.1'", "0.1", "invalid", None), ("True", True, "invalid", None),
            ("False", False, "invalid", None), ("NaN", math.nan, "invalid", None),
            ("+inf", math.inf, "invalid", None), ("-inf", -math.inf, "invalid", None),
            ("list [0.5]", [0.5], "invalid", None), ("numpy array of two", np.array([0.5, 0.5]), "invalid", None),
            ("tensor of two", torch.tensor([0.5, 0.5]), "invalid", None),
            ("bool tensor", torch.tensor(True), "invalid", None),
            ("complex tensor", torch.tensor(0.5 + 0j), "invalid", None),
            ("numpy NaN", np.float64("nan"), "invalid", None),
        ]
        if self.lo > -math.inf:
            out.append(("below the lower bound", self.lo - 1.0, "invalid", None))
            if self.lo_open:
                out.append(("at the open lower bound", self.lo, "invalid", None))
            if self.lo >= 0:
                out.append(("-1e30", -1e30, "invalid", None))
        else:
            out.append(("-1e30", -1e30, "edge", None))
        if self.hi < math.inf:
            out.append(("above the upper bound", self.hi + 0.5, "invalid", None))
            out.append(("1e30", 1e30, "invalid", None))
            if self.hi_open:
                out.append(("at the open upper bound", self.hi, "invalid", None))
        else:
            out.append(("1e30", 1e30, "edge", None))
        if self.lo == 0:
            out.append(("tiny 1e-30", 1e-30, "edge", None))
            if not self.lo_open:
                out.append(("zero", 0.0, "edge", None))
        if canonical is not None:
            out += [("numpy float64", np.float64(canonical), "equivalent", canonical),
                    ("0-d tensor", torch.tensor(float(canonical), dtype=torch.float64), "equivalent", canonical)]
            if float(canonical).is_integer():
                out.append(("int", int(canonical), "equivalent", canonical))
        return out


@dataclass(frozen=True)
class Int:
    """An int ``≥ minimum`` (not a bool, not a float), or None if ``allow_none``; ``seed``: also try
    a seed too large for a ``torch.Generator``."""

    minimum: int | None = None
    allow_none: bool = False
    seed: bool = False

    def values(self, canonical: Any) -> list[Value]:
        c = canonical if canonical is not None else (self.minimum if self.minimum is not None else 1)
        out = _junk(self.allow_none) + [
            ("string '3'", "3", "invalid", None), ("True", True, "invalid", None), ("False", False, "invalid", None),
            ("float 2.5", 2.5, "invalid", None), (f"float {float(c)}", float(c), "invalid", None),
            ("NaN", math.nan, "invalid", None), ("+inf", math.inf, "invalid", None),
            ("list", [c], "invalid", None), ("numpy array of two", np.array([c, c]), "invalid", None),
            ("0-d int tensor", torch.tensor(c), "edge", None),
        ]
        if self.minimum is not None:
            out.append(("below the minimum", self.minimum - 1, "invalid", None))
            if self.minimum - 1 != -1:
                out.append(("-1", -1, "invalid", None))
        if self.seed:
            out.append(("seed 2**70", 2**70, "edge", None))
        if canonical is not None:
            out.append(("numpy int64", np.int64(canonical), "equivalent", canonical))
        return out


@dataclass(frozen=True)
class Bool:
    """``True`` / ``False`` (or None if ``allow_none``); ``extra``: other valid values."""

    allow_none: bool = False

    def values(self, canonical: Any) -> list[Value]:
        out = _junk(self.allow_none) + [
            ("string 'True'", "True", "invalid", None), ("string 'no'", "no", "invalid", None),
            ("int 1", 1, "invalid", None), ("int 0", 0, "invalid", None), ("float 1.0", 1.0, "invalid", None),
            ("list [True]", [True], "invalid", None), ("numpy array of two", np.array([True, False]), "invalid", None),
            ("0-d bool tensor", torch.tensor(True), "edge", None),
        ]
        if canonical is not None:
            out.append(("numpy bool", np.bool_(canonical), "equivalent", canonical))
        return out


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (or None if ``allow_none``)."""

    choices: tuple[str, ...]
    allow_none: bool = False

    def values(self, canonical: Any) -> list[Value]:
        c = canonical if canonical is not None else self.choices[0]
        out = _junk(self.allow_none) + [
            ("upper case", c.upper(), "invalid", None), ("padded with a space", f" {c}", "invalid", None),
            ("int 1", 1, "invalid", None), ("True", True, "invalid", None), ("list", [c], "invalid", None),
            ("tuple", (c,), "invalid", None), ("bytes", c.encode(), "invalid", None),
            ("numpy string", np.str_(c), "edge", None),
        ]
        return out


@dataclass(frozen=True)
class DType:
    """A floating ``torch.dtype`` or its name."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(True) + [
            ("'int64'", "int64", "invalid", None), ("'float128'", "float128", "invalid", None),
            ("torch.int64", torch.int64, "invalid", None), ("torch.bool", torch.bool, "invalid", None),
            ("torch.complex128", torch.complex128, "invalid", None), ("int 3", 3, "invalid", None),
            ("True", True, "invalid", None), ("Python type float", float, "edge", None),
            ("numpy float64 type", np.float64, "edge", None),
            ("'float64'", "float64", "equivalent", torch.float64), ("'torch.float64'", "torch.float64", "equivalent",
                                                                    torch.float64),
            ("'double'", "double", "equivalent", torch.float64), ("'float32'", "float32", "equivalent", torch.float32),
        ]


@dataclass(frozen=True)
class Device:
    """A ``torch.device`` or its name."""

    def values(self, canonical: Any) -> list[Value]:
        out = _junk(True) + [("int 3", 3, "invalid", None), ("True", True, "invalid", None),
                              ("'nodevice'", "nodevice", "invalid", None), ("'cuda:99'", "cuda:99", "invalid", None)]
        out.append((f"name {str(DEVICE)!r}", str(DEVICE), "equivalent", DEVICE))
        return out


@dataclass(frozen=True)
class Shape:
    """``D`` or ``(D,)`` / ``(C, H, W)`` of positive ints (LatentMemory's ``data_shape``)."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(False) + [
            ("zero", 0, "invalid", None), ("-1", -1, "invalid", None), ("float", float(canonical), "invalid", None),
            ("True", True, "invalid", None), ("two dims", (2, 3), "invalid", None),
            ("four dims", (1, 1, 2, 3), "invalid", None), ("(0,)", (0,), "invalid", None),
            ("tuple of floats", (float(canonical),), "invalid", None), ("empty tuple", (), "invalid", None),
            ("string '6'", "6", "invalid", None),
            ("(D,)", (canonical,), "equivalent", canonical), ("[D]", [canonical], "equivalent", canonical),
            ("numpy int64", np.int64(canonical), "edge", None),
        ]


@dataclass(frozen=True)
class Widths:
    """A sequence of positive ints (hidden widths), or None if ``allow_none``."""

    allow_none: bool = False

    def values(self, canonical: Any) -> list[Value]:
        c = tuple(canonical) if canonical is not None else (4,)
        out = _junk(self.allow_none) + [
            ("a bare int", c[0], "equivalent", (c[0],)), ("(0,)", (0,), "invalid", None),
            ("(-1,)", (-1,), "invalid", None),
            ("floats", tuple(float(w) for w in c), "invalid", None), ("bools", (True,), "invalid", None),
            ("strings", ("4",), "invalid", None), ("nested", (c,), "invalid", None),
            ("list", list(c), "equivalent", c),
        ]
        if canonical is not None:
            out.append(("numpy ints", tuple(np.int64(w) for w in c), "equivalent", c))
        return out


@dataclass(frozen=True)
class Generator:
    """A ``torch.Generator`` or None."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(True) + [("int 0", 0, "invalid", None), ("True", True, "invalid", None),
                              ("a seeded generator", torch.Generator(device=DEVICE).manual_seed(0), "edge", None)]


@dataclass(frozen=True)
class Labels:
    """``write``'s ``labels``: None or ``[N]`` ints in ``[0, registers)`` (the catalogue writes
    ``N = 2`` items; the entropic memory's factory has one register, so only 0 is valid)."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(True) + [
            ("int 0", 0, "invalid", None), ("floats", [0.0, 0.0], "invalid", None), ("bools", [False, False], "invalid",
                                                                                    None),
            ("float tensor", torch.zeros(2), "invalid", None), ("one label for two items", [0], "invalid", None),
            ("2-D", [[0, 0]], "invalid", None), ("beyond the registers", [0, 1], "invalid", None),
            ("negative", [-1, 0], "invalid", None), ("strings", ["0", "0"], "invalid", None),
            ("list of zeros", [0, 0], "equivalent", None), ("numpy int64", np.zeros(2, dtype=np.int64), "equivalent",
                                                             None),
            ("long tensor", torch.zeros(2, dtype=torch.long), "equivalent", None),
        ]


@dataclass(frozen=True)
class PCNetSpec:
    """``PCNetMemory``'s ``net``: a ``PCNet`` or a dict describing one (``net_spec``, plus ``seed``)."""

    def values(self, canonical: Any) -> list[Value]:
        from varmem.memories.predictive_coding.pc_spec import net_spec

        spec = {**net_spec(canonical), "seed": 0}
        layer = spec["layers"][0]

        def with_layer(**kw: Any) -> dict[str, Any]:
            return {**spec, "layers": [{**layer, **kw}, *spec["layers"][1:]]}

        return _junk(False) + [
            ("int 4", 4, "invalid", None), ("True", True, "invalid", None),
            ("an nn.Linear", torch.nn.Linear(3, 4), "invalid", None),
            ("a list of layers", list(canonical.layers), "invalid", None),
            ("spec without layers", {k: v for k, v in spec.items() if k != "layers"}, "invalid", None),
            ("spec with an unknown key", {**spec, "depth": 2}, "invalid", None),
            ("spec with no layers", {**spec, "layers": []}, "invalid", None),
            ("spec with an unknown layer type", with_layer(type="LSTM"), "invalid", None),
            ("spec with a layer of the wrong width", with_layer(in_features=7), "invalid", None),
            ("spec with a tensor width", with_layer(out_features=torch.tensor(5)), "invalid", None),
            ("spec with an unknown activation", with_layer(activation="swish"), "invalid", None),
            ("spec with an unknown layer argument", with_layer(depth=2), "invalid", None),
            ("spec with sigma 0", {**spec, "sigmas": [0.0, 0.5]}, "invalid", None),
            ("spec with NaN sigma", {**spec, "sigmas": [math.nan, 0.5]}, "invalid", None),
            ("spec with one sigma too many", {**spec, "sigmas": [0.8, 0.5, 1.0]}, "invalid", None),
            ("spec with top_shape 0", {**spec, "top_shape": [0]}, "invalid", None),
            ("spec with a string top_shape", {**spec, "top_shape": "3"}, "invalid", None),
            ("spec with energy 'poisson'", {**spec, "energies": "poisson"}, "invalid", None),
            ("spec with sigma_top 1e30", {**spec, "sigma_top": 1e30}, "edge", None),
            ("its JSON description (seed 0)", spec, "equivalent", canonical),
        ]


POS, NONNEG, FINITE = Real(0, lo_open=True), Real(0), Real()
DIM, SEED, CHUNK = Int(1), Int(0, seed=True), Int(1, allow_none=True)
OPT_BOOL = Bool(allow_none=True)
_DEVICE = {"device": Device(), "dtype": DType()}

CONSTRUCTOR_SPECS: dict[str, dict[str, Any]] = {
    "KernelDensityMemory": {"dim": DIM, "bandwidth": POS, "noise_scale": POS, "chunk_size": CHUNK, **_DEVICE},
    "NonparametricMemory": {
        "dim": DIM, "alpha": POS, "bandwidth": POS, "noise_scale": POS, "prior_scale": POS, "prior_mean": FINITE,
        "assignment": Choice(("crp_map", "proportional", "crp_sample")), **_DEVICE},
    "LatentMemory": {
        "data_shape": Shape(), "code_dim": DIM, "architecture": Choice(("linear", "dense", "conv")),
        "hidden": Widths(), "output": Choice(("identity", "sigmoid")), "bandwidth": POS, "noise_scale": POS,
        "beta": POS, "code_noise": Real(0, lo_open=True, allow_none=True), "guide_hidden": Widths(allow_none=True),
        "chunk_size": CHUNK, **_DEVICE},
    "PredictiveCodingMemory": {
        "dim": DIM, "n_layers": Int(2), "h_dim": DIM, "activation": Choice(("relu", "gelu", "tanh", "linear")),
        "sigma_obs": POS, "sigma_data": Real(0, lo_open=True, allow_none=True),
        "training": Choice(("online", "offline")), "epochs": Int(1), "weight_lr": POS, "T_infer": Int(1),
        "activation_lr": POS, "activation_optimizer": Choice(("adam", "sgd")), "infer_tol": NONNEG,
        "infer_rtol": Real(0, 1, hi_open=True), "seed": SEED,
        **_DEVICE},
    "BayesPCN": {
        "dim": DIM, "n_layers": Int(2), "h_dim": DIM, "activation": Choice(("relu", "gelu", "tanh", "linear")),
        "sigma_prior": POS, "sigma_obs": POS, "sigma_data": Real(0, lo_open=True, allow_none=True),
        "n_particles": Int(1), "log_prob": Choice(("p_pred", "map")),
        "ensemble_log_joint": Choice(("individual", "shared")), "T_infer": Int(1), "activation_lr": POS,
        "infer_tol": NONNEG, "infer_rtol": Real(0, 1, hi_open=True), "infer_window": Int(1), "write_batch": Int(1),
        "write_objective": Choice(("independent", "joint")), "resample": Bool(),
        "resample_threshold": Real(0, 1), "keep_history": Bool(), "seed": SEED, **_DEVICE},
    "ClassicalHopfield": {"dim": DIM, "rule": Choice(("hebbian", "storkey")), **_DEVICE},
    "DenseAssociativeMemory": {
        "dim": DIM, "power": Int(2), "interaction": Choice(("polynomial", "exponential")), "rectified": Bool(),
        "beta": POS, **_DEVICE},
    "ModernHopfield": {
        "dim": DIM, "beta": POS, "similarity": Choice(("dot", "l2")), "update_steps_max": Int(0, allow_none=True),
        "update_steps_eps": POS, "chunk_size": CHUNK, **_DEVICE},
    "RandomFeatureMemory": {
        "dim": DIM, "beta": POS, "num_features": Int(1), "kernel": Choice(("sincos", "cos", "exp", "expexp")),
        "seed": SEED, "step_size": POS, "eps": NONNEG, "orthogonal": Bool(), "chunk_size": CHUNK, **_DEVICE},
    "KernelizedHopfield": {
        "dim": DIM, "beta": POS, "feature_dim": Int(1, allow_none=True),
        "feature_map": Choice(("linear", "mlp", "identity")),
        "separation": Choice(("softmax", "entmax15", "sparsemax")),
        "hidden_dim": Int(1, allow_none=True), "seed": SEED, "chunk_size": CHUNK, **_DEVICE},
    "CorrelatedDenseMemory": {
        "dim": DIM, "a": FINITE, "h": FINITE, "beta": POS, "eta": Real(0, 1, lo_open=True),
        "normalization": Choice(("row", "symmetric", "none")), **_DEVICE},
    "MixtureHopfieldMemory": {
        "dim": DIM, "sigma": POS, "metric": Choice(("dot", "euclidean")), "beta": Real(0, allow_none=True),
        "chunk_size": CHUNK, **_DEVICE},
    "MemN2N": {"dim": DIM, "alpha": POS, "train_alpha": POS, "beta_init": FINITE,
               "variant": Choice(("annabi", "textbook")), **_DEVICE},
    "NTM": {"dim": DIM, "variant": Choice(("annabi", "textbook")), "eps": POS, **_DEVICE},
    "FiringRateMemory": {
        "dim": DIM, "activation": Choice(("logistic", "tanh")), "gain": POS, "threshold": FINITE,
        "inactive_field": FINITE, "active_field": FINITE, "coding_level": Real(0, 1, True, True, allow_none=True),
        "correlation": Real(0, 1, hi_open=True, allow_none=True), "temperature": POS, **_DEVICE},
    "SpikingLowRankMemory": {"dim": DIM, "rule": Choice(("hebbian", "pseudoinverse")),
                             "spike_size": Real(0, 1, lo_open=True), "tau": POS, **_DEVICE},
    "EntropicMemory": {
        "dim": DIM, "rows": Int(1), "registers": Int(1), "weighted": Bool(), "sigma": POS, "iota": NONNEG,
        "kappa": NONNEG, "xi": Int(0), "pseudo_count": NONNEG, **_DEVICE},
    "EntropicHeteroMemory": {
        "dim": Int(2), "split": Int(1), "rows": Int(1), "rows_b": Int(1, allow_none=True), "iota": NONNEG,
        "kappa": NONNEG, "xi": Int(0), **_DEVICE},
    "DiffusionMemory": {"dim": DIM, "sigma_min": POS, "sigma_max": POS, "noise_scale": POS, "hidden": DIM,
                        "seed": SEED, "chunk_size": CHUNK, **_DEVICE},
    "SparseRecoveryMemory": {"dim": DIM, "max_rank": Int(1, allow_none=True), "noise_scale": POS,
                             "subspace_scale": POS, "off_subspace_scale": POS, **_DEVICE},
    "LinearAssociativeMemory": {
        "dim": DIM, "code_dim": CHUNK, "rule": Choice(("trained", "hebbian")), "beta": POS,
        "lr": Real(0, lo_open=True, allow_none=True), "max_steps": Int(1, allow_none=True),
        "target_accuracy": Real(0, 1, lo_open=True), "seed": SEED, **_DEVICE},
    "MLPAssociativeMemory": {
        "dim": DIM, "hidden": DIM, "code_dim": CHUNK, "rule": Choice(("trained", "hebbian")), "beta": POS,
        "lr": Real(0, lo_open=True, allow_none=True), "max_steps": Int(1, allow_none=True),
        "target_accuracy": Real(0, 1, lo_open=True), "seed": SEED, **_DEVICE},
}
"""What every constructor argument of every memory class accepts."""


@dataclass(frozen=True)
class Init:
    """The ``init`` option of an iterative engine: a start name the memory knows, or a ``[B, L]`` tensor."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(False) + [("int 3", 3, "invalid", None), ("True", True, "invalid", None),
                                ("unknown name", "no_such_start", "invalid", None)]


@dataclass(frozen=True)
class Precision:
    """``learned_precision``'s ``precision``: None or a positive ``[L]`` tensor."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(True) + [("float 1.0", 1.0, "invalid", None), ("True", True, "invalid", None)]


@dataclass(frozen=True)
class Drive:
    """``rate_dynamics``' ``drive``: None or a constant input ``[N]`` / ``[B, N]`` (added per memory by
    :func:`_tensor_option_values`)."""

    def values(self, canonical: Any) -> list[Value]:
        return _junk(True) + [("float 0.5", 0.5, "invalid", None), ("True", True, "invalid", None),
                              ("list of floats", [0.1, 0.2], "invalid", None)]


@dataclass(frozen=True)
class StartValue:
    """The ``start`` option of the predictive-coding reads: a start name, a finite number or a tensor
    of start values ``[D]`` / ``[B, D]``."""

    names: tuple[str, ...]

    def values(self, canonical: Any) -> list[Value]:
        return _junk(False) + [("upper case", self.names[0].upper(), "invalid", None),
                               ("unknown name", "cue", "invalid", None), ("True", True, "invalid", None),
                               ("NaN", math.nan, "invalid", None), ("+inf", math.inf, "invalid", None),
                               ("list [0.5]", [0.5], "invalid", None),
                               ("int tensor", torch.tensor([1, 2]), "invalid", None),
                               ("NaN tensor", torch.tensor([math.nan]), "invalid", None),
                               ("3-d tensor", torch.zeros(1, 1, 1), "invalid", None),
                               ("float -1.0", -1.0, "edge", None), ("int 0", 0, "edge", None)]


CONSTRUCTOR_SPECS["PCNetMemory"] = {
    "net": PCNetSpec(), "training": Choice(("offline", "continual")), "epochs": Int(1), "T": Int(1),
    "batch_size": CHUNK, "x_optimizer": Choice(("sgd", "adam")), "x_lr": POS,
    "w_optimizer": Choice(("hebbian", "sgd", "adam")), "w_lr": POS, "incremental": Bool(),
    "hidden_init": Choice(("randn", "zeros", "top_down")), "read_steps": Int(1),
    "read_lr": Real(0, lo_open=True, allow_none=True),
    "procedure": Choice(("clamp_predict", "joint", "relax_all"), allow_none=True),
    "start": StartValue(("zero", "prior_mean")), "seed": SEED, **_DEVICE}


_PC = {"procedure": Choice(("clamp_predict", "joint", "relax_all"), allow_none=True),
       "start": StartValue(("zero", "prior_mean")), "max_steps": Int(1, allow_none=True),
       "lr": Real(0, allow_none=True), "n_repeat": Int(1),
       "tol": Real(0, allow_none=True), "rtol": Real(0, allow_none=True), "seed": Int(0, allow_none=True, seed=True),
       "progress": Bool()}
_ITERATIVE = {"scheme": Choice(("map", "bp", "pc")), "optimizer": Choice(("lbfgs", "adam"), allow_none=True),
              "lr": Real(0, allow_none=True), "max_steps": Int(1), "tol": Real(0, allow_none=True),
              "hidden_scale": Real(0, lo_open=True, allow_none=True), "return_weights": OPT_BOOL,
              "progress": Bool()}
OPTION_SPECS: dict[str, dict[str, Any]] = {
    "exact": {"return_weights": OPT_BOOL, "chunk_size": CHUNK, "num_samples": Int(0),
              "seed": Int(0, allow_none=True, seed=True)},
    "fixed_point": {"max_steps": Int(0), "tol": NONNEG, "init": Init(), "trace": Bool(), "return_weights": OPT_BOOL,
                    "progress": Bool()},
    "map": {"optimizer": Choice(("lbfgs", "adam")), "lr": Real(0, allow_none=True), "max_steps": Int(1),
            "tol": NONNEG, "init": Init(), "return_weights": OPT_BOOL, "progress": Bool()},
    "nuts": {"num_samples": Int(2), "warmup_steps": Int(0), "init": Init(),
             "target_accept_prob": Real(0, 1, lo_open=True, hi_open=True), "max_tree_depth": Int(1),
             "seed": Int(0, allow_none=True, seed=True), "return_weights": OPT_BOOL, "progress": Bool(),
             "num_chains": Int(1), "modes": Choice(("auto", "exact", "importance", "none")), "max_modes": Int(1),
             "importance_samples": Int(2)},
    "sync": {"max_steps": Int(0), "trace": Bool(), "return_weights": OPT_BOOL, "progress": Bool()},
    "async": {"max_steps": Int(0), "seed": SEED, "trace": Bool(), "return_weights": OPT_BOOL, "progress": Bool()},
    "pc": {**_PC, "optimizer": Choice(("adam", "sgd"))},
    "pc_pyro": dict(_PC),
    "pcnet": {"procedure": Choice(("clamp_predict", "joint", "relax_all"), allow_none=True),
              "start": StartValue(("zero", "prior_mean")), "max_steps": Int(1, allow_none=True),
              "lr": Real(0, allow_none=True), "optimizer": Choice(("sgd", "adam"), allow_none=True),
              "n_repeat": Int(1), "hidden_init": Choice(("randn", "zeros", "top_down"), allow_none=True),
              "seed": Int(0, allow_none=True, seed=True), "progress": Bool()},
    "pcnet_pyro": {"procedure": Choice(("clamp_predict", "joint", "relax_all"), allow_none=True),
                   "start": StartValue(("zero", "prior_mean")), "max_steps": Int(1, allow_none=True),
                   "lr": Real(0, allow_none=True), "n_repeat": Int(1),
                   "hidden_init": Choice(("randn", "zeros", "top_down"), allow_none=True),
                   "seed": Int(0, allow_none=True, seed=True), "progress": Bool()},
    "amortized": {"guide": Choice(("encoder", "retrieval")), "return_weights": OPT_BOOL},
    "iterative": {**_ITERATIVE, "init": Init()},
    "hybrid": {**_ITERATIVE, "start": Choice(("encoder", "guide"))},
    "learned_precision": {"max_steps": Int(0), "precision": Precision(), "init": Init(), "return_weights": OPT_BOOL},
    "attention": {"return_weights": Bool()},
    "rate_dynamics": {"t_max": POS, "dt": Real(0, 1, lo_open=True), "noise": NONNEG,
                      "seed": Int(0, allow_none=True, seed=True), "drive": Drive(), "clamp": Bool(), "init": Init(),
                      "tol": NONNEG, "trace": Bool(), "progress": Bool()},
    "latent": {"dt": POS, "max_steps": Int(0), "start_scale": Real(0, 1, lo_open=True), "trace": Bool(),
               "progress": Bool()},
    "spiking": {"dt": POS, "max_steps": Int(0), "start_scale": Real(0, 1, lo_open=True), "noise": NONNEG,
                "one_spike_per_step": Bool(), "seed": Int(0, allow_none=True, seed=True), "trace": Bool(),
                "record": Bool(), "progress": Bool()},
    "beta": {"seed": Int(0, allow_none=True, seed=True)},
    "random": {"seed": Int(0, allow_none=True, seed=True)},
    "sample_and_test": {"seed": Int(0, allow_none=True, seed=True), "num_samples": Int(1)},
    "search_and_test": {"seed": Int(0, allow_none=True, seed=True), "num_samples": Int(1),
                        "max_steps": Int(0, allow_none=True)},
    "diffusion": {"score": Choice(("ideal", "learned")), "sampler": Choice(("ode", "sde")), "num_steps": Int(1),
                  "conditioning": Choice(("auto", "posterior", "replacement")),
                  "seed": Int(0, allow_none=True, seed=True), "return_weights": OPT_BOOL, "progress": Bool()},
    "lp": {},
    "admm": {"max_steps": Int(1), "tol": NONNEG, "rho": POS, "relaxation": Real(0, 2, lo_open=True, hi_open=True),
             "trace": Bool()},
    "categorical": {"point": Choice(("argmax", "mean")), "return_weights": OPT_BOOL, "num_samples": Int(0),
                    "seed": Int(0, allow_none=True, seed=True)},
}
"""What every option of every engine accepts (tensor values of ``init`` / ``precision`` are added
per memory by :func:`_tensor_option_values`)."""

KEYWORD_SPECS: dict[str, Any] = {"progress": Bool(), "seed": Int(0, allow_none=True, seed=True),
                                 "generator": Generator(), "atol": NONNEG, "labels": Labels()}
"""The keyword arguments of ``write`` / ``delete`` (by name, shared by the memories)."""

FORGET_SPECS = ("index", "beta")
"""The two kinds of ``forget``: by position (``index``) or by diffusion strength (``beta`` in [0, 1])."""


# --- tensor values ---------------------------------------------------------------------------------
def _with(x: Tensor, value: float, row: int = 0, col: int = 0) -> Tensor:
    y = x.clone()
    y[row, col] = value
    return y


def tensor_values(base: Tensor, *, equivalents: bool = True) -> list[Value]:
    """Bad, equivalent and edge spellings of a ``[N, D]`` float argument (items, cues, states)."""
    n, d = base.shape
    out = _junk(False) + [
        ("number 0.5", 0.5, "invalid", None), ("True", True, "invalid", None), ("empty list", [], "invalid", None),
        ("list of empty lists", [[]], "invalid", None),
        ("ragged list", [[0.0] * d, [0.0] * (d - 1)], "invalid", None),
        ("list of strings", [["a"] * d], "invalid", None),
        ("numpy string array", np.array([["a"] * d]), "invalid", None),
        ("numpy object rows", np.array([[object()] * d], dtype=object), "invalid", None),
        ("numpy int array", np.ones((n, d), dtype=np.int64), "invalid", None),
        ("int64 tensor", base.round().long(), "invalid", None), ("int32 tensor", base.round().int(), "invalid", None),
        ("uint8 tensor", base.abs().round().to(torch.uint8), "invalid", None),
        ("bool tensor", base > 0, "invalid", None), ("complex tensor", base.to(torch.complex128), "invalid", None),
        ("last dim D+1", torch.cat([base, base[:, :1]], 1), "invalid", None),
        ("last dim D-1", base[:, :-1], "invalid", None), ("3-D", base.unsqueeze(0), "invalid", None),
        ("0-d tensor", base[0, 0].clone(), "invalid", None), ("empty [0, D]", base[:0], "invalid", None),
        ("[N, 0]", base[:, :0], "invalid", None),
        ("NaN entry", _with(base, math.nan), "invalid", None), ("+inf entry", _with(base, math.inf), "invalid", None),
        ("-inf entry", _with(base, -math.inf, n - 1, d - 1), "invalid", None),
        ("1e30 entry", _with(base, 1e30), "invalid", None), ("-1e30 entry", _with(base, -1e30), "invalid", None),
        ("2e6 entry (beyond ±1e6)", _with(base, 2e6, n - 1, 0), "invalid", None),
        ("float32 1e30 entry", _with(base, 1e30).float(), "invalid", None),
        ("float16 inf (1e30 overflowed)", _with(base, 1e30).half(), "invalid", None),
        ("entry exactly 1e6", _with(base, 1e6), "edge", None),
    ]
    if equivalents:
        out += [
            ("numpy float64", base.cpu().numpy(), "equivalent", base),
            ("list", base.tolist(), "equivalent", base),
            ("non-contiguous view", base.T.contiguous().T, "equivalent", base),
            ("every other row of a bigger tensor", torch.stack([base, base], 1).reshape(2 * n, d)[::2],
             "equivalent", base),
            ("float32 tensor", base.float(), "equivalent", base.float().double()),
            ("single row [D]", base[0], "equivalent", base[:1]),
            ("requires grad", base.clone().requires_grad_(True), "equivalent", base),
        ]
    return out


def mask_values(mask: Tensor) -> list[Value]:
    b, d = mask.shape
    no_row = mask.clone()
    no_row[0] = False
    return [v for v in _junk(True) if v[0] != "complex number"] + [
        ("True", True, "invalid", None), ("float mask", mask.double(), "invalid", None),
        ("int mask", mask.long(), "invalid", None), ("uint8 mask", mask.to(torch.uint8), "invalid", None),
        ("complex mask", mask.to(torch.complex64), "invalid", None),
        ("last dim D+1", torch.cat([mask, mask[:, :1]], 1), "invalid", None),
        ("batch B+1", torch.cat([mask, mask[:1]], 0), "invalid", None), ("3-D", mask.unsqueeze(0), "invalid", None),
        ("0-d True", torch.tensor(True), "invalid", None), ("a row with nothing observed", no_row, "invalid", None),
        ("nothing observed [D]", torch.zeros(d, dtype=torch.bool), "invalid", None),
        ("empty [0, D]", mask[:0], "invalid", None), ("list of ints", mask.long().tolist(), "invalid", None),
        ("numpy float", mask.double().cpu().numpy(), "invalid", None),
        ("numpy bool", mask.cpu().numpy(), "equivalent", mask), ("list of bools", mask.tolist(), "equivalent", mask),
        ("non-contiguous", mask.T.contiguous().T, "equivalent", mask),
        (ONE_ROW_MASK, mask[0], "equivalent", mask[0].expand(b, d).clone()),
    ]


ONE_ROW_MASK = "one [D] row for all cues"
"""A ``[D]`` mask reads as its ``[B, D]`` expansion, to rounding (a shared mask takes a cheaper path)."""


def index_values(n: int) -> list[Value]:
    """``forget(index)`` values for a memory of ``n`` items (canonical: row 1)."""
    row = torch.zeros(n, dtype=torch.bool)
    row[1] = True
    return _junk(False) + [
        ("string '0'", "0", "invalid", None), ("float 1.5", 1.5, "invalid", None), ("float 1.0", 1.0, "invalid", None),
        ("True", True, "invalid", None), ("False", False, "invalid", None), ("list of floats", [1.5], "invalid", None),
        ("list of bools of the wrong length", [True, False], "invalid", None),
        ("beyond the end", n, "invalid", None), ("before the start", -n - 1, "invalid", None),
        ("one of them beyond the end", [0, n + 3], "invalid", None),
        ("numpy strings", np.array(["a"]), "invalid", None), ("float tensor", torch.tensor([0.5]), "invalid", None),
        ("complex tensor", torch.tensor([1 + 0j]), "invalid", None), ("ragged list", [[0, 1], [2]], "invalid", None),
        ("bool mask of length N+1", torch.ones(n + 1, dtype=torch.bool), "invalid", None),
        ("2-D bool mask", row.unsqueeze(0), "invalid", None), ("slice with float bounds", slice(0.5, 2),
                                                               "invalid", None),
        ("slice with string bounds", slice("a", None), "invalid", None),
        ("int 1", 1, "equivalent", 1), ("numpy int64", np.int64(1), "equivalent", 1),
        ("0-d tensor", torch.tensor(1), "equivalent", 1), ("list [1]", [1], "equivalent", 1),
        ("range(1, 2)", range(1, 2), "equivalent", 1), ("slice(1, 2)", slice(1, 2), "equivalent", 1),
        ("bool mask", row, "equivalent", 1), ("numpy [1]", np.array([1]), "equivalent", 1),
        ("negative", 1 - n, "equivalent", 1), ("repeated [1, 1]", [1, 1], "equivalent", 1),
        ("empty list", [], "edge", None), ("empty long tensor", torch.zeros(0, dtype=torch.long), "edge", None),
    ]


# --- cases -------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One call of the catalogue (see the module docstring)."""

    memory: str
    entry: str
    argument: str
    label: str
    kind: str
    call: Callable[[Memory | None], Any]
    names: tuple[str, ...]
    reference: Callable[[Memory | None], Any] | None = None
    builds: bool = False  # the call builds its own memory (constructor cases)
    exact: bool = True  # equivalent results must be bit-identical (else equal to rounding)
    ref_key: Any = None  # equal keys: the same reference result (computed once per memory class)

    @property
    def read_only(self) -> bool:
        """Reads (``retrieve``, ``energy``) must leave the memory as it was, so one memory serves them all."""
        return self.entry.startswith(("retrieve", "energy", "evidence"))

    @property
    def id(self) -> str:
        return f"{self.memory}.{self.entry}({self.argument}={self.label})"


@dataclass
class Outcome:
    case: Case
    result: str
    detail: str = ""


def _constructor_cases(f: Factory) -> Iterable[Case]:
    specs = CONSTRUCTOR_SPECS[f.name]
    for arg, canonical in f.kwargs.items():
        for label, value, kind, ref in specs[arg].values(canonical):
            yield Case(f.name, "constructor", arg, label, kind, lambda _, a=arg, v=value: f.make(**{a: v}),
                       (arg,), reference=(lambda _, a=arg, r=ref: f.make(**{a: r})) if kind == "equivalent" else None,
                       builds=True)


def _keyword_cases(f: Factory, entry: str, fn: Callable, call: Callable) -> Iterable[Case]:
    """Cases for the keyword-only arguments of ``write`` / ``delete`` (``call(memory, **kw)``)."""
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        for label, value, kind, ref in KEYWORD_SPECS[name].values(p.default):
            yield Case(f.name, entry, name, label, kind, lambda m, n=name, v=value: call(m, **{n: v}), (name,),
                       reference=(lambda m, n=name, r=ref: call(m, **{n: r})) if kind == "equivalent" else None)


def _write_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    items = f.items()[:2]
    for label, value, kind, ref in tensor_values(items):
        yield Case(f.name, "write", "items", label, kind, lambda m, v=value: m.write(v), ("items",),
                   reference=(lambda m, r=ref: m.write(r)) if kind == "equivalent" else None)
    for label, bad in f.bad_items():
        yield Case(f.name, "write", "items", label, "invalid", lambda m, b=bad: m.write(torch.cat([items, b])),
                   ("items",))
    yield from _keyword_cases(f, "write", memory.write, lambda m, **kw: m.write(items, **kw))


def _forget_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    if not hasattr(memory, "forget"):
        return
    arg = next(iter(inspect.signature(memory.forget).parameters))
    assert arg in FORGET_SPECS, f"{f.name}.forget({arg}) has no spec"
    values = index_values(len(memory)) if arg == "index" else Real(0, 1).values(0.2)
    names = ("index", "slice") if arg == "index" else ("beta",)
    for label, value, kind, ref in values:
        yield Case(f.name, "forget", arg, label, kind, lambda m, v=value: m.forget(v), names,
                   reference=(lambda m, r=ref: m.forget(r)) if kind == "equivalent" else None)


def _delete_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    if not hasattr(memory, "delete"):
        return
    items = f.items()[1:3]
    for label, value, kind, ref in tensor_values(items):
        yield Case(f.name, "delete", "items", label, kind, lambda m, v=value: m.delete(v), ("items",),
                   reference=(lambda m, r=ref: m.delete(r)) if kind == "equivalent" else None)
    absent = items + 0.125
    yield Case(f.name, "delete", "items", "never written", "invalid", lambda m: m.delete(absent), ("items",))
    yield Case(f.name, "delete", "items", "one written, one not", "invalid",
               lambda m: m.delete(torch.cat([items[:1], absent[:1]])), ("items",))
    yield Case(f.name, "delete", "items", "more copies than written", "invalid",
               lambda m: m.delete(torch.cat([items[:1], items[:1]])), ("items",))
    yield from _keyword_cases(f, "delete", memory.delete, lambda m, **kw: m.delete(items, **kw))


def _start_tensor(f: Factory, memory: Memory, batch: int) -> Tensor:
    """A valid ``[B, L]`` start state for the ``init`` option."""
    z = 0.1 * torch.randn(batch, memory.latent_dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = z.to(memory.device, memory.dtype)
    return torch.where(z >= 0, 1.0, -1.0).to(z) if f.bad_items() else z


def _tensor_option_values(f: Factory, memory: Memory, option: str, batch: int) -> list[Value]:
    if option == "init":
        start = _start_tensor(f, memory, batch)
        bad = [(label, v, kind, ref) for label, v, kind, ref in tensor_values(start, equivalents=False)
               if torch.is_tensor(v) and kind == "invalid"]
        return [(f"tensor {label}", v, kind, ref) for label, v, kind, ref in bad] + [
            ("numpy start", start.cpu().numpy(), "edge", None),
            ("non-contiguous start", start.T.contiguous().T, "equivalent", start),
            ("float32 start", start.float(), "equivalent", start.float().double()),
            ("start one row short", start[:-1], "invalid", None),
        ]
    if option == "drive":
        u = torch.full((memory.dim,), 0.1, dtype=memory.dtype, device=memory.device)
        return [("wrong length", u[:-1], "invalid", None), ("NaN entry", _with(u[None], math.nan)[0], "invalid", None),
                ("inf entry", _with(u[None], math.inf)[0], "invalid", None),
                ("2e6 entry", _with(u[None], 2e6)[0], "invalid", None), ("int tensor", u.long(), "invalid", None),
                ("bool tensor", u > 0, "invalid", None), ("complex tensor", u.to(torch.complex128), "invalid", None),
                ("3-D", u[None, None], "invalid", None), ("batch B+1", u.expand(batch + 1, -1), "invalid", None),
                ("one row per cue", u.expand(batch, -1).clone(), "equivalent", u),
                ("non-contiguous", torch.stack([u, u], 1)[:, 0], "equivalent", u),
                ("float32", u.float(), "equivalent", u.float().double())]
    if option == "precision":
        p = torch.full((memory.latent_dim,), 2.0, dtype=memory.dtype, device=memory.device)
        return [("wrong length", p[:-1], "invalid", None), ("negative entry", _with(p[None], -1.0)[0], "invalid", None),
                ("zero entry", _with(p[None], 0.0)[0], "invalid", None),
                ("NaN entry", _with(p[None], math.nan)[0], "invalid", None),
                ("inf entry", _with(p[None], math.inf)[0], "invalid", None), ("int tensor", p.long(), "invalid", None),
                ("bool tensor", p > 0, "invalid", None), ("complex tensor", p.to(torch.complex128), "invalid", None),
                ("2-D", p[None], "invalid", None), ("1e30 entry", _with(p[None], 1e30)[0], "edge", None),
                ("non-contiguous", torch.stack([p, p], 1)[:, 0], "equivalent", p),
                ("float32", p.float(), "equivalent", p.float().double())]
    return []


def _retrieve_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    cue, mask = f.cues(), f.mask()
    B = cue.shape[0]
    default = memory.default_method
    for label, value, kind, ref in [*_junk(False)[:-1], ("int 3", 3, "invalid", None), ("True", True, "invalid", None),
                                    ("upper case", default.upper(), "invalid", None),
                                    ("list", [default], "invalid", None),
                                    ("None", None, "equivalent", default)]:
        yield Case(f.name, "retrieve", "method", label, kind,
                   lambda m, v=value: m.retrieve(cue, method=v, **f.read_options(default)), ("method",),
                   reference=(lambda m, r=ref: m.retrieve(cue, method=r, **f.read_options(default)))
                   if kind == "equivalent" else None)
    for method in memory.methods:
        entry = f"retrieve[{method}]"
        for label, value, kind, ref in tensor_values(cue):
            yield Case(f.name, entry, "cue", label, kind, lambda m, v=value, me=method: f.read(m, me, cue=v), ("cue",),
                       reference=(lambda m, r=ref, me=method: f.read(m, me, cue=r)) if kind == "equivalent" else None,
                       ref_key=(entry, "cue", id(ref)))
        nan_free = torch.where(mask, cue, math.nan)
        yield Case(f.name, entry, "cue", "NaN where unobserved", "equivalent",
                   lambda m, me=method, c=nan_free: f.read(m, me, cue=c, mask=mask), ("cue",),
                   reference=lambda m, me=method: f.read(m, me, cue=torch.where(mask, cue, 0.0), mask=mask))
        yield Case(f.name, entry, "cue", "NaN where observed", "invalid",
                   lambda m, me=method: f.read(m, me, cue=_with(cue, math.nan), mask=mask), ("cue",))
        for label, value, kind, ref in mask_values(mask):
            yield Case(f.name, entry, "mask", label, kind, lambda m, v=value, me=method: f.read(m, me, mask=v),
                       ("mask",),
                       reference=(lambda m, r=ref, me=method: f.read(m, me, mask=r)) if kind == "equivalent" else None,
                       exact=label != ONE_ROW_MASK, ref_key=(entry, "mask", id(ref)))
        engine = get_engine(method)
        for option, default_value in engine.options.items():
            spec = OPTION_SPECS[method][option]
            base = f.read_options(method).get(option, memory.default_options(method).get(option, default_value))
            values = spec.values(base) + _tensor_option_values(f, memory, option, B)
            for label, value, kind, ref in values:
                yield Case(f.name, entry, f"option {option}", label, kind,
                           lambda m, o=option, v=value, me=method: f.read(m, me, **{o: v}), (option,),
                           reference=(lambda m, o=option, r=ref, me=method: f.read(m, me, **{o: r}))
                           if kind == "equivalent" else None,
                           ref_key=(entry, option, id(ref) if torch.is_tensor(ref) else repr(ref)))
        yield Case(f.name, entry, "option", "unknown option", "invalid",
                   lambda m, me=method: f.read(m, me, no_such_option=1), ("no_such_option",))


def _energy_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    cue, mask = f.cues(), f.mask()
    z = _start_tensor(f, memory, cue.shape[0])
    for label, value, kind, ref in tensor_values(z):
        reference = (lambda m, r=ref: m.energy(r)) if kind == "equivalent" else None
        if label == "single row [D]":  # one state [L] has one energy []
            reference = lambda m: m.energy(z[:1])[0]  # noqa: E731
        if label == "3-D":  # states [..., B, L] are valid: one energy each
            kind, reference = "equivalent", lambda m: m.energy(z).unsqueeze(0)  # noqa: E731
        yield Case(f.name, "energy", "z", label, kind, lambda m, v=value: m.energy(v), ("z",), reference=reference)
    for label, value, kind, ref in tensor_values(cue):
        if label == "None":  # no cue: the energy of the states alone
            kind, ref = "equivalent", None
        yield Case(f.name, "energy", "cue", label, kind, lambda m, v=value: m.energy(z, v), ("cue",),
                   reference=(lambda m, r=ref: m.energy(z, r)) if kind == "equivalent" else None)
    for label, value, kind, ref in mask_values(mask):
        yield Case(f.name, "energy", "mask", label, kind, lambda m, v=value: m.energy(z, cue, v), ("mask",),
                   reference=(lambda m, r=ref: m.energy(z, cue, r)) if kind == "equivalent" else None,
                   exact=label != ONE_ROW_MASK)
    yield Case(f.name, "energy", "mask", "mask without a cue", "invalid", lambda m: m.energy(z, None, mask), ("mask",))
    yield Case(f.name, "energy", "z", "batch not matching the cues", "invalid",
               lambda m: m.energy(torch.cat([z, z[:1]]), cue), ("z",))


def _evidence_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    """``memory.evidence`` validates its cue and mask as ``retrieve`` does (estimators with a fixed
    seed, so equivalent spellings give identical numbers); none for memories without evidence."""
    cue, mask = f.cues(), f.mask()
    options: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if memory.evidence(cue).kind != "exact":
                options = {"num_samples": 16, "seed": 0}
    except TypeError:
        return

    def evidence(m: Memory, c: Any = cue, k: Any = None) -> Any:
        return m.log_evidence(c, k, **options)

    for label, value, kind, ref in tensor_values(cue):
        yield Case(f.name, "evidence", "cue", label, kind, lambda m, v=value: evidence(m, v), ("cue",),
                   reference=(lambda m, r=ref: evidence(m, r)) if kind == "equivalent" else None,
                   ref_key=("evidence", "cue", id(ref)))
    yield Case(f.name, "evidence", "cue", "NaN where unobserved", "equivalent",
               lambda m: evidence(m, torch.where(mask, cue, math.nan), mask), ("cue",),
               reference=lambda m: evidence(m, torch.where(mask, cue, 0.0), mask))
    yield Case(f.name, "evidence", "cue", "NaN where observed", "invalid",
               lambda m: evidence(m, _with(cue, math.nan), mask), ("cue",))
    for label, value, kind, ref in mask_values(mask):
        yield Case(f.name, "evidence", "mask", label, kind, lambda m, v=value: evidence(m, cue, v), ("mask",),
                   reference=(lambda m, r=ref: evidence(m, cue, r)) if kind == "equivalent" else None,
                   exact=label != ONE_ROW_MASK, ref_key=("evidence", "mask", id(ref)))


ITEM_BUFFERS = ("items", "codes")
"""State entries that hold data (stored items or their codes): bound by ±MAX_ABS_VALUE like any data."""


def _load_cases(f: Factory, memory: Memory) -> Iterable[Case]:
    state = {k: v.detach().clone() for k, v in memory.state_dict().items()}

    def with_entry(key: str, value: Any) -> dict[str, Any]:
        return {**state, key: value}

    def case(label: str, kind: str, value: Any, names: tuple[str, ...], ref: Any = None, **kw: Any) -> Case:
        # a state that fails the memory's consistency checks may be refused naming any of its entries
        argument = names[-1]
        names = names if kw else (*names, *state)
        return Case(f.name, "load_state_dict", argument, label, kind, lambda m: m.load_state_dict(value, **kw), names,
                    reference=(lambda m: m.load_state_dict(ref)) if kind == "equivalent" else None)

    for label, value in [("None", None), ("list of pairs", list(state.items())), ("string", "state"),
                         ("a tensor", next(iter(state.values()))), ("int keys", dict(enumerate(state.values())))]:
        yield case(label, "invalid", value, ("state",))
    yield case("an extra entry", "invalid", {**state, "no_such_entry": torch.zeros(1)}, ("state", "no_such_entry"))
    yield case("strict='yes'", "invalid", state, ("strict",), strict="yes")
    yield case("assign='yes'", "invalid", state, ("assign",), assign="yes")
    yield case("strict=False", "equivalent", state, ("strict",), ref=state, strict=False)
    for key, v in state.items():
        names = ("state", key)
        rest = {k: x for k, x in state.items() if k != key}
        yield case(f"{key} missing", "invalid", rest, names)
        yield case(f"{key} as None", "invalid", with_entry(key, None), names)
        yield case(f"{key} as numpy", "invalid", with_entry(key, v.cpu().numpy()), names)
        yield case(f"{key} as a list", "invalid", with_entry(key, v.tolist()), names)
        yield case(f"{key} with an extra dim", "invalid", with_entry(key, v.unsqueeze(0)), names)
        wrong = v.to(torch.float32) if v.dtype != torch.float32 else v.to(torch.float64)
        yield case(f"{key} as {wrong.dtype}", "invalid", with_entry(key, wrong), names)
        if v.dim() > 1:
            yield case(f"{key} flattened", "invalid", with_entry(key, v.reshape(-1)), names)
        elif v.dim() == 1 and v.numel():
            yield case(f"{key} as a 0-d tensor", "invalid", with_entry(key, v[0].clone()), names)
        if v.dim():
            if v.shape[-1] > 1:
                yield case(f"{key} one column short", "edge", with_entry(key, v[..., :-1]), names)
            if v.shape[0] > 1:
                yield case(f"{key} one row short", "edge", with_entry(key, v[:-1]), names)
        if v.is_floating_point() and v.numel():
            for label, bad in (("NaN", math.nan), ("inf", math.inf)):
                poisoned = v.clone()
                poisoned.view(-1)[-1] = bad
                yield case(f"{key} with {label}", "invalid", with_entry(key, poisoned), names)
            huge = v.clone()
            huge.view(-1)[0] = 1e30
            yield case(f"{key} with a 1e30 entry", "invalid" if key in ITEM_BUFFERS else "edge",
                       with_entry(key, huge), names)
            yield case(f"{key} negated", "edge", with_entry(key, -v), names)
            yield case(f"{key} requiring grad", "equivalent", with_entry(key, v.clone().requires_grad_(True)), names,
                       ref=state)
        if v.dim() == 2 and min(v.shape) > 1:
            yield case(f"{key} as a transposed view", "equivalent", with_entry(key, v.T.contiguous().T), names,
                       ref=state)
        elif v.dim() >= 1 and v.numel() > 1:
            yield case(f"{key} as a strided view", "equivalent",
                       with_entry(key, torch.stack([v, v], -1)[..., 0]), names, ref=state)


def catalogue(names: Iterable[str] | None = None) -> list[Case]:
    """Every case of the catalogue, for the memory classes ``names`` (default: all factories)."""
    cases: list[Case] = []
    for name in names if names is not None else FACTORIES:
        f = FACTORIES[name]
        memory = f.build()
        for gen in (_constructor_cases(f), _write_cases(f, memory), _forget_cases(f, memory),
                    _delete_cases(f, memory), _retrieve_cases(f, memory), _energy_cases(f, memory),
                    _evidence_cases(f, memory), _load_cases(f, memory)):
            cases.extend(gen)
    return cases


# --- running a case ----------------------------------------------------------------------------------
def _snapshot(memory: Memory) -> tuple[dict[str, Tensor], int, str]:
    return ({k: v.detach().clone() for k, v in memory.state_dict().items()}, len(memory),
            json.dumps(memory.config(), sort_keys=True, default=repr))


def _same_state(memory: Memory, snap: tuple[dict[str, Tensor], int, str]) -> bool:
    state, n, config = snap
    now = memory.state_dict()
    if now.keys() != state.keys() or len(memory) != n:
        return False
    if json.dumps(memory.config(), sort_keys=True, default=repr) != config:
        return False
    return all(v.dtype == state[k].dtype and v.shape == state[k].shape and torch.equal(v, state[k])
               for k, v in now.items())


def _works(f: Factory, memory: Memory, names: tuple[str, ...]) -> str:
    """'' if ``memory`` can be filled and read with its default method and gives a finite pattern, or
    refuses that use with an error naming the argument (a setting that only fails in combination,
    e.g. a write that diverges: ``FloatingPointError``, the state restored); else why not."""
    try:
        json.dumps(memory.config())
        if len(memory) == 0:
            f.fill(memory)
        r = f.read(memory, memory.default_method)
    except Exception as e:  # noqa: BLE001 (any other failure after an accepted value is the finding)
        if isinstance(e, (*CLEAN_ERRORS, FloatingPointError)) and _names_argument(e, names):
            return ""
        return f"then fails: {type(e).__name__}: {e}"
    if not torch.isfinite(r.pattern).all():
        return "then reads a non-finite pattern"
    return ""


def _finite(result: Any) -> bool:
    if isinstance(result, Retrieval):
        return bool(torch.isfinite(result.pattern).all())
    if torch.is_tensor(result):
        return bool(torch.isfinite(result).all())
    return True


def _same(a: Any, b: Any, exact: bool = True) -> str:
    """'' if two results agree exactly, else how they differ."""
    if isinstance(a, Memory) or isinstance(b, Memory):
        if type(a) is not type(b) or a.dtype != b.dtype or a.device != b.device:
            return "a different memory"
        if json.dumps(a.config(), sort_keys=True, default=repr) != json.dumps(b.config(), sort_keys=True,
                                                                                default=repr):
            return f"config {a.config()} != {b.config()}"
        try:
            json.dumps(a.config())
        except TypeError as e:
            return f"config() is not JSON-able: {e}"
        sa, sb = a.state_dict(), b.state_dict()
        for k in sa.keys() | sb.keys():
            if k not in sa or k not in sb or sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k]):
                return f"a different state ({k})"
            if sa[k].requires_grad or sb[k].requires_grad:
                return f"state entry {k} requires grad (it holds an autograd graph)"
        return ""
    if isinstance(a, Retrieval):
        a, b = a.pattern, b.pattern
    if torch.is_tensor(a):
        if not torch.is_tensor(b) or a.shape != b.shape or a.dtype != b.dtype:
            return "a result of another shape or dtype"
        same = torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        return "" if same else f"a different result (largest difference {float((a - b).abs().max()):.3g})"
    return "" if a is None and b is None else f"{a!r} != {b!r}"


class _Pool:
    """One built memory per class, reused while calls fail (they must change nothing), rebuilt after
    an accepted call."""

    def __init__(self) -> None:
        self.memories: dict[str, tuple[Memory, Any]] = {}
        self.references: dict[Any, tuple[Any, BaseException | None]] = {}

    def get(self, name: str) -> tuple[Memory, Any]:
        if name not in self.memories:
            memory = FACTORIES[name].build()
            self.memories[name] = (memory, _snapshot(memory))
        return self.memories[name]

    def drop(self, name: str) -> None:
        self.memories.pop(name, None)
        self.references = {k: v for k, v in self.references.items() if k[0] != name}


def _names_argument(error: BaseException, names: tuple[str, ...]) -> bool:
    message = str(error).lower()
    return any(n.lower() in message for n in names)


def _call(fn: Callable[[Memory | None], Any], memory: Memory | None) -> tuple[Any, BaseException | None]:
    try:
        return fn(memory), None
    except Exception as e:  # noqa: BLE001
        return None, e


def _run_equivalent(case: Case, f: Factory, pool: _Pool) -> Outcome:
    """An equivalent spelling must do what the canonical one does: the same result and state, or the
    same exception type when the canonical call fails too.  Reads share the pool's memory (and
    must not change it); other calls get two fresh memories."""
    snap = None
    if case.read_only:
        memory, snap = pool.get(case.memory)
        ref_memory = memory
    else:
        ref_memory, memory = (None, None) if case.builds else (f.build(), f.build())
    key = (case.memory, case.ref_key) if case.read_only and case.ref_key is not None else None
    if key is not None and key in pool.references:
        expected, ref_error = pool.references[key]
    else:
        expected, ref_error = _call(case.reference, ref_memory)
        if key is not None:
            pool.references[key] = (expected, ref_error)
    got, error = _call(case.call, memory)
    if snap is not None and not _same_state(memory, snap):
        pool.drop(case.memory)
        return Outcome(case, "state changed", "a read changed the state")
    if ref_error is not None:
        if type(error) is type(ref_error):
            return Outcome(case, "clean", f"both refused: {ref_error}")
        return Outcome(case, "different", f"the canonical call raised {ref_error!r}, this one {error!r}")
    if error is not None:
        return Outcome(case, "refused valid", f"{type(error).__name__}: {error}")
    if case.builds:
        memory, ref_memory = got, expected
        expected, ref_error = _call(lambda m: f.read(f.fill(m), m.default_method), ref_memory)
        got, error = _call(lambda m: f.read(f.fill(m), m.default_method), memory)
        if ref_error is not None or error is not None:
            return Outcome(case, "different", f"then writing and reading raised {error!r} (canonical: {ref_error!r})")
    diff = _same(memory, ref_memory) if memory is not None and not case.read_only else ""
    if not diff and isinstance(got, (Tensor, Retrieval)):
        diff = _same(got, expected, case.exact)
    return Outcome(case, "different", diff) if diff else Outcome(case, "clean")


def run_case(case: Case, pool: _Pool) -> Outcome:
    """Run one case and classify its outcome (module docstring)."""
    f = FACTORIES[case.memory]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.kind == "equivalent":
            return _run_equivalent(case, f, pool)
        memory, snap = (None, None) if case.builds else pool.get(case.memory)
        try:
            result = case.call(memory)
        except (*CLEAN_ERRORS, FloatingPointError) as e:
            if memory is not None and not _same_state(memory, snap):
                pool.drop(case.memory)
                return Outcome(case, "state changed", f"{type(e).__name__}: {e}")
            if isinstance(e, FloatingPointError) and case.kind != "edge":  # a numerical refusal of bad input
                return Outcome(case, "obscure", f"{type(e).__name__}: {e}")
            if not _names_argument(e, case.names):
                return Outcome(case, "obscure", f"{type(e).__name__} not naming {case.names}: {e}")
            return Outcome(case, "clean", f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001
            if memory is not None and not _same_state(memory, snap):
                pool.drop(case.memory)
                return Outcome(case, "state changed", f"{type(e).__name__}: {e}")
            return Outcome(case, "obscure", f"{type(e).__name__}: {e}")
        # accepted
        if case.builds:
            memory = result
        elif isinstance(result, (Retrieval, Tensor)):  # a read: it must not change the state
            if not _same_state(memory, snap):
                pool.drop(case.memory)
                return Outcome(case, "state changed", "a read changed the state")
        else:
            pool.drop(case.memory)
        if case.kind == "invalid":
            return Outcome(case, "silently accepted", "no error")
        if not _finite(result):
            return Outcome(case, "silently accepted", "accepted, with a non-finite result")
        why = _works(f, memory, case.names)
        return Outcome(case, "silently accepted", f"accepted, {why}") if why else Outcome(case, "clean", "accepted")


def run_catalogue(names: Iterable[str] | None = None) -> list[Outcome]:
    """Run :func:`catalogue` (one pool of memories, rebuilt as needed)."""
    pool = _Pool()
    return [run_case(case, pool) for case in catalogue(names)]
