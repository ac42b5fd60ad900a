import gzip
import os
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import fake_mnist_dir, write_idx

from vqvae_tf import data
from vqvae_tf.data import idx_files


@pytest.fixture(autouse=True)
def _clear_caches():
    idx_files.load_arrays.cache_clear()
    data.clear_caches()
    yield


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_hand_written(tmp_path, compress):
    # A 2x3 file written byte by byte: magic 0x00000802, dims 2 and 3, then six values.
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 250, 251, 255])
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    (gzip.open if compress else open)(path, "wb").write(raw)
    np.testing.assert_array_equal(data.read_idx(str(path)), [[1, 2, 3], [250, 251, 255]])


def test_read_idx_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "bad", np.zeros((2, 2)), magic=b"\x00\x00\x0d\x02")
    with pytest.raises(data.DataError, match="wrong magic number"):
        data.read_idx(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated(tmp_path, compress):
    path = write_idx(tmp_path / "t", np.ones((4, 5, 5)), truncate=7, compress=compress)
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(str(path))


def test_read_idx_corrupt_gzip(tmp_path):
    path = write_idx(tmp_path / "t.gz", np.ones((40, 5, 5)), compress=True)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match=str(path)):
        data.read_idx(str(path))


def test_read_idx_missing(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.read_idx(str(tmp_path / "nope"))


def test_load_from_data_dir_matches_files(tmp_path):
    arrays = fake_mnist_dir(str(tmp_path / "fashion_mnist"))
    ds = data.load("fashion_mnist", "test", data_dir=str(tmp_path))
    images, labels = zip(*ds.as_numpy_iterator())
    images, labels = np.stack(images), np.array(labels)
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], arrays["t10k"][0] / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(labels, arrays["t10k"][1])
    assert labels.dtype == np.int32


def test_env_var_data_dir(tmp_path, monkeypatch):
    fake_mnist_dir(str(tmp_path), n_train=3, compress=False)
    monkeypatch.setenv("VQVAE_DATA_DIR", str(tmp_path))
    assert data.dataset_info("mnist").num_examples == {"train": 3, "test": 5}


def test_tfds_dataset_that_cannot_be_downloaded(tmp_path, monkeypatch):
    """A TFDS name not prepared here and not downloadable (no internet) names the problem and the
    way out, instead of looking like an empty dataset."""
    from vqvae_tf.data.sources import tfds as tfds_backend

    class Unprepared:  # what tfds.builder gives offline: no split sizes yet
        data_dir = str(tmp_path / "cifar10" / "3.0.2")
        info = types.SimpleNamespace(splits={}, features={"image": None, "label": None})

        def download_and_prepare(self):
            raise ConnectionError("Failed to establish a new connection: [Errno 101] Network is unreachable")

    monkeypatch.setattr(tfds_backend, "_builder", lambda name, data_dir: Unprepared())
    with pytest.raises(
        data.DataError,
        match=r"TFDS dataset 'cifar10' is not prepared in .*cifar10/3.0.2 and could not be downloaded "
        r"\(ConnectionError: Failed to establish .*\)\. Without internet access",
    ):
        data.dataset_info("cifar10", data_dir=str(tmp_path))


def test_missing_split_file(tmp_path):
    fake_mnist_dir(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError, match="Missing IDX labels file for split 'test'"):
        data.load("fashion_mnist", "test", data_dir=str(tmp_path))


def test_mismatched_label_count(tmp_path):
    fake_mnist_dir(str(tmp_path))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4), compress=True)
    with pytest.raises(data.DataError, match="holds 5 images"):
        data.load("fashion_mnist", "test", data_dir=str(tmp_path))


def test_unknown_split(tmp_path):
    fake_mnist_dir(str(tmp_path))
    with pytest.raises(data.DataError, match="Split 'validation' does not exist.*'test', 'train'"):
        data.load("fashion_mnist", "validation", data_dir=str(tmp_path))


def test_unknown_dataset_name():
    with pytest.raises(data.DataError, match="Unknown dataset 'no_such_dataset_xyz'"):
        data.load("no_such_dataset_xyz", "train")


