"""Writing, forgetting and deleting, and the bad-input catalogue: every bad call raises an error
that names the problem, and leaves what was stored exactly as it was."""

import math

import numpy as np
import pytest
import torch

import varmem


@pytest.fixture
def memory():
    m = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2)
    return m.write(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.0, 1.0]]))


def test_write_appends_in_one_shot_and_accepts_single_items_and_arrays(memory):
    memory.write(torch.tensor([5.0, 5.0, 5.0]))
    memory.write(np.array([[6.0, 6.0, 6.0], [7.0, 7.0, 7.0]], dtype=np.float32))
    assert len(memory) == 6
    assert memory.items.dtype == torch.get_default_dtype()
    torch.testing.assert_close(memory.items[-3:, 0], torch.tensor([5.0, 6.0, 7.0]))


def test_writing_changes_the_prior(memory):
    z = torch.tensor([[5.0, 5.0, 5.0]])  # far from the stored items (distance² ≥ 48, s = 0.5)
    before = memory.energy(z)
    memory.write(z)
    memory.write(z)
    assert memory.energy(z) < before
    # two of n kernels sit at z, the rest contribute exp(-96) or less:
    # E(z) = -log(2/n) + (D/2) log(2π s²)
    n = len(memory)
    expected = -math.log(2 / n) + 1.5 * math.log(2 * math.pi * 0.25)
    torch.testing.assert_close(memory.energy(z), torch.tensor([expected]))


def test_forget_by_index_slice_mask_and_range(memory):
    memory.write(torch.tensor([[3.0, 3.0, 3.0], [4.0, 4.0, 4.0]]))
    memory.forget(0)
    torch.testing.assert_close(memory.items[:, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    memory.forget(range(2))  # the two oldest
    torch.testing.assert_close(memory.items[:, 0], torch.tensor([3.0, 4.0]))
    memory.forget(torch.tensor([False, True]))
    torch.testing.assert_close(memory.items[:, 0], torch.tensor([3.0]))
    memory.forget(slice(None))
    assert len(memory) == 0


def test_delete_removes_one_copy_per_given_item(memory):
    memory.write(torch.tensor([1.0, 1.0, 1.0]))  # a duplicate
    memory.delete(torch.tensor([[1.0, 1.0, 1.0]]))
    assert len(memory) == 3 and int((memory.items == 1.0).all(-1).sum()) == 1
    memory.delete(torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0 + 1e-9]]), atol=1e-6)
    torch.testing.assert_close(memory.items, torch.zeros(1, 3))


def test_write_then_delete_restores_the_state(memory):
    before = memory.items.clone()
    new = torch.randn(4, 3)
    memory.write(new).delete(new)
    assert torch.equal(memory.items, before)


BAD_WRITES = [
    (torch.ones(2, 4), ValueError, "shape"),
    (torch.ones(2, 3, 1), ValueError, "shape"),
    (torch.ones(0, 3), ValueError, "empty"),
    (torch.ones(2, 3, dtype=torch.int64), TypeError, "floating dtype"),
    (torch.ones(2, 3, dtype=torch.bool), TypeError, "floating dtype"),
    (torch.tensor([[0.0, float("nan"), 0.0]]), ValueError, "NaN"),
    (torch.tensor([[0.0, float("inf"), 0.0]]), ValueError, "inf"),
    ("abc", TypeError, "tensor or array"),
]


@pytest.mark.parametrize("items, error, words", BAD_WRITES)
def test_failed_write_names_the_problem_and_leaves_memory_unchanged(memory, items, error, words):
    before = memory.items.clone()
    with pytest.raises(error, match=words):
        memory.write(items)
    assert torch.equal(memory.items, before)


def test_failed_forget_and_delete_leave_memory_unchanged(memory):
    before = memory.items.clone()
    with pytest.raises(IndexError, match="out of range"):
        memory.forget([0, 7])
    with pytest.raises(ValueError, match="bool index"):
        memory.forget(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="integers"):
        memory.forget(torch.tensor([0.5]))
    with pytest.raises(KeyError, match="not stored"):
        memory.delete(torch.tensor([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]]))  # first exists, second not
    assert torch.equal(memory.items, before)


