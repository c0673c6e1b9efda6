"""The official BayesPCN code (``plai-group/bayes-pcn``) on varmem's data and initial weights.

Runs in the official code's environment (see ``experiments/bayespcn_hard.py`` for the commands): it
imports ``bayes_pcn.pcnet.PCNetEnsemble`` from ``PYTHONPATH`` and drives ``learn`` / ``infer``
directly (the command-line entry needs wandb, torchvision and downloads).  No official file is
patched; the step counts come from wrapping the module-level ``early_stop_infer`` (called once per
Adam step), which ``--stop none`` also uses to switch the official early stop off.

Reads ``--input``, an ``.npz`` (read with ``allow_pickle=False``) written by the varmem side:
``items [N, D]`` in ``[-1, 1]``; the initial weight means in varmem's (and the official) layout
``R0 [h, D]``, ``R1 … R{L-2} [h, h]``, ``top [h]``; ``cue_names``; per cue ``cue_<name> [N, D]`` and,
for a partial cue, ``fixed_<name> [N, D]`` (bool, True = a known pixel, the official
``fixed_indices``); ``settings`` (a JSON string: ``n_layers, h_dim, sigma_prior, sigma_obs,
sigma_data, T_infer, activation_lr, seed``).

Camera-ready configuration (``sweeps_camera/sweep_seq*.yaml``): ``p_pred`` energy, Bayes (conjugate)
layer update, one particle, mode proposal, ``individual`` log-joint, ``randn`` activity start, Adam,
one item per ``learn`` call; every cue of one corruption is read in one ``infer`` batch (the
official ``--n-batch-score`` default: all stored items).

Writes ``--output``, a JSON file: seconds (wall, ``perf_counter``) and CPU seconds
(``process_time``) of the writes and of each read, the mean Adam steps per write and per read
batch, and the recalled patterns ``[N, D]`` as nested lists (scored on the varmem side).
"""

import argparse
import json
import sys
import time

import numpy as np
import torch
from bayes_pcn.pcnet import PCNetEnsemble  # the official package, on PYTHONPATH
from bayes_pcn.pcnet.activations import optimize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--stop", choices=["official", "none"], default="official",
                   help="official: the code's |dF| <= 1e-3 early stop; none: always T_infer steps")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = np.load(args.input, allow_pickle=False)
    s = json.loads(str(data["settings"]))
    torch.manual_seed(int(s["seed"]))

    steps = [0]
    official_stop = optimize.early_stop_infer

    def counted(free_energy, prev_free_energy):  # called once per Adam step of maximize_log_joint
        steps[0] += 1
        return official_stop(free_energy, prev_free_energy) if args.stop == "official" else False

    optimize.early_stop_infer = counted

    items = torch.from_numpy(data["items"]).float()
    N, D = items.shape
    L, h = int(s["n_layers"]), int(s["h_dim"])
    model = PCNetEnsemble(
        n_models=1, n_layers=L, x_dim=D, h_dim=h, act_fn="relu", infer_T=int(s["T_infer"]),
        infer_lr=float(s["activation_lr"]), sigma_prior=float(s["sigma_prior"]), sigma_obs=float(s["sigma_obs"]),
        sigma_data=float(s["sigma_data"]), n_proposal_samples=1, activation_optim="adam",
        activation_init_strat="randn", weight_init_strat="randn", layer_log_prob_strat="p_pred",
        layer_sample_strat="map", layer_update_strat="bayes", ensemble_log_joint_strat="individual",
        ensemble_proposal_strat="mode", scale_layer=False, resample=False, weight_lr=None, beta_forget=0.0,
        beta_noise=None, mhn_metric="dot", bias=False, n_elbo_particles=1, kernel_type="rbf")
    layers = model._pcnets[0].layers
    for i, layer in enumerate(layers):  # varmem's initial means (also the official forget target)
        R = torch.from_numpy(data["top" if i == L - 1 else f"R{i}"]).float()
        if tuple(R.shape) != tuple(layer._R.shape):
            sys.exit(f"layer {i}: initial mean of shape {tuple(R.shape)}, the official layer has "
                     f"{tuple(layer._R.shape)}")
        layer._R, layer._R_original = R.clone(), R.clone()

    out = {"torch": torch.__version__, "stop": args.stop, "N": N, "settings": s, "reads": {}}
    steps[0] = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(N):
        model.learn(X_obs=items[i:i + 1])
    out["write_seconds"] = time.perf_counter() - t0
    out["write_cpu_seconds"] = time.process_time() - c0
    out["write_steps"] = steps[0] / N
    for name in [str(n) for n in data["cue_names"]]:
        cue = torch.from_numpy(data[f"cue_{name}"]).float()
        key = f"fixed_{name}"
        fixed = torch.from_numpy(data[key]) if key in data.files else None
        torch.manual_seed(int(s["seed"]))
        steps[0] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        pred = model.infer(X_obs=cue, fixed_indices=fixed, n_repeat=1).data
        out["reads"][name] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                              "steps": steps[0], "pattern": pred.tolist()}
    with open(args.output, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
