"""One module of input checks: what each accepts, and the error that names what it refuses."""

import math

import numpy as np
import pytest
import torch

from varmem.validation import (
    MAX_ABS_VALUE,
    as_cue,
    as_items,
    as_mask,
    as_state,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_non_negative,
    check_number,
    check_positive,
    check_positive_int,
    check_seed,
    check_unit_interval,
    resolve_device,
    resolve_dtype,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize("value", [True, False, "0.1", "", None, [1.0], object(), 1j, torch.ones(2)])
def test_numbers_are_numbers(value):
    with pytest.raises(TypeError, match="lr must be a number"):
        check_number(value, "lr")


def test_number_ranges():
    assert check_positive(np.float32(0.5), "x") == 0.5 and check_positive(torch.tensor(2.0), "x") == 2.0
    assert check_non_negative(0, "x") == 0.0 and check_unit_interval(1, "x") == 1.0 and check_finite(-3, "x") == -3
    for fn, bad in ((check_positive, 0.0), (check_positive, math.inf), (check_positive, math.nan),
                    (check_non_negative, -1e-9), (check_unit_interval, 1.5), (check_finite, math.inf)):
        with pytest.raises(ValueError, match="x must"):
            fn(bad, "x")


def test_ints_and_bools():
    assert check_int(np.int64(3), "n", minimum=0) == 3 and check_positive_int(None, "n", allow_none=True) is None
    for bad in (True, 2.0, "2", None, torch.tensor(2)):
        with pytest.raises(TypeError, match="n must be an int"):
            check_positive_int(bad, "n")
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        check_positive_int(0, "n")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        check_seed(-1)
    assert check_bool(np.bool_(True), "flag") is True
    for bad in ("yes", 1, 0, None, torch.tensor(True)):
        with pytest.raises(TypeError, match="flag must be True or False"):
            check_bool(bad, "flag")


def test_choices_compare_by_type_and_value():
    assert check_choice("a", "opt", ("a", "b")) == "a"
    for bad in ("c", None, 1, True, ["a"], {"a": 1}):
        with pytest.raises(ValueError, match=r"opt must be one of \['a', 'b'\]"):
            check_choice(bad, "opt", ("a", "b"))
    with pytest.raises(ValueError):
        check_choice(True, "opt", (1, 2))  # True == 1, but a bool is not the int 1


def test_dtype_and_device_accept_names():
    assert resolve_dtype("float32") is torch.float32 and resolve_dtype("torch.float64") is torch.float64
    assert resolve_dtype(None) is None and resolve_device("cpu") == CPU and resolve_device(None) is None
    with pytest.raises(ValueError, match="dtype must be a floating dtype"):
        resolve_dtype("int32")
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        resolve_dtype(torch.int64)
    with pytest.raises(TypeError, match="dtype must be a torch dtype"):
        resolve_dtype(3)
    with pytest.raises(ValueError, match="device 'gpu0' is not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0.5)


def test_items_cues_and_states():
    x = as_items([[1.0, 2.0]], 2, torch.float64, CPU)
    assert x.shape == (1, 2) and x.dtype == torch.float64
    t = torch.arange(6.0).reshape(3, 2).T  # non-contiguous: accepted, made contiguous
    assert as_cue(t, None, 3, torch.float32, CPU)[0].is_contiguous()
    cue, mask = as_cue(torch.tensor([[1.0, float("nan")]]), np.array([True, False]), 2, torch.float64, CPU)
    assert torch.equal(cue, torch.tensor([[1.0, 0.0]])) and mask.dtype == torch.bool  # unobserved NaN: never read
    for bad, error, words in (
        (torch.ones(2, 3), ValueError, r"shape \[N, 2\]"),
        (torch.ones(2, 2, dtype=torch.complex64), TypeError, "floating dtype"),
        (np.array([["a", "b"]]), TypeError, "items must"),
        ({"a": 1}, TypeError, "tensor or array"),
        (torch.full((1, 2), 2 * MAX_ABS_VALUE), ValueError, "outside the supported range"),
    ):
        with pytest.raises(error, match=words):
            as_items(bad, 2, torch.float64, CPU)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        as_mask("yes", 1, 2, CPU)
    z = torch.zeros(4, 2, requires_grad=True)
    assert as_state(z, 2, torch.float64, CPU).requires_grad  # the graph is kept
    with pytest.raises(ValueError, match=r"z must have shape \[\.\.\., 3\]"):
        as_state(z, 3, torch.float64, CPU)
    with pytest.raises(TypeError, match="z must have a floating dtype"):
        as_state(torch.zeros(2, dtype=torch.long), 2, torch.float64, CPU)
