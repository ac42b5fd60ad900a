"""Image folders (vqvae_tf.data.image_files): layouts, formats by content, decoding against NumPy
references, the hash split, the decoded cache, bad input, and the stages reading a folder. The
folders are real Fashion-MNIST images written out as files."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, fashion_mnist_arrays, image_folder, write_image

from vqvae_tf import configs, data
from vqvae_tf.data import DataSource, image_cache
from vqvae_tf.data import image_files as folder_lib
from vqvae_tf.data.sources.image_folder import ImageFolderBackend
from vqvae_tf.training import export_codes_lib, sample_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path / "cache"))
    data.clear_caches()
    yield
    data.clear_caches()


def _arrays(ds):
    images, labels = zip(*ds.as_numpy_iterator())
    return np.stack(images), np.array(labels)


def test_split_folders_with_classes_give_the_pixels_and_labels(tmp_path):
    x, y = fashion_mnist_arrays("train", 60)
    splits = ["train"] * 40 + ["test"] * 20
    image_folder(tmp_path / "f", x, y, splits=splits)
    info = data.dataset_info("image_folder", str(tmp_path / "f"))
    present = sorted(set(y.tolist()))
    assert info.image_shape == (28, 28, 1)
    assert info.num_examples == {"train": 40, "test": 20}
    assert info.class_names == tuple(f"c{c}" for c in present)
    images, labels = _arrays(data.load("image_folder", "train", data_dir=str(tmp_path / "f")))
    # Files are read in sorted order: class folder, then name; within a class, the original order.
    order = sorted(range(40), key=lambda i: (f"c{y[i]}", i))
    np.testing.assert_array_equal(images[..., 0], x[order].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(labels, [present.index(y[i]) for i in order])
    assert images.dtype == np.float32 and labels.dtype == np.int32


def test_formats_are_recognised_by_content(tmp_path):
    x, _ = fashion_mnist_arrays("test", 5)
    rgb = np.stack([x, x // 2, 255 - x], axis=-1)
    root = tmp_path / "f" / "train"
    write_image(str(root / "a.png"), rgb[0], "PNG")
    write_image(str(root / "b"), rgb[1], "BMP")  # no extension
    write_image(str(root / "c.jpg"), rgb[2], "WEBP", lossless=True)  # misleading extension
    from PIL import Image

    frames = [Image.fromarray(x[3], "L"), Image.fromarray(255 - x[3], "L")]
    frames[0].save(root / "d.gif", save_all=True, append_images=frames[1:])  # animated: the first frame
    write_image(str(root / "e.jpeg"), rgb[4], "JPEG", quality=95)
    write_image(str(tmp_path / "f" / "test" / "z.png"), rgb[0], "PNG")
    (root / "readme.txt").write_text("not an image")
    images, _ = _arrays(data.load("image_folder", "train", data_dir=str(tmp_path / "f"), channels=3))
    ref = rgb.astype(np.float32) / 255.0
    np.testing.assert_array_equal(images[:3], ref[:3])  # PNG, BMP, lossless WebP: exact
    np.testing.assert_array_equal(images[3], np.repeat(x[3][..., None], 3, -1) / np.float32(255.0))  # GIF
    pil = np.asarray(Image.open(root / "e.jpeg").convert("RGB"), np.float32) / 255.0  # JPEG: lossy,
    assert np.abs(images[4] - pil).mean() < 2 / 255  # so against Pillow's decoding of the same file
    assert np.abs(images[4] - ref[4]).mean() > 4 * np.abs(images[4] - pil).mean()  # (which is not the PNG)
    assert len(images) == 5  # readme.txt ignored
    assert Image.open(root / "d.gif").n_frames == 2


def test_alpha_is_composited_over_white_and_channels_convert(tmp_path):
    x, _ = fashion_mnist_arrays("test", 2)
    alpha = np.tile(np.linspace(0, 255, 28).astype(np.uint8), (28, 1))
    rgb = np.stack([x[0], x[0] // 2, 255 - x[0]], axis=-1)
    write_image(str(tmp_path / "f" / "train" / "a.png"), np.concatenate([rgb, alpha[..., None]], -1))
    write_image(str(tmp_path / "f" / "train" / "b.png"), np.stack([x[1], alpha], -1))  # grey + alpha
    write_image(str(tmp_path / "f" / "test" / "c.png"), x[1])
    root = str(tmp_path / "f")
    got, _ = _arrays(data.load("image_folder", "train", data_dir=root, channels=3))
    a = alpha[..., None] / 255.0
    want_a = np.round((rgb / 255.0 * a + (1 - a)) * 255) / 255
    want_b = np.round((x[1][..., None] / 255.0 * a + (1 - a)) * 255) / 255
    np.testing.assert_allclose(got[0], want_a, atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(got[1], np.repeat(want_b, 3, -1), atol=1 / 255 + 1e-6)
    grey, _ = _arrays(data.load("image_folder", "train", data_dir=root, channels=1))
    weights = np.array([0.2989, 0.5870, 0.1140])
    np.testing.assert_allclose(
        grey[0], np.round((want_a * weights).sum(-1, keepdims=True) * 255) / 255, atol=1.01 / 255
    )


def test_centre_crop_keeps_the_aspect_ratio(tmp_path):
    x, _ = fashion_mnist_arrays("test", 2)
    tall = np.concatenate([np.full((6, 28), 255, np.uint8), x[0], np.zeros((6, 28), np.uint8)])  # 40x28
    write_image(str(tmp_path / "f" / "train" / "tall.png"), tall)
    write_image(str(tmp_path / "f" / "test" / "t.png"), x[1])
    root = str(tmp_path / "f")
    same, _ = _arrays(data.load("image_folder", "train", data_dir=root, image_size=28))
    np.testing.assert_array_equal(same[0, ..., 0], x[0] / np.float32(255.0))  # the bands are cropped away
    small, _ = _arrays(data.load("image_folder", "train", data_dir=root, image_size="14,7"))
    crop = tall[:, 4:24].astype(np.float32)[..., None] / 255.0  # 40x20: the largest 2:1 crop, centred
    ref = tf.image.resize(crop, [14, 7], method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(small[0], np.round(np.clip(ref, 0, 1) * 255) / 255, atol=1e-6)


def test_hash_split_is_stable_when_files_are_added(tmp_path):
    x, y = fashion_mnist_arrays("train", 500)
    root = tmp_path / "f"
    paths = image_folder(root, x[:400], y[:400])
    before = folder_lib.scan(str(root), 0.1)
    test_before = {p for p, _ in before.files["test"]}
    assert test_before == {p for p in paths if folder_lib.in_test_split(p, 0.1)}
    assert 20 <= len(test_before) <= 65  # 400 draws at 0.1: mean 40, sd 6
    image_folder(root, x[400:], y[400:], start=400)
    after = folder_lib.scan(str(root), 0.1)
    assert {p for p, _ in after.files["test"]} & set(paths) == test_before  # no old file moved
    assert {p for p, _ in after.files["test"]} - set(paths)  # some new ones are held out
    assert {p for p, _ in before.files["train"]} <= {p for p, _ in after.files["train"]}
    assert len(folder_lib.scan(str(root), 0.5).files["test"]) > 2 * len(after.files["test"])


def test_corrupt_and_non_image_files(tmp_path, capsys):
    x, y = fashion_mnist_arrays("train", 30)
    root = tmp_path / "f"
    image_folder(root, x, y)
    good = open(root / f"c{y[0]}" / "00000.png", "rb").read()
    (root / f"c{y[0]}" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / f"c{y[1]}" / "fake.jpg").write_text("not a jpeg")
    (root / "notes.txt").write_text("hello")
    os.symlink(root / "missing.png", root / "dangling.png")  # a broken link: ignored, not a crash
    with pytest.raises(data.DataError, match="2 corrupt or truncated image.*fake.jpg.*truncated.png.*--skip_corrupt"):
        data.load("image_folder", "train", data_dir=str(root))
    info = data.dataset_info("image_folder", str(root), skip_corrupt_images=True)
    assert sum(info.num_examples.values()) == 30
    out = capsys.readouterr().out
    assert "Ignored 2 file(s)" in out and "notes.txt" in out and "dangling.png" in out
    assert "Skipping 2 corrupt image(s)" in out


def test_cache_is_made_once_per_fingerprint(tmp_path, capsys):
    x, y = fashion_mnist_arrays("train", 50)
    root = tmp_path / "f"
    image_folder(root, x, y, rgb=True)
    source = data.DataSource("image_folder", str(root))
    images, _ = _arrays(source.load("train"))
    assert images.shape[1:] == (28, 28, 3)  # channels from the first image
    assert source.pixel_variance() == pytest.approx(float(np.var(images.astype(np.float64))), rel=1e-6)
    data.clear_caches()
    first = source.fingerprint()
    np.testing.assert_array_equal(_arrays(source.load("train"))[0], images)
    assert capsys.readouterr().out.count("Decoding") == 1  # the second process-fresh load read the cache
    data.clear_caches()
    image_folder(root, x[:1], y[:1], start=50, rgb=True)
    assert source.fingerprint() != first
    assert "Decoding 51 images" in capsys.readouterr().out
    assert data.DataSource("image_folder", str(root), image_size=14).fingerprint() != source.fingerprint()


def test_a_split_is_held_in_memory_only_when_it_fits(tmp_path, monkeypatch):
    x, y = fashion_mnist_arrays("train", 20)
    image_folder(tmp_path / "f", x, y)
    meta = ImageFolderBackend().meta(data.DataSource("image_folder", str(tmp_path / "f")))
    assert type(image_cache.read_cache(meta, "train")).__name__ == "CacheDataset"
    monkeypatch.setenv("VQVAE_MEMORY_CACHE_BYTES", str(28 * 28 - 1))  # less than one image
    ds = image_cache.read_cache(meta, "train")
    assert type(ds).__name__ != "CacheDataset"
    assert len(list(ds)) == meta["counts"]["train"]  # read from the disk cache all the same


def test_bad_input_is_named(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("image_folder", "train", data_dir=str(tmp_path / "missing"))
    with pytest.raises(data.DataError, match="needs --data_dir"):
        data.load("image_folder", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="holds no PNG, JPEG"):
        data.load("image_folder", "train", data_dir=str(tmp_path / "empty"))
    x, _ = fashion_mnist_arrays("train", 3)
    image_folder(tmp_path / "s", x, splits=["train"] * 3)
    (tmp_path / "s" / "test").mkdir()
    with pytest.raises(data.DataError, match="Split folder .*test holds no images"):
        data.load("image_folder", "train", data_dir=str(tmp_path / "s"))
    shutil.rmtree(tmp_path / "s" / "test")
    with pytest.raises(data.DataError, match="no test/ folder"):
        data.load("image_folder", "test", data_dir=str(tmp_path / "s"))
    for bad in ("abc", "0", "1,2,3", "-4", (1.5, 2), True):
        with pytest.raises(data.DataError, match="image_size must be N or H,W"):
            data.DataSource("fashion_mnist", image_size=bad)
    assert data.parse_image_size("64") == (64, 64) and data.parse_image_size("32,48") == (32, 48)
    with pytest.raises(data.DataError, match="channels must be 1"):
        data.DataSource("fashion_mnist", channels=2)
    with pytest.raises(data.DataError, match="test_fraction must be in"):
        data.DataSource("image_folder", "x", test_fraction=1.0)


def test_image_size_and_channels_apply_to_idx_data():
    x, _ = fashion_mnist_arrays("test", 4)
    info = data.dataset_info("fashion_mnist", image_size=56, channels=3)
    assert info.image_shape == (56, 56, 3)
    images, _ = _arrays(data.load("fashion_mnist", "test", image_size=56, channels=3).take(4))
    ref = tf.image.resize(x[..., None] / 255.0, [56, 56], antialias=True).numpy()
    np.testing.assert_allclose(images, np.repeat(np.round(np.clip(ref, 0, 1) * 255) / 255, 3, -1), atol=1e-6)


def test_training_refuses_undividable_size_and_too_few_images(tmp_path):
    config = configs.get_config("tiny")
    with pytest.raises(ValueError, match=r"Images of fashion_mnist are 30x30, which config 'tiny' \(downsample=4\)"):
        train_vqvae_lib.train_and_evaluate(config, RunOptions(str(tmp_path / "w"), data=DataSource(image_size=30)))
    x, y = fashion_mnist_arrays("train", 12)
    image_folder(tmp_path / "f", x, y)
    with pytest.raises(data.DataError, match="training images, fewer than one batch of 16"):
        train_vqvae_lib.train_and_evaluate(
            configs.get_config("tiny"),
            RunOptions(str(tmp_path / "w"), data=DataSource("image_folder", str(tmp_path / "f"))),
        )


def test_labels_by_class_name():
    names = ("Bag", "Coat", "10")
    labels = sample_lib.resolve_labels(["Coat", "0", "10"], 3, 3, class_names=names)
    np.testing.assert_array_equal(labels, [1, 0, 2])  # a name wins over the number it spells
    with pytest.raises(sample_lib.LabelsError, match=r"'Hat' is not one of the class names \(Bag, Coat, 10\)"):
        sample_lib.resolve_labels(["Hat"], 2, 3, class_names=names)


def test_resumed_run_on_a_changed_folder_and_later_stages(tmp_path, capsys):
    x, y = fashion_mnist_arrays("train", 80)
    root = tmp_path / "f"
    image_folder(root, x[:60], y[:60])
    w = str(tmp_path / "w")
    opts = dict(data=DataSource("image_folder", str(root)), log_every=2, checkpoint_every=2)
    config = configs.get_config("tiny")
    config.steps = 2
    train_vqvae_lib.train_and_evaluate(config, RunOptions(w, **opts))
    saved = train_vqvae_lib.trained_data_source(w)
    assert saved.image_size == (28, 28) and saved.channels == 1 and saved.data_dir == str(root)
    variance = train_vqvae_lib.Workdir(w).vqvae.read_config()["data_variance"]
    image_folder(root, x[60:], y[60:], start=60)
    data.clear_caches()
    capsys.readouterr()
    config = configs.get_config("tiny")
    config.steps = 4
    metrics = train_vqvae_lib.train_and_evaluate(config, RunOptions(w, **opts))
    assert "changed since this run started" in capsys.readouterr().out
    assert metrics["steps"] == 4
    assert train_vqvae_lib.Workdir(w).vqvae.read_config()["data_variance"] == variance
    assert os.path.exists(os.path.join(w, "vqvae", "reconstructions.png"))

    # Later stages read the recorded data; --data_dir replaces the folder after a move.
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    data.clear_caches()
    with pytest.raises(data.DataError, match="does not exist"):
        export_codes_lib.export_codes_stage(w)
    meta = export_codes_lib.export_codes_stage(w, data_dir=str(moved))
    assert meta["data"]["data_dir"] == str(moved) and sum(meta["counts"].values()) == 80
    assert meta["class_names"] == [f"c{c}" for c in sorted(set(y.tolist()))]
    with pytest.raises(ValueError, match=r"gives images of shape \(14, 14, 1\), but the VQ-VAE takes \(28, 28, 1\)"):
        export_codes_lib.export_codes_stage(w, data_dir=str(moved), image_size=14)
    # The prior trains on those codes: data flags naming other data are refused.
    prior = configs.get_prior_config("quick")
    with pytest.raises(ValueError, match="--dataset=mnist, but the codes .* were exported from image_folder"):
        train_prior_lib.train_prior(prior, RunOptions(w, data=DataSource("mnist")))
    with pytest.raises(ValueError, match="--data_dir=.*, but the codes were exported from"):
        train_prior_lib.train_prior(prior, RunOptions(w, data=DataSource(data_dir=str(tmp_path))))
    with pytest.raises(data.DataError, match="does not exist"):  # the folder's old place, after the move
        RunOptions(w, data=DataSource(data_dir=str(root)))


def test_configs_cover_colour_sizes():
    for name, size, grid in (
        ("cifar10", 32, 8),
        ("vqvae_64", 64, 16),
        ("imagenet128", 128, 32),
        ("vqvae_256", 256, 32),
    ):
        config = configs.get_config(name)
        assert config.image_shape == (size, size, 3) and config.latent_shape == (grid, grid), name


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--image_size=abc", "--image_size=abc: image_size must be N or H,W"),
        ("--channels=2", "--channels"),
        ("--test_fraction=1.5", "--test_fraction=1.5: test_fraction must be in (0, 1)"),
        ("--dataset=image_folder", "--dataset=image_folder needs --data_dir=DIR"),
    ],
)
def test_bad_data_flags(scripts, tmp_path, flag, message):
    res = scripts.run("train.train_vqvae", f"--workdir={tmp_path / 'w'}", flag)
    assert res.returncode != 0 and message in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "w").exists()


def test_own_images_train_the_default_prior_on_a_larger_grid(tmp_path, capsys):
    """README's own-images command (--config=vqvae_64 --channels=3) gives code grids larger than
    the default prior's 8 blocks of 3x3 can see (16x16 at 64 px; here 40 px, 10x10, to keep the
    sampler's compile short: the same path). The pipeline sizes the recipe's stack from the grid
    (issue 27), and so does train_prior with the default config; a --num_layers the user gives
    that is too small is refused. (A narrower network and a few steps: the grid is the same.)"""
    from vqvae_tf.models.priors.pixelcnn import PixelCNN
    from vqvae_tf.pipeline import pipeline_lib
    from vqvae_tf.pipeline.stages import PIPELINE_STAGES

    x, y = fashion_mnist_arrays("train", 24)
    root = tmp_path / "photos"
    image_folder(root, x, y % 2, rgb=True)
    recipe = configs.get_recipe("default", "image_folder", "vqvae_64")
    assert recipe.prior.num_layers == 8 and recipe.prior.kernel_size == 3
    fields = dict(num_hiddens=8, num_residual_hiddens=4, num_embeddings=16, embedding_dim=4, batch_size=4, steps=2)
    recipe.vqvae = dataclasses.replace(recipe.vqvae, **fields)
    w = str(tmp_path / "w")
    source = DataSource("image_folder", str(root), image_size=40, channels=3)
    opts = RunOptions(w, data=source, log_every=1, num_sample_columns=1)
    pipeline_lib.run_pipeline(recipe, opts, stages=PIPELINE_STAGES[:2])  # the VQ-VAE and its codes
    assert "10x10 code grid: 8 gated blocks of kernel 3 cannot see all of it" in capsys.readouterr().out
    assert recipe.prior.num_layers is None  # what the pipeline's prior stage trains

    # train_prior with the default prior config (8 blocks) fits itself to the codes' grid ...
    default = dataclasses.replace(configs.get_prior_config("default"), num_filters=4, batch_size=4, steps=2)
    # ... but a depth the user asked for (--num_layers) is refused, naming the grid and the need.
    with pytest.raises(
        ValueError, match="num_layers=8 with kernel_size=3 cannot see every earlier position of a 10x10"
    ):
        train_prior_lib.train_prior(default, opts, fit_to_codes=False)
    metrics = train_prior_lib.train_prior(dataclasses.replace(default, conditional=True), opts)
    assert metrics["steps"] == 2
    prior = train_prior_lib.load_trained_prior(w)
    assert prior.latent_shape == (10, 10) and prior.num_layers == PixelCNN.layers_to_reach((10, 10), 3) == 9


def _smooth_image(h, w, channels, seed):
    """uint8 [h,w,channels]: smooth gradients (a box reduction then a resize agrees with a direct
    resize on them to about a grey level)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    phase = np.random.default_rng(seed).uniform(0, 3, channels)
    planes = [0.5 + 0.45 * np.sin(2.5 * xx + 1.5 * yy + p) for p in phase]
    return np.round(np.stack(planes, -1) * 255).astype(np.uint8)


