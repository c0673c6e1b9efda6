"""A composed predictive-coding network (:class:`PCNet`) as a varmem memory (:class:`PCNetMemory`).

The memory holds a :class:`~varmem.memories.predictive_coding.PCNet` (nodes listed top-down,
``x_0`` the top, ``x_n`` the sensory node) and the items written to it; writing trains the
network on them, reading relaxes its activities from a cue.  Its latent state is the **code** of
all node activities side by side, sensory first and then upwards (the layout of
:class:`~varmem.memories.predictive_coding.PCNetwork`)::

    z = [x_n (D) | x_{n-1} | … | x_0 (top)]          (each node flattened, [B, D + Σ hidden sizes])

Energy (:meth:`PCNetMemory.energy`), a negative log-density with every constant kept::

    E(z) = ½‖x_0 − μ_top‖²/σ_top² + (d_0/2) log 2πσ_top²            (top_prior=True; 0 otherwise)
         + Σ_i  ½‖x_i − g_i(x_{i-1})‖²/σ_i² + (d_i/2) log 2πσ_i²   (Gaussian node i)
         + Σ_i  Σ softplus(g_i) − x_i·g_i                          (Bernoulli node i: −log Bernoulli)
         = PCNet.energy(x) + const

so that, for Gaussian nodes, ``E = −log p`` of the Pyro trace of :meth:`PCNetMemory.model`
(the top node without a prior is an improper flat site, log-density 0).  With a cue the observed
sensory entries (``mask``) are taken from the cue, the others from ``z`` (PCNetwork's convention).

Writing (:meth:`PCNetMemory.write`): ``training="offline"`` re-fits the network on every stored item
(``epochs`` epochs of :meth:`PCNet.fit`: ``T`` inference steps per minibatch, then a weight step;
``incremental=True``: a weight step after every inference step), ``"continual"`` fits on the
new items only (earlier ones may be forgotten: the online setting).  Reading is the engine
``"pcnet"`` (:func:`retrieve_pcnet`), with the read procedures of the PC family as explicit options,
or ``"pcnet_pyro"`` (:func:`retrieve_pcnet_pyro`), the same relaxation as autograd through the Pyro
model (Gaussian nodes).
:meth:`PCNetMemory.evidence` estimates ``log p(x_obs | θ)`` by Laplace importance sampling over the
hidden nodes (Gaussian nodes with a top prior).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from ...domains import SIGNED, UNIT
from ...evidence import Evidence, importance_sampling
from ...helpers import make_generator
from ...memory import Memory
from ...validation import (
    all_finite,
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_positive_int,
    check_seed,
    check_unit_interval,
    in_range,
)
from .composition import FitRecord, PCNet
from .pc_readers import (
    INITS,
    OPTIMIZERS,
    PROCEDURES,
    PCNetPyroReadable,
    PCNetReadable,
    check_optimizer,
    retrieve_pcnet,
    retrieve_pcnet_pyro,
)
from .pc_spec import build_net, net_spec
from .start_values import STARTS

__all__ = ["PCNetMemory", "retrieve_pcnet", "retrieve_pcnet_pyro", "PCNetReadable", "PCNetPyroReadable", "net_spec",
           "build_net", "OPTIMIZERS"]

TRAINING = ("offline", "continual")


# --- the memory -----------------------------------------------------------------------------------
class PCNetMemory(Memory):
    """A predictive-coding network composed of layers (:class:`PCNet`) that stores items in its weights.

    Args:
        net: a :class:`PCNet` (copied: the caller's network is never trained) or a dict describing
            one (:func:`net_spec`, plus an optional ``"seed"`` for the initial weights);
            :meth:`dense` builds a dense one from widths.  ``D`` = its sensory node's size.
        training: ``"offline"`` (every write re-fits on all stored items) or ``"continual"`` (on
            the new items only).
        epochs: epochs of :meth:`PCNet.fit` per write.
        T: inference steps per minibatch.
        batch_size: minibatch size (None: the whole set).
        x_optimizer, x_lr: the activities' optimiser (a name of :data:`OPTIMIZERS`) and step.
        w_optimizer, w_lr: the weights' optimiser (``"hebbian"``: the local rule
            ``θ ← θ − w_lr ∂E/∂θ`` on the batch mean, or a name of :data:`OPTIMIZERS`; a fresh
            optimiser per write) and step.
        incremental: a weight step after every inference step (incremental PC).
        hidden_init: the hidden nodes' start in training and reads: ``"randn"``, ``"zeros"``,
            ``"top_down"`` (:meth:`PCNet.init_activities`).
        read_steps, read_lr, procedure, start: the read defaults (``max_steps``, ``lr`` (None:
            ``x_lr``), ``procedure``, ``start`` of :func:`retrieve_pcnet`; ``"pcnet"`` reads use
            ``x_optimizer``, ``"pcnet_pyro"`` Adam).
        seed: seeds the training (minibatch order and hidden starts; write ``k`` uses ``seed + N``,
            ``N`` the items stored before it).

    ``value_domain``: ``[-1, 1]`` (Gaussian sensory node); ``[0, 1]`` for a Bernoulli sensory node.

    Example:
        >>> m = PCNetMemory.dense(4, hidden=(8,), epochs=5, T=5)
        >>> m.write(torch.randn(3, 4)).retrieve(torch.zeros(1, 4), procedure="relax_all").pattern.shape
        torch.Size([1, 4])
    """

    methods = (retrieve_pcnet, retrieve_pcnet_pyro)
    default_method = "pcnet"
    value_domain = SIGNED
    latent_site = "x"
    observed_site = "x"

    def __init__(
        self,
        net: PCNet | dict[str, Any],
        *,
        training: str = "offline",
        epochs: int = 100,
        T: int = 20,
        batch_size: int | None = None,
        x_optimizer: str = "sgd",
        x_lr: float = 0.1,
        w_optimizer: str = "hebbian",
        w_lr: float = 1e-3,
        incremental: bool = False,
        hidden_init: str = "randn",
        read_steps: int = 100,
        read_lr: float | None = None,
        procedure: str | None = None,
        start: str | float = "zero",
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        if isinstance(net, PCNet):
            net = copy.deepcopy(net)
        else:
            net = build_net(net)
        if not isinstance(net, PCNet):
            raise TypeError(f"net must be a PCNet or a dict describing one, got {type(net).__name__}")
        super().__init__(net.dim, device=device, dtype=dtype)
        self.training_mode = check_choice(training, "training", TRAINING)
        self.epochs = check_positive_int(epochs, "epochs")
        self.T = check_positive_int(T, "T")
        self.batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
        self.x_optimizer = check_optimizer(x_optimizer, "x_optimizer")
        self.x_lr = check_positive(x_lr, "x_lr")
        self.w_optimizer = check_optimizer(w_optimizer, "w_optimizer", ("hebbian",))
        self.w_lr = check_positive(w_lr, "w_lr")
        self.incremental = check_bool(incremental, "incremental")
        self.hidden_init = check_choice(hidden_init, "hidden_init", INITS)
        self.read_steps = check_positive_int(read_steps, "read_steps")
        self.read_lr = None if read_lr is None else check_positive(read_lr, "read_lr")
        self.procedure = None if procedure is None else check_choice(procedure, "procedure", PROCEDURES)
        if torch.is_tensor(start):  # the saved config holds the default: a name or a number
            raise TypeError(f"start (the read default) must be one of {list(STARTS)} or a finite number; pass a "
                            "tensor of start values to a read (retrieve(..., start=values)) instead")
        if isinstance(start, str):
            self.start = check_choice(start, "start", STARTS)
        else:
            try:
                self.start = check_finite(start, "start")
            except TypeError:
                raise TypeError(f"start must be one of {list(STARTS)} or a finite number, got {start!r}") from None
        self.seed = check_seed(seed)
        for i, s in enumerate([net.sigma_top, *net.sigmas]):
            if not torch.finfo(self.dtype).tiny < s * s < torch.finfo(self.dtype).max:
                raise ValueError(f"net sigma {s:g} (node {i}) squared is outside the range of {self.dtype}")
        self.net = net.to(device=self.device, dtype=self.dtype)
        if net.energies[-1] == "bernoulli":
            self.value_domain = UNIT  # binary / intensity data; the class default is the Gaussian case
        self.register_buffer("items", torch.empty(0, self.dim, device=self.device, dtype=self.dtype))
        self.last_fit: FitRecord | None = None
        """The :class:`FitRecord` of the last write or :meth:`fit` (energy per epoch, seconds, steps)."""

    @classmethod
    def dense(cls, dim: int, hidden: Sequence[int] | int = (256, 256), *, activation: str = "relu",
              where: str = "pre", bias: bool = True, sigma: float = 1.0, sigma_data: float | None = None,
              top_prior: bool = True, sigma_top: float = 1.0, net_seed: int = 0, **kwargs: Any) -> "PCNetMemory":
        """A memory over a dense network ``hidden[0] (top) → … → hidden[-1] → dim`` (widths listed
        top-down), every layer with ``activation`` on side ``where``, Gaussian nodes of std
        ``sigma`` (the sensory one ``sigma_data``, default ``sigma``); ``kwargs`` go to the constructor."""
        check_positive_int(dim, "dim")
        widths = (hidden,) if isinstance(hidden, int) and not isinstance(hidden, bool) else tuple(hidden)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints (widths, top first), "
                             f"got {hidden!r}")
        sizes = [*widths, int(dim)]
        sigmas = [float(sigma)] * (len(sizes) - 2) + [float(sigma if sigma_data is None else sigma_data)]
        layers = [{"type": "Dense", "in_features": a, "out_features": b, "bias": bias, "activation": activation,
                   "where": where} for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        spec = {"top_shape": [sizes[0]], "layers": layers, "sigmas": sigmas, "top_prior": top_prior,
                "sigma_top": sigma_top, "seed": net_seed}
        return cls(spec, **kwargs)

    # --- size, config, state -----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.items.shape[0]

    def config(self) -> dict[str, Any]:
        return {"net": net_spec(self.net), "training": self.training_mode, "epochs": self.epochs, "T": self.T,
                "batch_size": self.batch_size, "x_optimizer": self.x_optimizer, "x_lr": self.x_lr,
                "w_optimizer": self.w_optimizer, "w_lr": self.w_lr, "incremental": self.incremental,
                "hidden_init": self.hidden_init, "read_steps": self.read_steps, "read_lr": self.read_lr,
                "procedure": self.procedure, "start": self.start, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"D={self.dim}, nodes={self.net.shapes}, training={self.training_mode}, stored={len(self)}"

    def check_state(self) -> None:
        self.check_parameters()
        self.check_stored_items()

    def default_options(self, method: str) -> dict[str, Any]:
        """``"pcnet"`` / ``"pcnet_pyro"`` read with ``max_steps = read_steps``, ``lr = read_lr`` (None:
        ``x_lr``), ``hidden_init``, ``procedure`` and ``start`` from the constructor, and ``"pcnet"``
        with ``optimizer = x_optimizer`` (``"pcnet_pyro"`` always uses Adam)."""
        out = {"procedure": self.procedure, "start": self.start, "max_steps": self.read_steps,
               "lr": self.x_lr if self.read_lr is None else self.read_lr, "hidden_init": self.hidden_init}
        if method == "pcnet":
            out["optimizer"] = self.x_optimizer
        return out

    # --- the code of all nodes ---------------------------------------------------------------------
    @property
    def node_sizes(self) -> list[int]:
        """Entries per node, top first (the sensory node last, ``D``)."""
        return [math.prod(s) for s in self.net.shapes]

    @property
    def latent_dim(self) -> int:
        """``L = Σ node sizes``: a read's code holds every node's activity."""
        return sum(self.node_sizes)

    def split_code(self, code: Tensor) -> list[Tensor]:
        """``[B, L]`` → node activities ``[B, *shape]``, top first (as :meth:`PCNet.energy` takes them)."""
        parts = code.split(self.node_sizes[::-1], dim=-1)[::-1]
        return [p.reshape(*code.shape[:-1], *s) for p, s in zip(parts, self.net.shapes, strict=True)]

    def join_code(self, nodes: list[Tensor]) -> Tensor:
        """Node activities (top first) → ``[B, L]``, sensory first."""
        return torch.cat([x.reshape(x.shape[0], -1) for x in nodes[::-1]], -1)

    def energy_constant(self) -> float:
        """``Σ_Gaussian nodes (d_i/2) log 2πσ_i²`` (+ the top prior's), the part of :meth:`energy`
        that :meth:`PCNet.energy` leaves out."""
        sizes, net = self.node_sizes, self.net
        c = 0.5 * sizes[0] * math.log(2 * math.pi * net.sigma_top**2) if net.top_prior else 0.0
        for i, (e, s) in enumerate(zip(net.energies, net.sigmas, strict=True)):
            if e == "gaussian":
                c += 0.5 * sizes[i + 1] * math.log(2 * math.pi * s * s)
        return c

    def prior_prediction(self) -> Tensor:
        """``[D]`` the top-down pass of means from ``μ_top`` (0 without a top prior): the start
        ``"prior_mean"`` of unknown sensory entries (``sigmoid`` of the logits for a Bernoulli node)."""
        with torch.no_grad():
            xs = self.net.init_activities(self.items.new_zeros(1, self.dim), "top_down")
            pred = self.net.layers[-1](xs[-2])
            if self.net.energies[-1] == "bernoulli":
                pred = torch.sigmoid(pred)
        return pred.reshape(-1)

    # --- energy ---------------------------------------------------------------------------------------
    def pc_energy(self, z: Any, cue: Any = None, mask: Any = None) -> Tensor:
        """``PCNet.energy`` at the code ``z``: :meth:`energy` without its constants (inputs checked)."""
        return self.energy(z, cue, mask) - self.energy_constant()

    def compute_energy(self, z: Tensor, cue: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``−log p(x_0, …, x_n | θ)`` ``[...]`` at the code ``z [..., L]`` (module docstring), all
        constants kept; with ``cue`` the observed sensory entries come from the cue."""
        batch = z.shape[:-1] if cue is None else torch.broadcast_shapes(z.shape[:-1], cue.shape[:-1])
        flat = z.expand(*batch, z.shape[-1]).reshape(-1, z.shape[-1])
        if cue is not None:
            c = cue.expand(*batch, cue.shape[-1]).reshape(-1, cue.shape[-1])
            sens = flat[:, :self.dim]
            if mask is None:
                sens = c
            else:
                sens = torch.where(mask.expand(*batch, mask.shape[-1]).reshape(-1, mask.shape[-1]), c, sens)
            flat = torch.cat([sens, flat[:, self.dim:]], -1)
        e = self.net.energy(self.split_code(flat)) + self.energy_constant()
        return e.reshape(batch)

    # --- the Pyro model -------------------------------------------------------------------------------
    def _site(self, i: int) -> str:
        """Site name of node ``i`` (top first): ``h{n-i}`` for hidden nodes, ``x`` for the sensory one."""
        n = len(self.net.layers)
        return "x" if i == n else f"h{n - i}"

    def model(self, cue: Tensor | None = None, mask: Tensor | None = None, num_cues: int = 1) -> Tensor:
        """Ancestral Pyro model of the nodes, top first (Gaussian nodes only).

        Sites (plate ``"cues"``, ``dim=-1``, each node flattened to ``[B, d]``): ``h{n}`` (the top:
        ``N(μ_top, σ_top²)``, or an improper flat site of log-density 0 without a top prior), …,
        ``h1``, and the sensory node ``x ~ N(g_n(x_{n-1}), σ_n²)`` observed at ``cue``; for a partial
        cue the unknown entries come from the flat site ``x_missing`` and ``x = where(mask, cue,
        x_missing)`` is observed (PCNetwork's convention).  Its log-density is ``−energy``."""
        self._check_not_empty()
        net = self.net
        if any(e != "gaussian" for e in net.energies):
            raise TypeError("PCNetMemory.model needs Gaussian nodes: a Bernoulli node's activity is continuous in "
                            "reads, so it has no proper Pyro likelihood here (use energy)")
        B = cue.shape[0] if cue is not None else num_cues
        sizes, n = self.node_sizes, len(net.layers)
        like = self.items
        with pyro.plate("cues", B, dim=-1):
            if net.top_prior:
                top = dist.Normal(net.mu_top.reshape(-1).expand(B, sizes[0]), net.sigma_top).to_event(1)
            else:
                top = dist.ImproperUniform(constraints.real, (B,), (sizes[0],))
            a = pyro.sample(self._site(0), top)
            for i, layer in enumerate(net.layers):
                mean = layer(a.reshape(B, *net.shapes[i])).reshape(B, -1)
                fn = dist.Normal(mean, torch.full_like(mean, net.sigmas[i])).to_event(1)
                if i + 1 < n:
                    a = pyro.sample(self._site(i + 1), fn)
                elif cue is None:
                    a = pyro.sample("x", fn)
                elif mask is None:
                    a = pyro.sample("x", fn, obs=cue)
                else:
                    free = pyro.sample("x_missing", dist.ImproperUniform(constraints.real, (B,), (self.dim,)))
                    a = pyro.sample("x", fn, obs=torch.where(mask, cue, free.to(like)))
        return a

    def site_values(self, z: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """The latent sites of :meth:`model` at the code ``z [B, L]`` (for ``poutine.condition``)."""
        nodes = self.split_code(z)
        values = {self._site(i): x.reshape(z.shape[0], -1) for i, x in enumerate(nodes[:-1])}
        if mask is not None:
            values["x_missing"] = z[:, :self.dim]
        return values

    def compute_evidence(self, cue: Tensor, mask: Tensor | None, *, num_samples: int = 256, seed: int | None = 0,
                         defensive: float = 0.1, newton_steps: int = 2, max_steps: int | None = None,
                         lr: float | None = None, optimizer: str | None = None) -> Evidence:
        """``log p(x_obs | θ) = log ∫ p(x_obs, h | θ) dh`` (Gaussian nodes and a top prior; the
        weights are point values), estimated by importance sampling over the hidden nodes ``h``.

        Exact parts: the unobserved sensory entries are integrated out in closed form (given the
        node above they are independent Gaussians, so they leave only the observed entries'
        terms).  The proposal is Laplace's: the mode of ``p(h | x_obs)`` (the ``"joint"`` read with
        ``max_steps`` / ``lr`` / ``optimizer``, then ``newton_steps`` Newton steps) and the inverse
        Hessian of ``E_obs(h) = −log p(x_obs, h)`` there (autograd, eigenvalues floored at 1e-6 of the
        largest), mixed with a share ``defensive`` of ancestral prior draws so the weights stay
        bounded.  ``num_samples`` draws per cue, seeded by ``seed``.  For linear activations the
        model is linear-Gaussian, the Laplace Gaussian is the exact posterior and, with
        ``defensive=0``, the estimate is exact to rounding.  Kind ``"estimate"``, with its standard
        error and effective sample size."""
        net = self.net
        if any(e != "gaussian" for e in net.energies) or not net.top_prior:
            raise TypeError("PCNetMemory has no evidence log p(x | M) here: it needs Gaussian nodes and a top prior "
                            "(top_prior=True; without it the model is improper)")
        S = check_int(num_samples, "option num_samples", minimum=2)
        check_seed(seed, "option seed", allow_none=True)
        delta = check_unit_interval(defensive, "option defensive")
        if delta == 1.0:
            raise ValueError("option defensive must be < 1 (a share of prior draws; 1 leaves no Laplace proposal)")
        newton = check_int(newton_steps, "option newton_steps", minimum=0)
        B, D = cue.shape
        known = torch.ones_like(cue, dtype=torch.bool) if mask is None else mask.expand(B, D)
        n_obs = known.sum(-1).to(cue.dtype)
        mode = retrieve_pcnet(self, cue, known, procedure="joint", max_steps=max_steps, lr=lr, optimizer=optimizer,
                              seed=seed).code[:, D:]
        c_unobs = 0.5 * math.log(2 * math.pi * net.sigmas[-1] ** 2)

        def e_obs(h: Tensor, x: Tensor, m: Tensor) -> Tensor:  # one cue: h [H], x [D], m [D]
            nodes = self.split_code(torch.cat([torch.zeros(D, dtype=h.dtype, device=h.device), h])[None])
            pred = net.layers[-1](nodes[-2]).reshape(1, D)  # unknown entries at their prediction: no energy
            z = torch.cat([pred, h[None]], -1)
            return self.compute_energy(z, x[None], m[None])[0] - c_unobs * (D - m.sum())

        grad_fn = torch.func.vmap(torch.func.grad(e_obs))
        hess_fn = torch.func.vmap(torch.func.jacrev(torch.func.jacrev(e_obs)))  # reverse over reverse: no forward AD
        with torch.no_grad():
            for _ in range(newton):
                hess = hess_fn(mode, cue, known)
                mode = mode - torch.linalg.solve(hess, grad_fn(mode, cue, known).unsqueeze(-1)).squeeze(-1)
            hess = hess_fn(mode, cue, known)  # [B, H, H]
            if not (all_finite(hess) and all_finite(mode)):
                raise FloatingPointError("the Laplace proposal of PCNetMemory.evidence is not finite for these cues")
            evals, evecs = torch.linalg.eigh(0.5 * (hess + hess.transpose(-1, -2)))
            evals = evals.clamp_min(1e-6 * evals.amax(-1, keepdim=True).clamp_min(1e-30))
            scale = evecs * evals.rsqrt().unsqueeze(-2)  # Σ^{1/2} = V Λ^{-1/2}: Σ = scale scaleᵀ
            g = make_generator(seed, "cpu")
            H = mode.shape[-1]
            eps = torch.randn(S, B, H, generator=g, dtype=cue.dtype).to(cue.device)
            laplace = mode + (scale @ eps.unsqueeze(-1)).squeeze(-1)  # [S, B, H]
            n_prior = int(round(delta * S))
            if n_prior:
                laplace[:n_prior] = self._prior_hidden(n_prior * B, g).reshape(n_prior, B, H)
            log_q_lap = (-0.5 * torch.linalg.vecdot(eps, eps) - 0.5 * H * math.log(2 * math.pi)
                         + 0.5 * evals.log().sum(-1))
            if n_prior:  # the draws' density under the mixture, for the Laplace part from its own formula
                diff = laplace - mode
                proj = (evecs.transpose(-1, -2).unsqueeze(0) @ diff.unsqueeze(-1)).squeeze(-1)
                log_q_lap = (-0.5 * (proj * proj * evals).sum(-1) - 0.5 * H * math.log(2 * math.pi)
                             + 0.5 * evals.log().sum(-1))
                log_q = torch.logaddexp(math.log1p(-delta) + log_q_lap,
                                        math.log(delta) - self._hidden_energy(laplace.reshape(S * B, H)).reshape(S, B))
            else:
                log_q = log_q_lap
            flat = laplace.reshape(S * B, H)
            e = torch.func.vmap(e_obs)(flat, cue.repeat(S, 1), known.repeat(S, 1)).reshape(S, B)
        return importance_sampling(-e - log_q, n_obs, method="laplace_importance_sampling")

    def _hidden_energy(self, h: Tensor) -> Tensor:
        """``−log p(h)`` ``[N]`` of the hidden nodes alone (top prior and the hidden layers, constants kept)."""
        net, D = self.net, self.dim
        nodes = self.split_code(torch.cat([h.new_zeros(h.shape[0], D), h], -1))
        sizes = self.node_sizes
        e = 0.5 * (nodes[0] - net.mu_top).pow(2).flatten(1).sum(-1) / net.sigma_top**2
        e = e + 0.5 * sizes[0] * math.log(2 * math.pi * net.sigma_top**2)
        for i in range(1, len(nodes) - 1):
            e = e + net.node_energy(i, nodes[i], net.layers[i - 1](nodes[i - 1]))
            e = e + 0.5 * sizes[i] * math.log(2 * math.pi * net.sigmas[i - 1] ** 2)
        return e

    def _prior_hidden(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``[n, H]`` ancestral draws of the hidden nodes from the network's prior (top first, flattened
        bottom-up as in the code)."""
        net = self.net
        like = self.items

        def noise(shape: Sequence[int]) -> Tensor:
            return torch.randn(n, *shape, generator=generator, dtype=like.dtype).to(like.device)

        x = net.mu_top.expand(n, *net.shapes[0]) + net.sigma_top * noise(net.shapes[0])
        nodes = [x]
        for i in range(1, len(net.shapes) - 1):
            x = net.layers[i - 1](x) + net.sigmas[i - 1] * noise(net.shapes[i])
            nodes.append(x)
        return torch.cat([a.reshape(n, -1) for a in nodes[::-1]], -1)

    # --- writing --------------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Tensor]:
        return {k: v.clone() for k, v in self.state_dict().items()}

    def _restore(self, snapshot: dict[str, Tensor]) -> None:
        for name, value in snapshot.items():
            self._set_state_tensor(name, value)
        self.__dict__.pop("_growth", None)

    def write(self, items: Any, *, progress: bool = False) -> "PCNetMemory":
        """Store ``items`` (``[N, D]``, ``[D]`` or sensory-shaped ``[N, *shape]``) and train the
        network: ``training="offline"`` on every stored item, ``"continual"`` on these only
        (:attr:`last_fit` keeps the record).  A write that fails or diverges (``FloatingPointError``)
        leaves the memory as it was."""
        shape = tuple(self.net.shapes[-1])
        if len(shape) > 1 and hasattr(items, "shape") and tuple(items.shape[1:]) == shape:
            items = items.reshape(items.shape[0], -1)
        new = self.prepare_items(items)
        check_bool(progress, "progress")
        if self.net.energies[-1] == "bernoulli" and not bool(((new >= 0) & (new <= 1)).all()):
            raise ValueError("items must lie in [0, 1] for a Bernoulli sensory node (its energy is the binary "
                             "cross-entropy with the items as targets)")
        before, last = self._snapshot(), self.last_fit
        n_before = len(self)
        try:
            self.append_rows("items", new)
            data = self.items if self.training_mode == "offline" else new
            self._fit(data, self.epochs, progress, None, self.seed + n_before)
        except BaseException:
            self._restore(before)
            self.last_fit = last
            raise
        return self

    def fit(self, epochs: int | None = None, *, progress: bool = False,
            callback: Callable[[int, FitRecord], Any] | None = None) -> "PCNetMemory":
        """Train ``epochs`` (default ``self.epochs``) more epochs on every stored item;
        ``callback(epoch, record)`` after each.  Nothing changes if it fails."""
        epochs = check_positive_int(self.epochs if epochs is None else epochs, "epochs")
        check_bool(progress, "progress")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (epoch, record), got {callback!r}")
        self._check_not_empty()
        before, last = self._snapshot(), self.last_fit
        try:
            self._fit(self.items, epochs, progress, callback, self.seed + len(self))
        except BaseException:
            self._restore(before)
            self.last_fit = last
            raise
        return self

    def _fit(self, data: Tensor, epochs: int, progress: bool, callback: Any, seed: int) -> None:
        w_opt: Any = "hebbian" if self.w_optimizer == "hebbian" else functools.partial(
            OPTIMIZERS[self.w_optimizer], lr=self.w_lr)
        with torch.no_grad():
            record = self.net.fit(data.clone(), epochs=epochs, batch_size=self.batch_size, T=self.T,
                                  x_optimizer=functools.partial(OPTIMIZERS[self.x_optimizer], lr=self.x_lr),
                                  w_optimizer=w_opt, w_lr=self.w_lr, incremental=self.incremental,
                                  init=self.hidden_init, seed=seed, progress=progress, callback=callback)
        for p in self.net.parameters():
            p.grad = None
        bad = [name for name, p in self.net.named_parameters() if not in_range(p.detach())]
        if bad or not all(math.isfinite(e) for e in record.energy):
            raise FloatingPointError(
                f"PCNetMemory training on the stored items diverged (weights {bad or 'finite'}, energies "
                f"{record.energy[-3:]}): lower x_lr (now {self.x_lr}) or w_lr (now {self.w_lr}), fewer T / epochs, "
                "or rescale the items; nothing was changed")
        self.last_fit = record
