"""``varmem.compare``: the table's schema, a memory of the user's joining, relations from theory,
and resuming.

Theory used below:

* **kernel density = L2 modern Hopfield.**  The kernel-density memory's fixed-point (EM) step is
  ``z ← Σ_i softmax_i(-‖z - ξ_i‖²/(2s²) ) ξ_i`` plus a pull to the cue of weight ``s²/σ²``; with
  ``σ → ∞`` the pull vanishes and the step is the L2 modern-Hopfield update with ``β = 1/s²`` on
  ``[0, 1]`` items.  On ``[-1, 1]`` items (``y = 2x - 1``) distances double, so the same reads need
  ``β = 1/(4s²)``: the comparison's value domains must make the two tables identical.
* **Hebbian capacity.**  The classical Hopfield network with the Hebbian rule retrieves random ±1
  patterns while ``N/D`` stays below ``α_c ≈ 0.138`` (Amit, Gutfreund and Sompolinsky 1985); past
  it the retrieval states vanish and reads end far from the stored pattern.  The Storkey rule's
  capacity is larger (``≈ D/√(2 ln D)``, 115 items at ``D = 400``): it is the negative control.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch

import varmem
from varmem import ClassicalHopfield, KernelDensityMemory, ModernHopfield
from varmem.comparison import ROW_COLUMNS, Contender, compare
from varmem.comparison import run as run_module
from varmem.domains import SIGNED
from varmem.helpers import masked_normal


def digits(n: int = 60) -> torch.Tensor:
    return varmem.datasets.load_digits(dtype=torch.float64).flat()[:n]


def kde(s: float = 0.1, sigma: float = 0.2, **options) -> Contender:
    return Contender("kde", lambda d: KernelDensityMemory(d, bandwidth=s, noise_scale=sigma, dtype=torch.float64),
                     methods=("exact", "fixed_point"), options={"fixed_point": options} if options else {},
                     key=f"{s}-{sigma}")


def modern() -> Contender:
    return Contender("modern", lambda d: ModernHopfield(d, beta=0.2, dtype=torch.float64), key="0.2")


# --------------------------------------------------------------------------------------------- schema
@pytest.fixture(scope="module")
def table():
    return compare([kde(), modern()], digits(), image_shape=(1, 8, 8),
                   corruptions={"white": 0.1, "drop": [0.25, 0.5]}, sizes=(10, 30), seeds=(0, 1), queries=8,
                   examples=2, progress=False)


def test_one_row_per_memory_method_corruption_level_size_and_seed(table) -> None:
    assert tuple(table.columns) == ROW_COLUMNS
    # kde: two methods, modern: one; 3 (corruption, level) pairs, 2 sizes, 2 seeds
    assert len(table) == (2 + 1) * 3 * 2 * 2
    keys = table[["memory", "method", "corruption", "level", "N", "seed"]]
    assert not keys.duplicated().any()
    assert set(map(tuple, table[["memory", "method"]].drop_duplicates().values)) == {
        ("kde", "exact"), ("kde", "fixed_point"), ("modern", "fixed_point")}
    assert table["queries"].eq(8).all()
    assert set(table.loc[table["memory"] == "modern", "value_domain"]) == {"[-1, 1]"}
    assert set(table.loc[table["memory"] == "kde", "value_domain"]) == {"[0, 1]"}


def test_metrics_are_in_range_and_consistent(table) -> None:
    assert table[["accuracy", "retrieval_rate"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["mse"] >= 0).all() and (table["write_seconds"] > 0).all() and (table["read_seconds"] > 0).all()
    torch.testing.assert_close(torch.tensor(table["seconds_per_cue"].values),
                               torch.tensor((table["read_seconds"] / table["queries"]).values))
    # white noise hides nothing; drop hides pixels
    assert table.loc[table["corruption"] == "white", "mse_hidden"].isna().all()
    assert table.loc[table["corruption"] == "drop", "mse_hidden"].notna().all()
    # the exact read has the log evidence; the fixed-point reads do not
    assert table.loc[table["method"] == "exact", "log_evidence"].notna().all()
    assert table.loc[table["method"] == "fixed_point", "log_evidence"].isna().all()
    # the exact posterior reads no iteration; the EM read reports convergence
    assert table.loc[table["method"] == "exact", "steps"].eq(0).all()


def test_every_memory_sees_the_same_cues(table) -> None:
    """The cue MSE (in [0, 1] units) of a (corruption, level, N, seed) is the same for every memory
    and method: the same items are stored and corrupted by the same draws."""
    spread = table.groupby(["corruption", "level", "N", "seed"])["cue_mse"].agg(lambda c: c.max() - c.min())
    assert spread.max() < 1e-15  # [-1, 1] and back rounds in the last bit
    # ...while different seeds do draw different cues (negative control)
    by_seed = table.groupby(["corruption", "level", "N", "seed"])["cue_mse"].first().unstack("seed")
    assert (by_seed[0] != by_seed[1]).all()


def test_well_separated_digits_are_recalled_and_the_reads_beat_the_cue(table) -> None:
    exact = table[table["method"] == "exact"]
    assert (exact["retrieval_rate"] == 1).all()
    assert (exact["mse"] < exact["cue_mse"] / 10).all()


def test_examples_keep_cues_reads_and_originals(table) -> None:
    examples = table.attrs["examples"]
    assert set(examples) == {f"{m}|{k}|{c}|{lv:g}" for m, k in (("kde", "exact"), ("kde", "fixed_point"),
                                                                   ("modern", "fixed_point"))
                             for c, lv in (("white", 0.1), ("drop", 0.25), ("drop", 0.5))}
    drop = examples["kde|exact|drop|0.5"]
    assert len(drop["cue"]) == 2 and len(drop["cue"][0]) == 64 and drop["mask"] is not None
    assert examples["kde|exact|white|0.1"]["mask"] is None
    # the examples come from the largest size and the first seed: the originals are its first items
    rows = digits()[torch.randperm(60, generator=torch.Generator().manual_seed(0))[:2]]
    torch.testing.assert_close(torch.tensor(drop["target"]), rows)
    # pandas deep-copies attrs on every operation: the examples are shared, not copied
    assert table.head(1).attrs["examples"] is examples


def test_same_seed_same_table() -> None:
    a = compare([kde()], digits(), corruptions={"white": 0.1}, sizes=(10,), progress=False)
    b = compare([kde()], digits(), corruptions={"white": 0.1}, sizes=(10,), progress=False)
    metrics = ["mse", "accuracy", "retrieval_rate", "cue_mse", "log_evidence"]
    assert a[metrics].equals(b[metrics])


def test_sizes_nest_and_the_write_time_accumulates() -> None:
    t = compare([modern()], digits(), corruptions={"white": 0.1}, sizes=(5, 20, 40), progress=False)
    assert list(t["N"]) == [5, 20, 40] and t["write_seconds"].is_monotonic_increasing
    assert list(t["queries"]) == [5, 20, 20]


# ---------------------------------------------------------------------------------- a user's memory
class SignedGaussianMemory(varmem.GaussianMixtureMemory):
    """A kernel-density memory of the user's, on ``[-1, 1]`` items: Gaussian kernels ``N(ξ_i, s²)``
    and a Gaussian cue ``N(z, σ²)``; in ``[0, 1]`` units it is the kernel-density memory with
    ``(s/2, σ/2)``."""

    value_domain = SIGNED

    def __init__(self, dim: int, scale: float, noise_scale: float, **kwargs) -> None:
        super().__init__(dim, **kwargs)
        self.scale, self.noise_scale = scale, noise_scale
        self.register_buffer("items", torch.empty(0, dim, dtype=self.dtype, device=self.device))

    def write(self, items):
        self.append_rows("items", self.prepare_items(items))
        return self

    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict:
        return {"dim": self.dim, "scale": self.scale, "noise_scale": self.noise_scale}

    def prior(self):
        kernels = dist.Normal(self.items, self.scale).to_event(1)
        return varmem.Mixture(dist.Categorical(logits=self.items.new_zeros(len(self))), kernels)

    def likelihood(self, z, mask=None):
        return masked_normal(z, self.noise_scale, mask)


def test_a_memory_defined_here_joins_the_comparison_and_its_domain_is_mapped() -> None:
    """No adapter: the user's ``[-1, 1]`` memory reads the same cues as the kernel-density memory
    on ``[0, 1]``, and with doubled scales its reads (decoded to ``[0, 1]``) are the same."""
    s, sigma = 0.15, 0.2
    mine = SignedGaussianMemory(64, scale=2 * s, noise_scale=2 * sigma, dtype=torch.float64)
    t = compare({"mine": mine}, digits(), image_shape=(1, 8, 8), corruptions={"white": 0.3, "drop": 0.5},
                sizes=(10, 30), seeds=(0, 1), queries=10, progress=False)
    assert set(t["method"]) == {"fixed_point"} and set(t["value_domain"]) == {"[-1, 1]"}
    assert len(t) == 2 * 2 * 2 and t["accuracy"].mean() > 0.5
    assert len(mine) == 0  # the instance is a template: each seed writes into its own copy

    # both start the EM read from the mean of the items (kernel density's own "cue" start fills
    # hidden entries with its exact posterior mean, the generic one with the prior mean)
    same = {"max_steps": 5, "tol": 0.0, "init": "prior_mean"}
    mine = Contender("mine", lambda d: SignedGaussianMemory(d, scale=2 * s, noise_scale=2 * sigma,
                                                            dtype=torch.float64), options={"fixed_point": same})
    t = compare([mine, kde(s, sigma, **same)], digits(), image_shape=(1, 8, 8),
                corruptions={"white": 0.3, "drop": 0.5}, sizes=(10, 30), seeds=(0, 1), queries=10, progress=False)
    ours = t[t["memory"] == "mine"].reset_index(drop=True)
    theirs = t[(t["memory"] == "kde") & (t["method"] == "fixed_point")].reset_index(drop=True)
    for column in ("mse", "mse_hidden", "cue_mse", "accuracy", "retrieval_rate"):
        torch.testing.assert_close(torch.tensor(ours[column].values), torch.tensor(theirs[column].values),
                                   rtol=1e-6, atol=1e-12, equal_nan=True)
    # negative control: the same scales without the domain's factor 2 give other reads
    wrong = compare({"wrong": SignedGaussianMemory(64, scale=s, noise_scale=sigma, dtype=torch.float64)}, digits(),
                    image_shape=(1, 8, 8), corruptions={"white": 0.3}, sizes=(30,), queries=10, progress=False)
    assert not math.isclose(float(wrong["mse"].iloc[0]), float(theirs.loc[theirs["N"] == 30, "mse"].iloc[0]),
                            rel_tol=1e-2)


# ------------------------------------------------------------------------------ relations from theory
@pytest.mark.parametrize("s", [0.3, 0.8])
def test_l2_modern_hopfield_and_kernel_density_give_the_same_reads(s: float) -> None:
    """β = 1/(4s²) on [-1, 1] items, s on [0, 1] items and σ → ∞ (module docstring): the same reads.
    At s = 0.8 the reads blend several items (a non-trivial check); at 0.3 they recall."""
    steps = {"max_steps": 3, "tol": 0.0}
    contenders = [
        Contender("kde", lambda d: KernelDensityMemory(d, bandwidth=s, noise_scale=1e8, dtype=torch.float64),
                  methods=("fixed_point",), options={"fixed_point": steps}),
        Contender("modern", lambda d: ModernHopfield(d, beta=1 / (4 * s * s), similarity="l2", dtype=torch.float64),
                  methods=("fixed_point",), options={"fixed_point": steps}),
        Contender("modern, β without the domain's factor", lambda d: ModernHopfield(
            d, beta=1 / (s * s), similarity="l2", dtype=torch.float64), methods=("fixed_point",),
            options={"fixed_point": steps}),
    ]
    x = torch.rand(40, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = compare(contenders, x, corruptions={"white": 0.2}, sizes=(10, 40), seeds=(0, 1), queries=10, examples=10,
                progress=False)
    by = {name: rows.reset_index(drop=True) for name, rows in t.groupby("memory")}
    torch.testing.assert_close(torch.tensor(by["kde"]["mse"].values), torch.tensor(by["modern"]["mse"].values),
                               rtol=1e-9, atol=1e-12)
    ex = t.attrs["examples"]
    torch.testing.assert_close(torch.tensor(ex["kde|fixed_point|white|0.2"]["pattern"]),
                               torch.tensor(ex["modern|fixed_point|white|0.2"]["pattern"]), rtol=1e-9, atol=1e-12)
    if s == 0.8:  # blended reads: a wrong β is visible (negative control)
        assert by["kde"]["mse"].min() > 1e-3
        assert (by["modern, β without the domain's factor"]["mse"] - by["kde"]["mse"]).abs().min() > 1e-4


def test_hebbian_recall_collapses_past_the_capacity_and_storkey_is_the_control() -> None:
    D = 400
    x = (torch.rand(200, D, generator=torch.Generator().manual_seed(1)) < 0.5).to(torch.float64)
    rules = [Contender(rule, lambda d, r=rule: ClassicalHopfield(d, rule=r, dtype=torch.float64), methods=("sync",))
             for rule in ("hebbian", "storkey")]
    t = compare(rules, x, corruptions={"white": 0.3}, sizes=(20, 40, 80, 120), seeds=(0, 1), queries=40,
                progress=False)
    acc = t.groupby(["memory", "N"])["accuracy"].mean()
    # the cue flips ~5 % of the bits (P(|N(0, 0.3²)| > 0.5) = 4.8 %): 10 times the threshold's 1 %
    assert t["cue_mse"].between(0.035, 0.065).all()
    for n in (20, 40):  # N/D = 0.05, 0.1 < 0.138: recalled
        assert acc[("hebbian", n)] >= 0.9
    for n in (80, 120):  # N/D = 0.2, 0.3 > 0.138: collapsed
        assert acc[("hebbian", n)] <= 0.1
    assert all(acc[("storkey", n)] >= 0.9 for n in (20, 40, 80, 120))


# ----------------------------------------------------------------------------------------- resuming
def test_a_rerun_reads_every_finished_cell_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(corruptions={"white": 0.1, "drop": 0.5}, image_shape=(1, 8, 8), sizes=(5, 10, 20), seeds=(0, 1),
                  queries=5, examples=1, progress=False, output=tmp_path)
    first = compare([kde(), modern()], digits(), **kwargs)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2 * 2 * 3

    calls = []
    monkeypatch.setattr(run_module, "_read_cell", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("a finished cell was recomputed")))
    builds = []
    again = compare([Contender("kde", lambda d: builds.append(d), methods=("exact", "fixed_point"), key="0.1-0.2"),
                     Contender("modern", lambda d: builds.append(d), key="0.2")], digits(), **kwargs)
    assert calls == [] and builds == []
    metrics = ["memory", "method", "corruption", "level", "N", "seed", "mse", "accuracy", "log_evidence"]
    assert again[metrics].equals(first[metrics])
    assert again.attrs["examples"].keys() == first.attrs["examples"].keys()


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = dict(corruptions={"white": 0.1}, sizes=(5, 10, 20), seeds=(0, 1), queries=5, progress=False,
                  output=tmp_path)
    real = run_module._read_cell
    done: list[tuple[str, int, int]] = []

    def interrupted_after_four(contender, memory, items, pairs, n, seed, *rest):
        if len(done) == 4:
            raise KeyboardInterrupt
        done.append((contender.name, seed, n))
        return real(contender, memory, items, pairs, n, seed, *rest)

    monkeypatch.setattr(run_module, "_read_cell", interrupted_after_four)
    with pytest.raises(KeyboardInterrupt):
        compare([kde(), modern()], digits(), **kwargs)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4

    redone: list[tuple[str, int, int]] = []

    def counting(contender, memory, items, pairs, n, seed, *rest):
        redone.append((contender.name, seed, n))
        return real(contender, memory, items, pairs, n, seed, *rest)

    monkeypatch.setattr(run_module, "_read_cell", counting)
    resumed = compare([kde(), modern()], digits(), **kwargs)
    assert not set(redone) & set(done) and len(redone) == 2 * 2 * 3 - 4
    # the resumed table equals an uninterrupted one (the memory of a resumed cell replays its writes)
    monkeypatch.setattr(run_module, "_read_cell", real)
    fresh = compare([kde(), modern()], digits(), **{**kwargs, "output": None})
    metrics = ["memory", "method", "N", "seed", "mse", "accuracy", "retrieval_rate"]
    assert resumed[metrics].equals(fresh[metrics])


def test_a_changed_setting_is_a_new_cell(tmp_path: Path) -> None:
    common = dict(corruptions={"white": 0.1}, sizes=(5,), progress=False, output=tmp_path)
    compare([kde()], digits(), **common)
    compare([kde(0.2)], digits(), **common)  # another key
    compare([kde()], digits(), queries=3, **common)
    compare([kde()], digits(), **{**common, "corruptions": {"white": 0.2}})
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4
    cell = json.loads(next((tmp_path / "cells").glob("*.json")).read_text())
    assert {"key", "rows", "examples"} <= set(cell)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"memories": {}}, ValueError, "at least one memory"),
        ({"memories": {"x": 3}}, TypeError, "must be a varmem Memory"),
        ({"memories": [Contender("a", lambda d: None), Contender("a", lambda d: None)]}, ValueError, "distinct"),
        ({"memories": {"": ModernHopfield(64, beta=0.2)}}, ValueError, "needs a name"),
        ({"memories": {"x": lambda d: 3}}, TypeError, "built int, not a Memory"),
        ({"data": torch.rand(10, 64) * 2}, ValueError, "within [0, 1]"),
        ({"data": torch.full((10, 64), float("nan"))}, ValueError, "finite"),
        ({"data": torch.rand(10)}, TypeError, "[M, D]"),
        ({"data": [[0.0]]}, TypeError, "[M, D]"),
        ({"sizes": (100,)}, ValueError, "exceeds the 60 items"),
        ({"sizes": (0,)}, ValueError, "sizes entry"),
        ({"sizes": ()}, ValueError, "at least one size"),
        ({"seeds": (-1,)}, ValueError, "seeds entry"),
        ({"corruptions": {"blur": 0.1}}, ValueError, "unknown corruption 'blur'"),
        ({"corruptions": {}}, ValueError, "at least one corruption"),
        ({"corruptions": [("white",)]}, ValueError, "(name, level) pairs"),
        ({"queries": 0}, ValueError, "queries"),
        ({"threshold": -1.0}, ValueError, "threshold"),
        ({"examples": -1}, ValueError, "examples"),
    ],
)
def test_bad_arguments_are_refused_with_a_message_that_names_them(kwargs, error, message) -> None:
    args = {"memories": {"m": ModernHopfield(64, beta=0.2)}, "data": digits(), "sizes": (5,), "progress": False,
            "corruptions": {"white": 0.1}, **kwargs}
    with pytest.raises(error, match=__import__("re").escape(message)):
        compare(args.pop("memories"), args.pop("data"), **args)
