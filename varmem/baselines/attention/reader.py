"""What the trained attention readers share (:class:`varmem.MemN2N`, :class:`varmem.NTM`): the stored
items, Annabi et al.'s training loop (:meth:`AttentionReader.fit`: per step the memory is a batch of
``memory_size`` clean training items and the queries are the same items, clean (MemN2N, NTM) or
corrupted (MemN2N*, NTM*), loss ``MSE(read, items)``, Adam), and :func:`encode_codes` to run any
memory (also :class:`varmem.ModernHopfield`) in a VAE's code space.  They are read with the
``"attention"`` engine (:mod:`.engine`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...corruptions import CORRUPTIONS, corrupt
from ...memory import Memory
from ...validation import check_positive, check_positive_int
from .engine import retrieve_attention

__all__ = ["AttentionReader", "ReaderFit", "encode_codes", "VARIANTS"]

VARIANTS = ("annabi", "textbook")
Corruption = str | Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]] | None


def encode_codes(encoder: Any, x: Any, *, batch_size: int = 1024) -> Tensor:
    """Codes ``μ_enc(x)`` ``[B, L]`` of flat items ``x [B, D]``, without gradients, in batches.

    ``encoder`` is a :class:`varmem.LatentMemory` (its ``encode`` returns ``(mean, scale)``) or any
    callable returning a mean or a ``(mean, scale)`` pair.  ``x`` is moved to the encoder's device
    and dtype (those of its first parameter, when it has one).  This is how Annabi's baselines run
    in code space: store ``encode_codes(lm, x_clean)`` in :class:`MemN2N`, :class:`varmem.NTM` or
    :class:`varmem.ModernHopfield` and read with ``encode_codes(lm, x_corrupted)``.
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [B, D], got shape {tuple(x.shape)}")
    check_positive_int(batch_size, "batch_size")
    fn = encoder.encode if hasattr(encoder, "encode") else encoder
    if not callable(fn):
        raise TypeError(f"encoder must be a LatentMemory or a callable, got {type(encoder).__name__}")
    param = next(encoder.parameters(), None) if isinstance(encoder, torch.nn.Module) else None
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    out = []
    with torch.no_grad():
        for chunk in x.split(batch_size):
            code = fn(chunk)
            out.append(code[0] if isinstance(code, (tuple, list)) else code)
    return torch.cat(out)


@dataclass
class ReaderFit:
    """What :meth:`AttentionReader.fit` returns: ``losses [steps]`` (MSE per step, float64 CPU),
    ``steps``, ``epochs``, ``seconds`` (training loop wall time), ``lr``, ``corruption`` (its name,
    ``"callable"`` or ``None``)."""

    losses: Tensor
    steps: int
    epochs: int
    seconds: float
    lr: float
    corruption: str | None


