"""The synthetic factual-recall task and the models that solve it (Nichani, Lee & Bietti, ICLR 2025).

**Task** (the official ``task.py`` / ``run.py``, EOS variant).  ``S`` subjects, ``R`` relations; each
relation ``r`` has its own block of ``D`` answers ``{rD, …, rD + D − 1}`` and the fact ``a*(s, r)`` is
drawn uniformly from that block (or, ``structured=True``, ``a(s, r) = ⌊sD/S⌋ + rD`` as in the
sequential-learning notebook).  Tokens: subjects ``[0, S)``, relations ``[S, S+R)``, noise
``[S+R, S+R+n_noise)``, EOS ``= S+R+n_noise``.  A sequence of length ``T``: noise everywhere, the
subject at a uniform position in ``[0, T−2]``, the relation at a different uniform position in
``[0, T−2]``, EOS at ``T−1``; the label is ``a*(s, r)`` (one of ``R·D`` answers).

**One-layer transformer** (``model.py: TF_one_layer``).  Frozen embeddings ``x_t = wte[z_t]`` and
unembeddings, both ``N(0, 1/d)``; ``H`` heads of width ``d_h`` query from the last position only::

    a_h = softmax_t( (x_t K_h)·(x_T Q_h) / √d_h )      o = concat_h(Σ_t a_h(t) x_t V_h) O
    y   = o + W₂ ReLU(W₁ o + b₁)                       p(answer) = softmax(unembed · y)

``Q, K, V ~ N(0, 1/d_h)``, ``O ~ N(0, 1/d)``; parameters counted as in the paper's plots,
``4 H d_h d + 2 m d``.  Either the value/output matrices or the MLP can hold the ``S·R`` facts.

**Linear-attention model of the gradient dynamics** (``sequential-learning.ipynb``): one-hot
embeddings (``d`` = vocabulary size), ``h = Σ_t (x_Tᵀ A x_t) x_t``, logits ``Vᵀ h``; ``A, V`` start at
1e-5 in every entry and follow plain gradient descent.  The loss goes from ``ln(R·D)`` to a
plateau at ``ln D`` (the right relation's answer block, uniformly: "hallucination") and then to 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...validation import check_bool, check_int, check_positive, check_positive_int, check_seed

__all__ = [
    "FactualRecallTask",
    "OneLayerTransformer",
    "LinearAttentionRecall",
    "TrainResult",
    "train_recall",
    "recall_accuracy",
]


class FactualRecallTask:
    """The synthetic factual-recall task (module docstring), with its facts drawn from ``seed``.

    Attributes: ``facts [S, R]`` (answer ids in ``[0, R·D)``), ``vocab_size``, ``eos``,
    ``num_answers = R·D``, ``num_facts = S·R``.
    """

    def __init__(self, subjects: int, relations: int, answers: int = 8, noise_tokens: int | None = None,
                 length: int = 32, structured: bool = False, seed: int = 0) -> None:
        self.subjects = check_positive_int(subjects, "subjects")
        self.relations = check_positive_int(relations, "relations")
        self.answers = check_positive_int(answers, "answers")
        noise = self.subjects + self.relations if noise_tokens is None else noise_tokens
        self.noise_tokens = check_positive_int(noise, "noise_tokens")
        self.length = check_int(length, "length", minimum=3)
        self.structured = check_bool(structured, "structured")
        self.seed = check_seed(seed)
        S, R, D = self.subjects, self.relations, self.answers
        block = torch.arange(R) * D
        if self.structured:
            self.facts = (torch.arange(S)[:, None] * D // S) + block[None, :]
        else:
            g = torch.Generator().manual_seed(self.seed)
            self.facts = torch.randint(0, D, (S, R), generator=g) + block[None, :]
        self.vocab_size = S + R + self.noise_tokens + 1
        self.eos = self.vocab_size - 1
        self.num_answers = R * D
        self.num_facts = S * R

    def sample(self, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"tokens": [B, T], "label": [B], "subject": [B], "relation": [B]}`` (long, CPU)."""
        B, T = check_positive_int(batch, "batch"), self.length
        S, R = self.subjects, self.relations
        s = torch.randint(0, S, (B,), generator=generator)
        r = torch.randint(0, R, (B,), generator=generator)
        tokens = S + R + torch.randint(0, self.noise_tokens, (B, T), generator=generator)
        ps = torch.randint(0, T - 1, (B,), generator=generator)
        pr = torch.randint(0, T - 2, (B,), generator=generator)
        pr = pr + (pr >= ps).long()  # a different position in [0, T-2]
        rows = torch.arange(B)
        tokens[rows, ps] = s
        tokens[rows, pr] = S + r
        tokens[:, T - 1] = self.eos
        return {"tokens": tokens, "label": self.facts[s, r], "subject": s, "relation": r}


