"""Offline data loaders used by the demo, the examples and the benchmarks.

Nothing here downloads anything. Fashion-MNIST is read from local IDX files
(the Debian package `dataset-fashion-mnist` installs them); when they are
missing, `load_demo_data` falls back to scikit-learn's bundled digits, and
then to a small synthetic dataset generated with numpy.

Example:

```python
import keras_compress as kc

(x_train, y_train), (x_test, y_test) = kc.datasets.load_fashion_mnist()
name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
    max_train=6000, max_test=1000)
```
"""

import gzip
import os

import numpy as np

FASHION_MNIST_ENV_VAR = "KERAS_COMPRESS_FASHION_MNIST"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_FASHION_MNIST_DIR = os.path.join(
    "~", ".keras", "datasets", "fashion-mnist"
)
FASHION_MNIST_APT_PACKAGE = "dataset-fashion-mnist"

_FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.

__all__ = [
    "fashion_mnist_search_dirs",
    "load_demo_data",
    "load_digits_images",
    "load_fashion_mnist",
    "make_synthetic_images",
    "read_idx_images",
    "read_idx_labels",
]


def _read_gz(path):
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
        raise ValueError(
            f"Cannot read '{path}': not a valid gzip file ({e}). Delete it "
            "and reinstall the data set."
        ) from e


def _header(data, path, num_ints, magic, kind):
    header_bytes = 4 * num_ints
    if len(data) < header_bytes:
        raise ValueError(
            f"'{path}' is not an IDX {kind} file: {len(data)} bytes, shorter "
            f"than the {header_bytes}-byte header."
        )
    header = np.frombuffer(data, dtype=">u4", count=num_ints)
    if int(header[0]) != magic:
        raise ValueError(
            f"'{path}' is not an IDX {kind} file: magic number "
            f"{int(header[0])}, expected {magic}."
        )
    return [int(v) for v in header[1:]], header_bytes