class AttentionReader(Memory):
    """Shared state and protocol of the trained attention readers (:class:`MemN2N`, :class:`varmem.NTM`).

    State: ``items`` ``[N, D]`` (buffer, appended by :meth:`write`) and the subclass's learned
    parameters (changed only by :meth:`fit`).  Subclasses define ``attend(z, items, training=False)``,
    ``energy`` and ``default_lr``.
    """

    methods = (retrieve_attention,)
    default_method = "attention"
    default_lr: ClassVar[float] = 1e-3

    def __init__(self, dim: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(dim, device=device, dtype=dtype)
        self.register_buffer("items", torch.empty(0, dim, device=self.device, dtype=self.dtype))

    def _param(self, value: Tensor) -> torch.nn.Parameter:
        return torch.nn.Parameter(value.to(device=self.device, dtype=self.dtype))

    def __len__(self) -> int:
        return self.items.shape[0]

    def check_state(self) -> None:
        self.check_stored_items()
        self.check_parameters()

    def write(self, items: Any) -> "AttentionReader":
        """Append items ``[N, D]`` (or one ``[D]``) as they are; nothing is trained."""
        self.append_rows("items", self.prepare_items(items))
        return self

    @abstractmethod
    def attend(self, z: Tensor, items: Tensor | None = None, training: bool = False) -> tuple[Tensor, Tensor]:
        """``(read [B, D], log addressing [B, N])`` of queries ``z`` over ``items`` (default: the stored
        ones).  Attention readers define no probability model: the read is a trained deterministic map."""

    def read(self, cue: Any, mask: Any = None) -> Tensor:
        """The differentiable read ``[B, D]`` at reading time (``retrieve`` without the record)."""
        self._check_not_empty()
        cue, _ = self.prepare_cue(cue, mask)
        return self.attend(cue)[0]

    # --- training (Annabi's loop) -----------------------------------------------------------
    def fit(
        self,
        items: Any,
        corruption: Corruption = None,
        level: float | int | None = None,
        *,
        encoder: Any = None,
        image_shape: Any = None,
        use_mask: bool = True,
        epochs: int = 20,
        memory_size: int = 100,
        lr: float | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> ReaderFit:
        """Train the reader's parameters as Annabi et al. do (the stored items are not touched).

        Every epoch shuffles ``items`` (seeded) into batches of ``memory_size`` (a last partial
        batch is dropped); per batch ``X_b``: the memory is ``X_b``, the queries are ``X_b`` (clean)
        or ``corrupt(X_b)`` (MemN2N* / NTM*), and Adam takes one step on
        ``MSE(read(queries; X_b, α_train), X_b)`` (mean over entries, ``torch.nn.functional.mse_loss``).

        Args:
            items: ``[N_train, D]`` clean training items (or ``[N_train, D_x]`` pixels with ``encoder``).
            corruption: ``None`` (clean queries), a :data:`varmem.corruptions.CORRUPTIONS` name
                (with ``level``), or a callable ``(x, generator) -> (cue, mask)``; drawn afresh each step.
            encoder: code space: a :class:`varmem.LatentMemory` or callable (see :func:`encode_codes`);
                then ``items`` are pixels, corruptions act on pixels, memory = ``μ_enc(x)`` and
                queries = ``μ_enc(corrupted x)``.
            image_shape: ``(C, H, W)`` for image corruptions (default ``encoder.data_shape``).
            use_mask: zero the unobserved entries of a corrupted query, as ``retrieve(cue, mask)`` does;
                ``False`` keeps the corruption's fill values (Annabi's grey square is part of the image).
            epochs, memory_size, lr (``None`` = the class's ``default_lr``), seed, progress (tqdm bar).

        Raises ``ValueError`` (nothing changed) for bad arguments, and restores the parameters and
        raises if the loss becomes NaN/inf.
        """
        check_positive_int(epochs, "epochs")
        check_positive_int(memory_size, "memory_size")
        lr = check_positive(self.default_lr if lr is None else lr, "lr")
        if corruption is not None and not callable(corruption) and not isinstance(corruption, str):
            raise ValueError(f"corruption must be None, a corruption name or a callable, got {corruption!r}")
        if isinstance(corruption, str):
            if corruption not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {corruption!r}; valid names are {', '.join(CORRUPTIONS)}")
        if encoder is None:
            x = self.prepare_items(items)
        else:
            if not torch.is_tensor(items) or not items.is_floating_point() or items.dim() != 2 or len(items) == 0:
                raise ValueError(
                    "with an encoder, items must be a non-empty float tensor [N, D_x], got "
                    f"{type(items).__name__} {tuple(getattr(items, 'shape', ()))} {getattr(items, 'dtype', '')}"
                )
            if not torch.isfinite(items).all():
                raise ValueError("items contains NaN or inf")
            x = items
            codes = encode_codes(encoder, x[:1])
            if codes.shape[-1] != self.dim:
                raise ValueError(f"encoder codes have dimension {codes.shape[-1]}, this reader has dim {self.dim}")
        if memory_size > len(x):
            raise ValueError(f"memory_size {memory_size} exceeds the {len(x)} training items")
        if image_shape is None:
            shape = tuple(getattr(encoder, "data_shape", ()) or ())
            image_shape = shape if len(shape) == 3 else None

        def to_code(batch: Tensor) -> Tensor:
            return batch if encoder is None else encode_codes(encoder, batch).to(self.items)

        gen = torch.Generator(device="cpu").manual_seed(seed)
        batches = len(x) // memory_size
        params = [p for p in self.parameters() if p.requires_grad]
        before = {k: v.detach().clone() for k, v in self.named_parameters()}
        optimizer = torch.optim.Adam(params, lr=lr)
        losses: list[float] = []
        start = time.perf_counter()
        bar = tqdm(total=epochs * batches, desc=f"fit {type(self).__name__}", disable=not progress, leave=False)
        try:
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=gen)[: batches * memory_size].to(x.device)
                for idx in order.view(batches, memory_size):
                    xb = x[idx]
                    query = xb
                    if corruption is not None:
                        if callable(corruption):
                            cue, mask = corruption(xb, gen)
                        else:
                            cue, mask = corrupt(xb, corruption, level, generator=gen, image_shape=image_shape)
                        cue = cue.reshape(xb.shape).to(xb)
                        if use_mask:
                            cue = torch.where(mask.reshape(xb.shape).to(torch.bool), cue, torch.zeros_like(cue))
                        query = cue
                    memory = to_code(xb)
                    read, _ = self.attend(to_code(query), memory, training=True)
                    loss = torch.nn.functional.mse_loss(read, memory)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss became {loss.item()} at step {len(losses)}")
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    losses.append(loss.item())
                    bar.update()
                    bar.set_postfix(loss=f"{losses[-1]:.4g}")
        except BaseException as e:
            with torch.no_grad():
                for k, p in self.named_parameters():
                    p.copy_(before[k])
            if isinstance(e, FloatingPointError):
                raise ValueError(f"{e}; parameters restored (lower lr)") from None
            raise
        finally:
            bar.close()
        name = None if corruption is None else corruption if isinstance(corruption, str) else "callable"
        return ReaderFit(losses=torch.tensor(losses, dtype=torch.float64), steps=len(losses), epochs=epochs,
                         seconds=time.perf_counter() - start, lr=lr, corruption=name)