def test_very_large_files_decode_at_reduced_size(tmp_path, monkeypatch):
    """A file over LARGE_PIXELS (lowered here) is decoded by Pillow, box-reduced and then fitted
    as any other (alpha over white, grey, palette), one at a time: its cached pixels agree with the
    regular whole-file decode; one over MAX_DECODED_BYTES is corrupt, as TensorFlow finds it."""
    from PIL import Image

    from vqvae_tf.data import large_images

    root = tmp_path / "f" / "a"
    root.mkdir(parents=True)
    rgba = _smooth_image(240, 200, 4, 1)
    rgba[..., 3] = np.where(rgba[..., 3] > 128, 255, rgba[..., 3])
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    Image.fromarray(_smooth_image(160, 240, 1, 2)[..., 0], "L").save(root / "grey.png")
    Image.fromarray(_smooth_image(200, 200, 3, 3)).quantize(64).save(root / "palette.png")
    for i in range(6):  # small files, on the regular path
        Image.fromarray(_smooth_image(20, 20, 3, 10 + i)).save(root / f"small{i}.png")
    monkeypatch.setattr(large_images, "LARGE_PIXELS", 10_000)
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path / "cache"))
    reduced = []
    original = large_images.decode_reduced
    monkeypatch.setattr(large_images, "decode_reduced", lambda p, h, w: reduced.append(p) or original(p, h, w))
    folder = folder_lib.scan(str(tmp_path / "f"), 0.1)
    meta = image_cache.prepare(folder, (16, 16, 3), 0.1)
    assert len(reduced) == 3 and not sum(len(v) for v in meta["corrupt"].values())
    cached = {}
    for split in ("train", "test"):
        entries = folder.files[split]
        for (rel, _), (image, _) in zip(entries, image_cache.read_cache(meta, split).as_numpy_iterator()):
            cached[rel] = image
    for name in ("rgba", "grey", "palette"):
        whole = folder_lib.decode(tf.constant(str(root / f"{name}.png")), (16, 16), 3).numpy()
        diff = np.abs(cached[f"a/{name}.png"].astype(int) - whole.astype(int))
        assert diff.mean() < 1.5 and diff.max() <= 8, (name, diff.mean(), diff.max())
    monkeypatch.setattr(large_images, "MAX_DECODED_BYTES", 100_000)  # 240x200 RGBA: too large now
    monkeypatch.setenv("VQVAE_CACHE_DIR", str(tmp_path / "cache2"))
    meta = image_cache.prepare(folder, (16, 16, 3), 0.1)
    assert "a/rgba.png" in sum(meta["corrupt"].values(), [])