@pytest.mark.parametrize(
    "cue, mask, error, words",
    [
        (torch.ones(2, 4), None, ValueError, "shape"),
        (torch.ones(0, 3), None, ValueError, "empty"),
        (torch.ones(2, 3, dtype=torch.int32), None, TypeError, "floating dtype"),
        (torch.tensor([[0.0, float("nan"), 0.0]]), None, ValueError, "NaN or inf"),
        (torch.tensor([[0.0, float("inf"), 0.0]]), torch.tensor([True, True, False]), ValueError, "NaN or inf"),
        (torch.ones(2, 3), torch.tensor([False, False, False]), ValueError, "nothing observed"),
        (
            torch.ones(2, 3),
            torch.tensor([[True, True, True], [False, False, False]]),
            ValueError,
            r"nothing observed for cues \[1\]",
        ),
        (torch.ones(2, 3), torch.ones(2, 3), TypeError, "bool"),
        (torch.ones(2, 3), torch.ones(4, dtype=torch.bool), ValueError, "mask must have shape"),
    ],
)
@pytest.mark.parametrize("method", ["exact", "fixed_point", "map", "nuts"])
def test_bad_cues_are_refused_by_every_engine(memory, cue, mask, error, words, method):
    before = memory.items.clone()
    with pytest.raises(error, match=words):
        memory.retrieve(cue, mask, method=method)
    assert torch.equal(memory.items, before)


def test_finiteness_check_is_exact_when_the_sum_overflows():
    """The finiteness check sums first (one reduction); huge finite entries whose sum overflows are
    still finite, and one NaN or inf among them is still caught.  Such values are outside the
    supported range (|x| <= MAX_ABS_VALUE), and a cue holding them is refused as such."""
    from varmem.validation import MAX_ABS_VALUE, all_finite, as_cue

    huge = torch.full((2, 3), 3e38, dtype=torch.float32)
    assert not torch.isfinite(huge.sum())  # the fast test alone would refuse it
    assert all_finite(huge)
    with pytest.raises(ValueError, match=r"beyond ±1e\+06 \(rows \[0, 1\]\), outside the supported range"):
        as_cue(huge, None, 3, torch.float32, torch.device("cpu"))
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = huge.clone()
        x[1, 2] = bad
        assert not all_finite(x)
        with pytest.raises(ValueError, match=r"NaN or inf in observed entries \(cues \[1\]\)"):
            as_cue(x, None, 3, torch.float32, torch.device("cpu"))
    assert all_finite(torch.tensor([1.0, -1.0]))
    edge = torch.full((1, 3), MAX_ABS_VALUE)
    assert torch.equal(as_cue(-edge, None, 3, torch.float64, torch.device("cpu"))[0], -edge)  # the limit itself is fine
    with pytest.raises(ValueError, match="outside the supported range"):
        as_cue(edge * 1.01, None, 3, torch.float64, torch.device("cpu"))


def test_unknown_method_and_options_are_named(memory):
    cue = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="unknown retrieval method 'magic'.*exact"):
        memory.retrieve(cue, method="magic")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['steps'\].*max_steps"):
        memory.retrieve(cue, method="fixed_point", steps=3)
    with pytest.raises(ValueError, match="max_steps"):
        memory.retrieve(cue, method="fixed_point", max_steps=-1)
    with pytest.raises(ValueError, match="optimizer"):
        memory.retrieve(cue, method="map", optimizer="sgd")
    with pytest.raises(ValueError, match="unknown init"):
        memory.retrieve(cue, method="fixed_point", init="zeros")
    with pytest.raises(ValueError, match="target_accept_prob"):
        memory.retrieve(cue, method="nuts", target_accept_prob=1.5)
    with pytest.raises(TypeError, match="return_weights"):
        memory.retrieve(cue, method="exact", return_weights="yes")


