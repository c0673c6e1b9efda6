"""experiments/sparse_recovery.py at smoke size: its JSON, figures and the shape of its results."""

from __future__ import annotations

import json

from _scripts import load_experiment


def test_sparse_recovery_smoke(tmp_path):
    exp = load_experiment("sparse_recovery")
    result = exp.main(["--smoke", "--output", str(tmp_path)])
    data = json.loads((tmp_path / exp.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["settings"]["smoke"] is True and data["device"] == "cpu"
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    for name in (exp.PNG_NAME, exp.MESSAGES_PNG):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ref = data["reference"]
    assert ref["rank"] == ref["k"] == 20 and ref["max_abs_BX"] < 1e-10
    rows = ref["rows"]
    # few errors are always corrected; the greedy adversary never does better than random positions,
    # and beats them somewhere (it is an attack, not a relabelling)
    assert rows[0]["random_lp"] == rows[0]["queries"]
    assert all(r["adversarial_lp"] <= r["random_lp"] for r in rows)
    assert any(r["adversarial_lp"] < r["random_lp"] for r in rows)
    assert rows[-1]["random_lp"] < rows[-1]["queries"]  # 25 % errors at k/n = 1/2: past the threshold
    # more constraints (smaller k/n) correct more: success at the largest s/n grows as k/n shrinks
    last = [c["points"][-1]["success"] for c in data["curve"]]
    assert last[0] >= last[1] >= last[2] and last[0] > last[2]
    # structured messages: once N >= k the messages of the span are recalled whether written or not
    # (8 queries with s = n/10 errors at n = 40: a random failure or two is allowed), before that the
    # never-written ones are not (control); unstructured ones stop being correctable once they span R^n
    k, n = data["messages"]["k"], data["messages"]["n"]
    for row in data["messages"]["rows"]:
        if row["N"] >= k:
            assert row["structured_rank"] == k and row["structured_never_written"] >= 0.75
        else:
            assert row["structured_never_written"] <= 0.25
        if row["N"] >= n:
            assert row["unstructured_written"] == 0.0
