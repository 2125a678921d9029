"""Tests for keras_compress.datasets."""

import gzip
import os
import struct

import numpy as np
import pytest

from keras_compress import datasets

DEBIAN_DIR = datasets.DEBIAN_FASHION_MNIST_DIR
HAVE_DEBIAN_FILES = all(
    os.path.isfile(os.path.join(DEBIAN_DIR, name))
    for name in datasets._FASHION_MNIST_FILES.values()
)


def _write_idx_images(path, images, magic=2051):
    n, rows, cols = images.shape
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", magic, n, rows, cols))
        f.write(images.astype(np.uint8).tobytes())


def _write_idx_labels(path, labels, magic=2049):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", magic, len(labels)))
        f.write(labels.astype(np.uint8).tobytes())


def _write_fake_fashion_mnist(folder, num_train=6, num_test=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx_images(folder / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx_labels(folder / f"{split}-labels-idx1-ubyte.gz", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture
def no_default_dirs(monkeypatch, tmp_path):
    """Points every default search folder at an empty place."""
    monkeypatch.delenv(datasets.FASHION_MNIST_ENV_VAR, raising=False)
    monkeypatch.setattr(
        datasets, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no_debian")
    )
    monkeypatch.setattr(
        datasets, "KERAS_FASHION_MNIST_DIR", str(tmp_path / "no_keras")
    )


# ----------------------------------------------------------------- IDX files


def test_read_idx_roundtrip(tmp_path):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    _write_idx_images(tmp_path / "img.gz", images)
    _write_idx_labels(tmp_path / "lab.gz", labels)
    np.testing.assert_array_equal(
        datasets.read_idx_images(tmp_path / "img.gz"), images
    )
    np.testing.assert_array_equal(
        datasets.read_idx_labels(tmp_path / "lab.gz"), labels
    )


def test_read_idx_images_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad-images.gz"
    _write_idx_images(path, np.zeros((2, 3, 3), np.uint8), magic=2049)
    with pytest.raises(ValueError, match="bad-images.gz.*magic number 2049"):
        datasets.read_idx_images(path)


def test_read_idx_labels_bad_magic_names_file(tmp_path):
    path = tmp_path / "bad-labels.gz"
    _write_idx_labels(path, np.zeros(4, np.uint8), magic=2051)
    with pytest.raises(ValueError, match="bad-labels.gz.*expected 2049"):
        datasets.read_idx_labels(path)


def test_read_idx_truncated_names_file(tmp_path):
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, 10, 28, 28))
        f.write(b"\x00" * 100)
    with pytest.raises(ValueError, match="short.gz.*truncated"):
        datasets.read_idx_images(path)


def test_read_idx_not_gzip_names_file(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(ValueError, match="plain.gz.*gzip"):
        datasets.read_idx_labels(path)


def test_read_idx_short_header(tmp_path):
    path = tmp_path / "tiny.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="tiny.gz.*header"):
        datasets.read_idx_images(path)


# ------------------------------------------------------------ Fashion-MNIST


def test_load_fashion_mnist_from_data_dir(tmp_path):
    arrays = _write_fake_fashion_mnist(tmp_path)
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(tmp_path)
    assert x_train.shape == (6, 28, 28, 1)
    assert x_test.shape == (4, 28, 28, 1)
    assert x_train.dtype == np.float32
    np.testing.assert_allclose(
        x_train[..., 0], arrays["train"][0].astype(np.float32) / 255.0
    )
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])


def test_load_fashion_mnist_from_env_var(
    tmp_path, monkeypatch, no_default_dirs
):
    folder = tmp_path / "env"
    folder.mkdir()
    _write_fake_fashion_mnist(folder, num_train=3, num_test=2)
    monkeypatch.setenv(datasets.FASHION_MNIST_ENV_VAR, str(folder))
    (x_train, _), (x_test, _) = datasets.load_fashion_mnist()
    assert len(x_train) == 3 and len(x_test) == 2


def test_load_fashion_mnist_mismatched_counts(tmp_path):
    _write_fake_fashion_mnist(tmp_path)
    _write_idx_labels(
        tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8)
    )
    with pytest.raises(ValueError, match="4 images.*5 labels"):
        datasets.load_fashion_mnist(tmp_path)


def test_load_fashion_mnist_not_found_message(tmp_path, no_default_dirs):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_fashion_mnist(missing)
    message = str(info.value)
    assert "apt-get install -y --no-install-recommends" in message
    assert "dataset-fashion-mnist" in message
    assert str(missing) in message
    assert str(tmp_path / "no_debian") in message
    assert datasets.FASHION_MNIST_ENV_VAR in message