def test_small_folders_one_line_errors_and_the_batch_fitted(tmp_path, capsys):
    """A folder whose held-out split is empty is refused in one line before training (it crashed
    deep in TensorFlow); a training split smaller than the batch lowers the batch, saying so,
    unless --batch_size was given."""
    from vqvae_tf.pipeline import pipeline_lib

    x, y = fashion_mnist_arrays("train", 3)
    image_folder(tmp_path / "three", x, y)
    res = subprocess.run(
        [sys.executable, "-m", "train.train_vqvae", f"--workdir={tmp_path / 'w'}", "--config=tiny"]
        + ["--dataset=image_folder", f"--data_dir={tmp_path / 'three'}", "--steps=2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},  # as a user runs it
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().count("\n") == 0, res.stderr[-3000:]
    assert "has no held-out test images (3 training images)" in res.stderr
    x, y = fashion_mnist_arrays("train", 40)
    image_folder(tmp_path / "forty", x, y)
    source = DataSource("image_folder", str(tmp_path / "forty"))
    train = source.info().num_examples["train"]
    recipe = configs.get_recipe("quick", "image_folder", "tiny", None)
    recipe.vqvae.batch_size = 64
    pipeline_lib.run_pipeline(recipe, RunOptions(str(tmp_path / "w2"), data=source), stages=(), fit_batch=True)
    assert recipe.vqvae.batch_size == train < 64
    assert f"training with batches of {train} (--batch_size chooses)" in capsys.readouterr().out
    recipe.vqvae.batch_size = 64
    with pytest.raises(data.DataError, match=f"has {train} training images, fewer than one batch of 64"):
        pipeline_lib.run_pipeline(recipe, RunOptions(str(tmp_path / "w3"), data=source), stages=(), fit_batch=False)