def test_tfds_via_mock_data():
    with tfds.testing.mock_data(num_examples=7):
        info = data.dataset_info("cifar10")
        assert info.image_shape == (32, 32, 3) and info.num_classes == 10 and info.source == "tfds"
        items = list(data.load("cifar10", "train").as_numpy_iterator())
    assert len(items) == 7
    for image, label in items:
        assert image.shape == (32, 32, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label.dtype == np.int32 and 0 <= label < 10


def test_batched_train_and_eval(tmp_path):
    fake_mnist_dir(str(tmp_path), n_train=10)
    ds = data.load("fashion_mnist", "train", data_dir=str(tmp_path))
    train = data.batched(ds, 4, training=True, seed=1)
    shapes = [x.shape[0] for x, _ in train.take(5)]
    assert shapes == [4] * 5  # repeated, remainder dropped
    ev = data.batched(ds, 4, training=False)
    sizes = [x.shape[0] for x, _ in ev]
    assert sizes == [4, 4, 2]  # one pass, remainder kept
    labels1 = np.concatenate([y for _, y in ev.as_numpy_iterator()])
    labels2 = np.concatenate([y for _, y in ev.as_numpy_iterator()])
    np.testing.assert_array_equal(labels1, labels2)
    with pytest.raises(data.DataError, match="batch_size must be positive"):
        data.batched(ds, 0, training=True)


def test_pixel_variance_matches_numpy_and_is_cached(tmp_path):
    arrays = fake_mnist_dir(str(tmp_path))
    expected = (arrays["train"][0] / 255.0).var()
    assert data.pixel_variance("fashion_mnist", str(tmp_path)) == pytest.approx(expected, rel=1e-9)
    data.clear_caches()
    cached = [f for f in os.listdir(os.environ["VQVAE_CACHE_DIR"]) if f.startswith("variance-fashion_mnist")]
    assert cached
    assert data.pixel_variance("fashion_mnist", str(tmp_path)) == pytest.approx(expected, rel=1e-9)


def test_tfds_pixel_variance_matches_numpy():
    with tfds.testing.mock_data(num_examples=6):
        images = np.stack([x for x, _ in data.load("cifar10", "train").as_numpy_iterator()]).astype(np.float64)
        assert data.pixel_variance("cifar10") == pytest.approx(images.var(), rel=1e-6)


# ---------------------------------------------------------------- real Fashion-MNIST


def test_real_fashion_mnist():
    assert os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR), "apt-get install dataset-fashion-mnist"
    info = data.dataset_info("fashion_mnist")
    assert info.num_examples == {"train": 60000, "test": 10000}
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10
    for split, n in (("train", 60000), ("test", 10000)):
        batch = next(iter(data.load("fashion_mnist", split).batch(n)))
        images, labels = batch[0].numpy(), batch[1].numpy()
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
        assert set(np.unique(labels)) == set(range(10))
        assert np.bincount(labels).tolist() == [n // 10] * 10  # Fashion-MNIST is balanced
    variance = data.pixel_variance("fashion_mnist")
    assert 0.1 < variance < 0.15


def test_tfds_images_of_varying_size_need_image_size():
    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(data.DataError, match=r"'oxford_flowers102' has images of varying size \(None, None, 3\)"):
            data.dataset_info("oxford_flowers102")
        info = data.dataset_info("oxford_flowers102", image_size="24,32")
        assert info.image_shape == (24, 32, 3) and info.num_classes == 102
        images = [x for x, _ in data.load("oxford_flowers102", "train", image_size="24,32").as_numpy_iterator()]
    assert len(images) == 3 and all(x.shape == (24, 32, 3) for x in images)


def test_a_named_directory_that_does_not_exist_is_an_error(tmp_path):
    """A --data_dir the user names is used or refused, never replaced by a default location (with
    Debian's Fashion-MNIST installed, the search would otherwise fall back to it)."""
    missing = str(tmp_path / "nowhere")
    with pytest.raises(data.DataError, match=f"data_dir {missing} does not exist"):
        data.DataSource("fashion_mnist", missing)
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("mnist", "train", data_dir=missing)
    moved = data.DataSource.from_dict({"name": "fashion_mnist", "data_dir": missing}, data_dir=str(tmp_path))
    assert moved.data_dir == str(tmp_path)  # a recorded directory is replaced before it is checked