@pytest.mark.skipif(
    not HAVE_DEBIAN_FILES,
    reason=f"Debian package dataset-fashion-mnist not installed ({DEBIAN_DIR})",
)
def test_load_fashion_mnist_debian_files():
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(
        DEBIAN_DIR
    )
    assert x_train.shape == (60000, 28, 28, 1)
    assert x_test.shape == (10000, 28, 28, 1)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))
    assert set(np.unique(y_test)) == set(range(10))
    # Fashion-MNIST is balanced: 6,000 / 1,000 images per class.
    assert np.all(np.bincount(y_train) == 6000)
    assert np.all(np.bincount(y_test) == 1000)


# ---------------------------------------------------------------- fallbacks


def test_load_digits_images_shapes_and_determinism():
    pytest.importorskip("sklearn")
    (x_train, y_train), (x_test, y_test) = datasets.load_digits_images()
    assert x_train.shape == (1438, 8, 8, 1)
    assert x_test.shape == (359, 8, 8, 1)
    assert x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))
    (x_again, _), _ = datasets.load_digits_images()
    np.testing.assert_array_equal(x_train, x_again)
    (x_other, _), _ = datasets.load_digits_images(seed=1)
    assert not np.array_equal(x_train, x_other)


def test_load_digits_images_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_digits_images(test_fraction=1.5)


def test_synthetic_deterministic_and_learnable():
    (x_train, y_train), (x_test, y_test) = datasets.make_synthetic_images(
        num_train=1000, num_test=300, seed=3
    )
    assert x_train.shape == (1000, 28, 28, 1)
    assert x_test.shape == (300, 28, 28, 1)
    assert x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))
    (x_again, y_again), _ = datasets.make_synthetic_images(
        num_train=1000, num_test=300, seed=3
    )
    np.testing.assert_array_equal(x_train, x_again)
    np.testing.assert_array_equal(y_train, y_again)
    # Learnable: a nearest-class-mean classifier fit on the training set
    # classifies the test set far above chance (10 %).
    flat_train = x_train.reshape(len(x_train), -1)
    flat_test = x_test.reshape(len(x_test), -1)
    means = np.stack([flat_train[y_train == c].mean(0) for c in range(10)])
    distances = ((flat_test[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = np.mean(distances.argmin(1) == y_test)
    assert accuracy > 0.9


def test_synthetic_bad_args():
    with pytest.raises(ValueError, match="num_classes"):
        datasets.make_synthetic_images(num_classes=0)
    with pytest.raises(ValueError, match="noise"):
        datasets.make_synthetic_images(noise=-1.0)


def test_load_demo_data_fashion_subsample(tmp_path):
    _write_fake_fashion_mnist(tmp_path, num_train=20, num_test=10)
    name, (x_train, y_train), (x_test, _) = datasets.load_demo_data(
        max_train=5, max_test=3, seed=1, data_dir=tmp_path
    )
    assert name == "fashion_mnist"
    assert x_train.shape == (5, 28, 28, 1) and x_test.shape == (3, 28, 28, 1)
    _, (x_again, y_again), _ = datasets.load_demo_data(
        max_train=5, max_test=3, seed=1, data_dir=tmp_path
    )
    np.testing.assert_array_equal(x_train, x_again)
    np.testing.assert_array_equal(y_train, y_again)


def test_load_demo_data_falls_back_to_digits(no_default_dirs):
    pytest.importorskip("sklearn")
    name, (x_train, _), (x_test, _) = datasets.load_demo_data(max_train=100)
    assert name == "digits"
    assert x_train.shape == (100, 8, 8, 1)
    assert x_test.shape == (359, 8, 8, 1)


def test_load_demo_data_falls_back_to_synthetic(no_default_dirs, monkeypatch):
    def no_sklearn(*args, **kwargs):
        raise ImportError("no scikit-learn")

    monkeypatch.setattr(datasets, "load_digits_images", no_sklearn)
    name, (x_train, y_train), (x_test, _) = datasets.load_demo_data(
        max_train=50, max_test=20, seed=2
    )
    assert name == "synthetic"
    assert x_train.shape == (50, 28, 28, 1) and x_test.shape == (20, 28, 28, 1)
    _, (x_again, y_again), _ = datasets.load_demo_data(
        max_train=50, max_test=20, seed=2
    )
    np.testing.assert_array_equal(x_train, x_again)
    np.testing.assert_array_equal(y_train, y_again)
