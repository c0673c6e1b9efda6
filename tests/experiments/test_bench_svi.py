"""The SVI benchmark script (experiments/bench_svi.py) runs and records what it should.

No timing assertions: the speed targets live in the benchmark's printed ratios only.
"""

from __future__ import annotations

import json

import pyro
import pytest
import torch
from _scripts import load_experiment


@pytest.fixture(scope="module")
def bench():
    return load_experiment("bench_svi")


def test_smoke_run_writes_json_table_and_plot(bench, tmp_path, device):
    threads = torch.get_num_threads()
    result = bench.main(["--smoke", "--output", str(tmp_path), "--device", str(device)])
    assert torch.get_num_threads() == threads  # restored

    data = json.loads((tmp_path / bench.JSON_NAME).read_text())
    assert data == json.loads(json.dumps(result))
    assert data["seed"] == 0 and data["device"] == str(torch.device(str(device)))
    for package in ("python", "torch", "pyro", "varmem"):
        assert data["versions"][package]
    rows = data["rows"]
    assert [row["size"] for row in rows] == ["small", "medium", "compute"]
    for row in rows:
        assert set(row["ms_per_step"]) == set(bench.VARIANTS)
        assert all(v > 0 for v in row["ms_per_step"].values())
        for v in ("fit", "fit_jit", "pyro_svi"):
            assert row["ratio_to_torch"][v] == pytest.approx(row["ms_per_step"][v] / row["ms_per_step"]["torch"])
        assert row["check"]["relative_diff"] <= row["check"]["tolerance"]  # same ELBO before timing
    assert [row["target"] for row in rows] == [None, 1.3, 1.1]
    assert (tmp_path / bench.PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_torch_loss_is_the_negative_elbo_written_out(bench):
    """The hand-written loss against the log-densities computed elementwise from the formula."""
    args = bench.parse_args(["--smoke", "--dtype", "float64"])
    args.torch_device = torch.device("cpu")
    vae = bench.make_vae({"dim": 5, "hidden": [4], "code_dim": 2}, args)
    x = torch.randn(3, 5, dtype=torch.float64)
    pyro.set_rng_seed(4)
    loss = bench.torch_loss(vae, x, num_data=30)
    pyro.set_rng_seed(4)
    loc, scale = vae.encoder(x)
    z = loc + scale * torch.randn_like(loc)  # Normal.rsample draws ε the same way
    mean = vae.decoder(z)
    log_normal = lambda v, m, s: -0.5 * ((v - m) / s) ** 2 - torch.log(s * torch.sqrt(torch.tensor(2 * torch.pi)))
    sigma = torch.tensor(bench.NOISE, dtype=torch.float64)
    elbo = log_normal(x, mean, sigma).sum() + log_normal(z, 0.0, torch.tensor(1.0)).sum()
    elbo = elbo - log_normal(z, loc, scale).sum()
    torch.testing.assert_close(loss, -10.0 * elbo)  # N / B = 30 / 3


def test_bad_arguments_exit(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "huge"])