def read_idx_images(path):
    """Reads a gzipped IDX3 image file (the MNIST/Fashion-MNIST format).

    Args:
        path: Path to a `*-images-idx3-ubyte.gz` file.

    Returns:
        A `uint8` array of shape `(num_images, rows, cols)`.

    Raises:
        ValueError: If the file is not gzip, has the wrong magic number
            (expected 2051) or a size that does not match its header.

    Example:

    ```python
    x = read_idx_images(
        "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    x.shape  # (10000, 28, 28)
    ```
    """
    path = os.fspath(path)
    data = _read_gz(path)
    (n, rows, cols), offset = _header(data, path, 4, _IMAGES_MAGIC, "image")
    expected = offset + n * rows * cols
    if len(data) != expected:
        raise ValueError(
            f"'{path}' is truncated or corrupt: its header announces {n} "
            f"images of {rows}x{cols} ({expected} bytes), the file has "
            f"{len(data)} bytes."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(
        n, rows, cols
    )


def read_idx_labels(path):
    """Reads a gzipped IDX1 label file (the MNIST/Fashion-MNIST format).

    Args:
        path: Path to a `*-labels-idx1-ubyte.gz` file.

    Returns:
        A `uint8` array of shape `(num_labels,)`.

    Raises:
        ValueError: If the file is not gzip, has the wrong magic number
            (expected 2049) or a size that does not match its header.

    Example:

    ```python
    y = read_idx_labels(
        "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
    y.shape  # (10000,)
    ```
    """
    path = os.fspath(path)
    data = _read_gz(path)
    (n,), offset = _header(data, path, 2, _LABELS_MAGIC, "label")
    if len(data) != offset + n:
        raise ValueError(
            f"'{path}' is truncated or corrupt: its header announces {n} "
            f"labels ({offset + n} bytes), the file has {len(data)} bytes."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=offset).copy()


def fashion_mnist_search_dirs(data_dir=None):
    """The folders `load_fashion_mnist` looks in, in order.

    Args:
        data_dir: An optional folder tried first.

    Returns:
        A list of folder paths: `data_dir` (if given), the folder named by the
        environment variable `KERAS_COMPRESS_FASHION_MNIST` (if set),
        `/usr/share/datasets/fashion-mnist`, `~/.keras/datasets/fashion-mnist`.
    """
    dirs = []
    if data_dir is not None:
        dirs.append(os.fspath(data_dir))
    env_dir = os.environ.get(FASHION_MNIST_ENV_VAR)
    if env_dir:
        dirs.append(env_dir)
    dirs.append(DEBIAN_FASHION_MNIST_DIR)
    dirs.append(os.path.expanduser(KERAS_FASHION_MNIST_DIR))
    return dirs


def _find_fashion_mnist(data_dir):
    searched = fashion_mnist_search_dirs(data_dir)
    for folder in searched:
        paths = {
            key: os.path.join(folder, name)
            for key, name in _FASHION_MNIST_FILES.items()
        }
        if all(os.path.isfile(p) for p in paths.values()):
            return paths
    raise FileNotFoundError(
        "Fashion-MNIST not found: no folder holds all of "
        f"{sorted(_FASHION_MNIST_FILES.values())}. Searched: "
        f"{searched}. Install the offline copy with `apt-get install -y "
        f"--no-install-recommends {FASHION_MNIST_APT_PACKAGE}`, or pass "
        f"data_dir=..., or set {FASHION_MNIST_ENV_VAR} to the folder that "
        "holds the four .gz files."
    )


def _scale_images(images):
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def load_fashion_mnist(data_dir=None):
    """Loads Fashion-MNIST from local IDX files, without any download.

    Folders are searched in this order: `data_dir`, the environment variable
    `KERAS_COMPRESS_FASHION_MNIST`, `/usr/share/datasets/fashion-mnist`
    (Debian package `dataset-fashion-mnist`), `~/.keras/datasets/fashion-mnist`.
    The first folder holding all four files is used.

    Args:
        data_dir: Optional folder holding `train-images-idx3-ubyte.gz`,
            `train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz` and
            `t10k-labels-idx1-ubyte.gz`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images as `float32` in
        `[0, 1]` with shape `(N, 28, 28, 1)` (60,000 train, 10,000 test),
        labels as `uint8` in `0..9` with shape `(N,)`.

    Raises:
        FileNotFoundError: If no folder holds the files; the message lists
            the folders searched and the `apt-get` command that installs them.
        ValueError: If a file is corrupt (names the file).

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = kc.datasets.load_fashion_mnist()
    x_train.shape  # (60000, 28, 28, 1)
    ```
    """
    paths = _find_fashion_mnist(data_dir)
    x_train = read_idx_images(paths["x_train"])
    y_train = read_idx_labels(paths["y_train"])
    x_test = read_idx_images(paths["x_test"])
    y_test = read_idx_labels(paths["y_test"])
    for x_key, y_key, x, y in (
        ("x_train", "y_train", x_train, y_train),
        ("x_test", "y_test", x_test, y_test),
    ):
        if len(x) != len(y):
            raise ValueError(
                f"'{paths[x_key]}' holds {len(x)} images but "
                f"'{paths[y_key]}' holds {len(y)} labels."
            )
    return (_scale_images(x_train), y_train), (_scale_images(x_test), y_test)


def _split(x, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    num_test = int(round(len(x) * test_fraction))
    test, train = order[:num_test], order[num_test:]
    return (x[train], y[train]), (x[test], y[test])


def load_digits_images(test_fraction=0.2, seed=0):
    """Loads scikit-learn's bundled 8x8 digits as a small image dataset.

    The offline fallback when Fashion-MNIST is not installed: 1,797 images
    shipped inside scikit-learn, no download.

    Args:
        test_fraction: Fraction of the images held out for testing.
        seed: Seed of the deterministic shuffle before the split.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images as `float32` in
        `[0, 1]` with shape `(N, 8, 8, 1)`, labels as `int64` in `0..9`.
        With the defaults, 1,438 train and 359 test images.

    Raises:
        ImportError: If scikit-learn is not installed.
        ValueError: If `test_fraction` is not in `(0, 1)`.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = kc.datasets.load_digits_images()
    x_train.shape  # (1438, 8, 8, 1)
    ```
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction must be in (0, 1); received {test_fraction}."
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits_images() needs scikit-learn: `pip install "
            "scikit-learn`."
        ) from e
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., np.newaxis]
    y = digits.target.astype(np.int64)
    return _split(x, y, test_fraction, seed)


def make_synthetic_images(
    num_train=2000,
    num_test=500,
    num_classes=10,
    image_size=28,
    noise=0.3,
    seed=0,
):
    """Generates a small, learnable image dataset with numpy.

    Each class has a fixed random prototype (a blurred binary pattern);
    every sample is its class prototype plus Gaussian noise, clipped to
    `[0, 1]`. A small CNN separates the classes well, so the data stands in
    for a real dataset in smoke tests.

    Args:
        num_train: Number of training images.
        num_test: Number of test images.
        num_classes: Number of classes.
        image_size: Height and width of the square images.
        noise: Standard deviation of the added Gaussian noise.
        seed: Seed; the same seed gives the same arrays.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: images as `float32` in
        `[0, 1]` with shape `(N, image_size, image_size, 1)`, labels as
        `int64` in `0..num_classes - 1`.

    Example:

    ```python
    (x, y), _ = kc.datasets.make_synthetic_images(num_train=100, num_test=10)
    x.shape  # (100, 28, 28, 1)
    ```
    """
    for name, value in (
        ("num_train", num_train),
        ("num_test", num_test),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if int(value) != value or value < 1:
            raise ValueError(
                f"{name} must be a positive integer; received {value!r}."
            )
    if noise < 0:
        raise ValueError(f"noise must be >= 0; received {noise}.")
    rng = np.random.default_rng(seed)
    cells = rng.random((num_classes, 7, 7)) < 0.4
    # Upsample each 7x7 cell pattern to the image size and soften the edges.
    reps = -(-image_size // 7)
    protos = np.kron(cells, np.ones((reps, reps)))[
        :, :image_size, :image_size
    ].astype(np.float32)
    protos = 0.5 * protos + 0.125 * (
        np.roll(protos, 1, axis=1)
        + np.roll(protos, -1, axis=1)
        + np.roll(protos, 1, axis=2)
        + np.roll(protos, -1, axis=2)
    )

    def sample(n):
        y = rng.integers(0, num_classes, size=n).astype(np.int64)
        x = protos[y] + rng.normal(0.0, noise, size=(n, image_size, image_size))
        return np.clip(x, 0.0, 1.0).astype(np.float32)[..., np.newaxis], y

    return sample(int(num_train)), sample(int(num_test))


def _subsample(x, y, max_count, rng):
    if max_count is None or max_count >= len(x):
        return x, y
    if max_count < 1:
        raise ValueError(f"max_train/max_test must be >= 1; got {max_count}.")
    keep = np.sort(rng.permutation(len(x))[:max_count])
    return x[keep], y[keep]


def load_demo_data(max_train=None, max_test=None, seed=0, data_dir=None):
    """Loads the best image dataset available offline.

    Tries, in order: Fashion-MNIST (`load_fashion_mnist`), scikit-learn's
    digits (`load_digits_images`), then a synthetic dataset
    (`make_synthetic_images`). Never downloads.

    Args:
        max_train: If set, keep at most this many training images, chosen
            at random with `seed` (the same seed keeps the same images).
        max_test: Same, for the test images.
        seed: Seed of the subsampling (and of the digits split and the
            synthetic data).
        data_dir: Optional folder with the Fashion-MNIST files.

    Returns:
        `(name, (x_train, y_train), (x_test, y_test))` where `name` is
        `"fashion_mnist"`, `"digits"` or `"synthetic"`; images are `float32`
        in `[0, 1]` with a trailing channel axis.

    Example:

    ```python
    name, (x_train, y_train), (x_test, y_test) = kc.datasets.load_demo_data(
        max_train=6000, max_test=1000)
    ```
    """
    try:
        name = "fashion_mnist"
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(data_dir)
    except FileNotFoundError:
        try:
            name = "digits"
            (x_train, y_train), (x_test, y_test) = load_digits_images(seed=seed)
        except ImportError:
            name = "synthetic"
            (x_train, y_train), (x_test, y_test) = make_synthetic_images(
                seed=seed
            )
    rng = np.random.default_rng(seed)
    x_train, y_train = _subsample(x_train, y_train, max_train, rng)
    x_test, y_test = _subsample(x_test, y_test, max_test, rng)
    return name, (x_train, y_train), (x_test, y_test)