def test_empty_memory_refuses_to_be_read():
    m = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2)
    assert len(m) == 0 and bool(m)
    for method in m.methods:
        with pytest.raises(ValueError, match="empty"):
            m.retrieve(torch.zeros(1, 3), method=method)
    with pytest.raises(ValueError, match="empty"):
        m.energy(torch.zeros(1, 3))


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(dim=0, bandwidth=1.0, noise_scale=1.0), ValueError, "dim"),
        (dict(dim=2, bandwidth=0.0, noise_scale=1.0), ValueError, "bandwidth"),
        (dict(dim=2, bandwidth=float("nan"), noise_scale=1.0), ValueError, "bandwidth"),
        (dict(dim=2, bandwidth=1.0, noise_scale=-1.0), ValueError, "noise_scale"),
        (dict(dim=2, bandwidth="wide", noise_scale=1.0), TypeError, "bandwidth"),
        (dict(dim=2, bandwidth=1.0, noise_scale=1.0, chunk_size=0), ValueError, "chunk_size"),
        (dict(dim=2, bandwidth=1.0, noise_scale=1.0, chunk_size=True), TypeError, "chunk_size must be an int >= 1"),
        (dict(dim=True, bandwidth=1.0, noise_scale=1.0), TypeError, "dim must be an int >= 1"),
        (dict(dim=2.0, bandwidth=1.0, noise_scale=1.0), TypeError, "dim must be an int"),
        (dict(dim=2, bandwidth=True, noise_scale=1.0), TypeError, "bandwidth must be a number"),
        (dict(dim=2, bandwidth="0.5", noise_scale=1.0), TypeError, "bandwidth must be a number"),
        (dict(dim=2, bandwidth=1.0, noise_scale=1.0, dtype="float16x"), ValueError, "dtype"),
        (dict(dim=2, bandwidth=1.0, noise_scale=1.0, device="gpu0"), ValueError, "device"),
        (dict(dim=2, bandwidth=1.0, noise_scale=1.0, dtype=torch.int64), TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        varmem.KernelDensityMemory(**kwargs)


def test_noise_scale_can_be_changed_but_not_to_nonsense(memory):
    memory.noise_scale = 0.05
    assert memory.noise_scale == 0.05
    with pytest.raises(ValueError, match="noise_scale"):
        memory.noise_scale = 0.0
    assert memory.noise_scale == 0.05


def test_float32_memory_keeps_its_dtype_for_float64_input():
    m = varmem.KernelDensityMemory(2, bandwidth=0.5, noise_scale=0.5, dtype=torch.float32)
    m.write(torch.randn(5, 2, dtype=torch.float64))
    r = m.retrieve(torch.randn(3, 2, dtype=torch.float64), method="fixed_point")
    assert m.items.dtype == torch.float32 and r.pattern.dtype == torch.float32


# --- streaming writes: amortised appends ------------------------------------------------------------
def test_a_stream_of_single_writes_equals_one_batch_write_and_grows_geometrically():
    items = torch.randn(1000, 3)
    streamed = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2)
    blocks = set()
    for row in items:
        streamed.write(row)
        blocks.add(streamed._growth["items"][0].data_ptr())
    batch = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2).write(items)
    assert torch.equal(streamed.items, batch.items)
    capacity = streamed._growth["items"][0].shape[0]
    assert 1000 <= capacity <= 2000  # doubling: at most twice what is stored
    assert len(blocks) <= 8  # 16, 32, ..., 1024: a new block only when the old one is full
    cue = torch.randn(4, 3)
    expected = batch.retrieve(cue, method="exact").pattern
    torch.testing.assert_close(streamed.retrieve(cue, method="exact").pattern, expected)


def test_appends_never_change_a_tensor_the_caller_holds():
    memory = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2)
    for _ in range(5):
        memory.write(torch.randn(1, 3))
    held = memory.items  # a view of the growth block
    snapshot = held.clone()
    memory.write(torch.randn(2, 3))
    assert torch.equal(held, snapshot)
    # shrink the buffer by slicing (same storage), then write: the rows the caller still sees stay
    memory.items = memory.items[:3]
    memory.write(torch.full((4, 3), 7.0))
    assert torch.equal(held, snapshot)
    assert torch.equal(memory.items[:3], snapshot[:3]) and (memory.items[3:] == 7.0).all()


def test_checkpoint_and_dtype_change_after_streamed_writes(tmp_path):
    memory = varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2)
    for _ in range(20):
        memory.write(torch.randn(1, 3))
    path = varmem.save(memory, tmp_path / "m.safetensors")
    loaded = varmem.load(path)
    assert torch.equal(loaded.items, memory.items)
    assert path.stat().st_size < 20 * 3 * 8 + 2000  # the 20 rows, not the spare capacity
    loaded.write(torch.zeros(1, 3))
    assert len(loaded) == 21 and len(memory) == 20
    memory = memory.to(torch.float32)  # converting drops the spare capacity; writing goes on
    assert "_growth" not in memory.__dict__
    memory.write(torch.ones(2, 3))
    assert memory.items.dtype == torch.float32 and len(memory) == 22 and (memory.items[-2:] == 1).all()


@pytest.mark.parametrize("memory_factory", [
    lambda: varmem.KernelDensityMemory(3, bandwidth=0.5, noise_scale=0.2).write(torch.eye(3)),
    lambda: varmem.ModernHopfield(3, beta=2.0).write(torch.eye(3)),
    lambda: varmem.ClassicalHopfield(3).write(torch.tensor([[1.0, -1.0, 1.0]])),
])
def test_init_option_errors_name_the_shape_the_memory_and_the_choices(memory_factory):
    memory = memory_factory()
    cue = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"init tensor must have shape \[2, 3\], got \[2, 4\]"):
        memory.retrieve(cue, method="fixed_point", init=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=rf"unknown init 'zeros' for {type(memory).__name__}; choose 'cue'"):
        memory.retrieve(cue, method="fixed_point", init="zeros")
    given = memory.retrieve(cue, method="fixed_point", init=cue.clone(), max_steps=0)  # a tensor start is used
    torch.testing.assert_close(given.code, memory.retrieve(cue, method="fixed_point", max_steps=0).code)