class OneLayerTransformer(torch.nn.Module):
    """The paper's one-layer transformer with frozen random embeddings (module docstring).

    Args: ``task`` (sizes), ``dim`` (``d``), ``heads`` (``H``), ``head_dim`` (``d_h``), ``mlp_width``
    (``m``; 0 = no MLP), ``seed``.
    """

    def __init__(self, task: FactualRecallTask, dim: int, heads: int, head_dim: int, mlp_width: int,
                 seed: int = 0) -> None:
        super().__init__()
        self.dim, self.heads = check_positive_int(dim, "dim"), check_positive_int(heads, "heads")
        self.head_dim = check_positive_int(head_dim, "head_dim")
        self.mlp_width = check_int(mlp_width, "mlp_width", minimum=0)
        g = torch.Generator().manual_seed(check_seed(seed))
        d, H, dh, m = self.dim, self.heads, self.head_dim, self.mlp_width

        def normal(*shape: int, std: float) -> Tensor:
            return std * torch.randn(*shape, generator=g)

        self.register_buffer("wte", normal(task.vocab_size, d, std=d ** -0.5))
        self.register_buffer("unembed", normal(task.num_answers, d, std=d ** -0.5))
        self.Q = torch.nn.Parameter(normal(H, d, dh, std=dh ** -0.5))
        self.K = torch.nn.Parameter(normal(H, d, dh, std=dh ** -0.5))
        self.V = torch.nn.Parameter(normal(H, d, dh, std=dh ** -0.5))
        self.O = torch.nn.Parameter(normal(H * dh, d, std=d ** -0.5))
        if m:
            self.W1 = torch.nn.Parameter(normal(m, d, std=d ** -0.5))
            self.b1 = torch.nn.Parameter(torch.zeros(m))
            self.W2 = torch.nn.Parameter(normal(d, m, std=m ** -0.5))

    @property
    def attention_parameters(self) -> int:
        """``4 H d_h d`` (Q, K, V, O)."""
        return 4 * self.heads * self.head_dim * self.dim

    @property
    def mlp_parameters(self) -> int:
        """``2 m d`` (W₁, W₂; the bias is not counted, as in the paper)."""
        return 2 * self.mlp_width * self.dim

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, T]`` tokens → ``[B, R·D]`` answer logits."""
        x = self.wte[tokens]  # [B, T, d]
        q = torch.einsum("bd,hde->bhe", x[:, -1], self.Q)  # [B, H, dh]
        k = torch.einsum("btd,hde->bhte", x, self.K)  # [B, H, T, dh]
        a = torch.softmax(torch.einsum("bhte,bhe->bht", k, q) / math.sqrt(self.head_dim), -1)
        ctx = torch.einsum("bht,btd->bhd", a, x)  # attend first, then project: Σ_t a(t) x_t V_h
        heads = torch.einsum("bhd,hde->bhe", ctx, self.V).reshape(x.shape[0], -1)
        o = heads @ self.O
        if self.mlp_width:
            o = o + torch.relu(o @ self.W1.T + self.b1) @ self.W2.T
        return o @ self.unembed.T


class LinearAttentionRecall(torch.nn.Module):
    """The linear-attention model of the gradient-dynamics analysis: one-hot embeddings,
    ``logits = Vᵀ Σ_t (x_Tᵀ A x_t) x_t`` (module docstring), ``A [V, V]`` and ``V [V, R·D]`` at ``init``
    in every entry."""

    def __init__(self, task: FactualRecallTask, init: float = 1e-5) -> None:
        super().__init__()
        n = task.vocab_size
        self.A = torch.nn.Parameter(torch.full((n, n), float(init)))
        self.V = torch.nn.Parameter(torch.full((n, task.num_answers), float(init)))

    def forward(self, tokens: Tensor) -> Tensor:
        # x_t one-hot: x_Tᵀ A x_t = A[z_T, z_t], so Σ_t A[z_T, z_t] V[z_t] = (c ⊙ A[z_T]) V with c the
        # token counts of the sequence: two dense products instead of gathers over B·T rows
        counts = torch.zeros(tokens.shape[0], self.A.shape[0], dtype=self.A.dtype, device=tokens.device)
        counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=self.A.dtype))
        return (counts * self.A[tokens[:, -1]]) @ self.V


@dataclass
class TrainResult:
    """What :func:`train_recall` returns: per evaluation (every ``eval_every`` steps) the ``step``,
    test ``loss``, ``accuracy``, ``relation_accuracy`` (the answer lies in the right relation's
    block) and ``subject_accuracy`` (the answer's position in its block is right); the final
    accuracy, the steps run and the seconds."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    relation_accuracy: list[float] = field(default_factory=list)
    subject_accuracy: list[float] = field(default_factory=list)
    final_accuracy: float = 0.0
    steps_run: int = 0
    seconds: float = 0.0


def recall_accuracy(model: torch.nn.Module, task: FactualRecallTask, batch: dict[str, Tensor]) -> dict[str, float]:
    """Test ``loss`` (mean CE), ``accuracy``, ``relation_accuracy`` and ``subject_accuracy`` on ``batch``."""
    with torch.no_grad():
        logits = model(batch["tokens"])
        label = batch["label"]
        pred = logits.argmax(-1)
        D = task.answers
        return {"loss": torch.nn.functional.cross_entropy(logits, label).item(),
                "accuracy": (pred == label).double().mean().item(),
                "relation_accuracy": (pred // D == label // D).double().mean().item(),
                "subject_accuracy": (pred % D == label % D).double().mean().item()}


def train_recall(
    model: torch.nn.Module, task: FactualRecallTask, *, steps: int, lr: float, batch: int = 1024,
    optimizer: str = "adam", eval_every: int = 100, test_size: int = 1024, target: float | None = 0.99,
    seed: int = 0, progress: bool = False, callback: Callable[[int, dict[str, float]], Any] | None = None,
    schedule: str = "constant",
) -> TrainResult:
    """Train on fresh samples every step (the paper's protocol), evaluating on one fixed test set.

    ``optimizer="adam"`` (AdamW with weight decay 0 in the paper = Adam) or ``"sgd"`` (plain
    gradient descent, the sequential-learning run); stops early once the test accuracy reaches
    ``target`` (None: never).  ``schedule="cosine"`` decays the rate as ``lr · ½(1 + cos(π t / steps))``
    (the last steps take small, precise steps: what turns 99 % into exactly 100 % on a budget)."""
    check_positive_int(steps, "steps")
    check_positive(lr, "lr")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    gen = torch.Generator().manual_seed(check_seed(seed))
    test = task.sample(test_size, torch.Generator().manual_seed(check_seed(seed) + 1))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr))
    sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
             if schedule == "cosine" else None)
    out = TrainResult()
    start = time.perf_counter()
    bar = tqdm(range(steps + 1), desc="train", disable=not progress, leave=False)
    for step in bar:
        if step % eval_every == 0 or step == steps:
            m = recall_accuracy(model, task, test)
            out.steps.append(step)
            for key in ("loss", "accuracy", "relation_accuracy", "subject_accuracy"):
                getattr(out, key).append(m[key])
            if callback is not None:
                callback(step, m)
            bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{m['accuracy']:.3f}")
            if step == steps or (target is not None and m["accuracy"] >= target):
                break
        data = task.sample(batch, gen)
        loss = torch.nn.functional.cross_entropy(model(data["tokens"]), data["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    out.final_accuracy = out.accuracy[-1]
    out.steps_run = out.steps[-1]
    out.seconds = time.perf_counter() - start
    return out
