"""Pretrained presets (vqvae_tf.models.presets): the directory format, loading by name or
directory, the errors, the pipeline's W/presets, export and sampling from a preset, fine-tuning,
and the shipped fashion_mnist presets checked on real Fashion-MNIST."""

import functools
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf
from helpers import fashion_mnist_arrays, train_tiny_vqvae

from vqvae_tf import VQVAE, PixelCNN, PresetError, PriorConfig, data, get_config, list_presets, sample_grids
from vqvae_tf.data import DataSource, image_files
from vqvae_tf.data.sources import clipart
from vqvae_tf.models import presets
from vqvae_tf.serving import export_presets_lib, export_savedmodel_lib, export_tflite_lib
from vqvae_tf.training import export_codes_lib, models_lib, sample_lib, train_prior_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained VQ-VAE + conditional prior on fake IDX data and its W/presets:
    (workdir, data_dir, presets dir)."""
    workdir, data_dir = train_tiny_vqvae(str(tmp_path_factory.mktemp("presets")))
    export_codes_lib.export_codes_stage(workdir)
    train_prior_lib.train_prior(
        PriorConfig(num_filters=8, num_layers=None, kernel_size=5, steps=2, batch_size=8, conditional=True),
        RunOptions(workdir=workdir, log_every=1, checkpoint_every=2, num_sample_columns=2),
    )
    paths = export_presets_lib.export_presets_stage(workdir, command="pytest")
    return workdir, data_dir, os.path.dirname(paths["vqvae"])


def _same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)


def test_presets_round_trip_the_trained_models(run):
    workdir, data_dir, out = run
    assert sorted(os.listdir(os.path.join(out, "vqvae"))) == ["config.json", "metadata.json", "model.weights.h5"]
    with h5py.File(os.path.join(out, "vqvae", "model.weights.h5")) as weights:
        assert "optimizer" not in weights  # the weights only, not the training state
    trained = train_vqvae_lib.load_trained_model(workdir)
    loaded = VQVAE.from_preset(out)  # a directory holding vqvae/ and prior/
    _same_weights(loaded, trained)  # every variable, the quantizer's state included
    images = next(iter(data.load("fashion_mnist", "test", data_dir).batch(12)))[0]
    np.testing.assert_array_equal(loaded.encode(images), trained.encode(images))
    assert loaded.data_variance == trained.data_variance
    prior = PixelCNN.from_preset(os.path.join(out, "prior"))  # or the model's own directory
    _same_weights(prior, train_prior_lib.load_trained_prior(workdir))
    untrained = VQVAE.from_preset(out, load_weights=False)
    assert {**untrained.get_config(), "name": ""} == {**trained.get_config(), "name": ""}
    assert not np.array_equal(np.asarray(untrained.weights[0]), np.asarray(trained.weights[0]))
    meta = presets.read_metadata(out, "vqvae")
    assert meta["command"] == "pytest" and meta["class_name"] == "VQVAE" and meta["steps"] == 4
    assert meta["parameter_count"] == trained.count_params() and meta["checkpoint"] == "ckpt-4"
    assert meta["data"]["name"] == "fashion_mnist" and meta["check_metrics"]["examples"] == 12
    prior_meta = presets.read_metadata(out, "prior")
    assert prior_meta["num_classes"] == 10 and len(prior_meta["class_counts"]) == 10
    # The check metrics are what the loaded models give on that subset.
    recomputed = export_presets_lib.vqvae_check_metrics(loaded, data.DataSource("fashion_mnist", data_dir))
    assert recomputed == pytest.approx(meta["check_metrics"], rel=1e-6)
    assert export_presets_lib.prior_check_metrics(prior, os.path.join(workdir, "codes")) == pytest.approx(
        prior_meta["check_metrics"], rel=1e-6
    )


def test_bad_presets_are_named(run, tmp_path):
    _, _, out = run
    with pytest.raises(
        PresetError, match=r"Unknown preset 'nope'.*shipped preset \(fashion_mnist, clipart_64, clipart_64_fsq\)"
    ):
        VQVAE.from_preset("nope")
    with pytest.raises(PresetError, match="holds a VQVAE, not a PixelCNN: load it with VQVAE.from_preset"):
        PixelCNN.from_preset(os.path.join(out, "vqvae"))
    broken = tmp_path / "broken"
    shutil.copytree(os.path.join(out, "vqvae"), broken)
    os.remove(broken / "model.weights.h5")
    with pytest.raises(PresetError, match="is missing model.weights.h5"):
        VQVAE.from_preset(str(broken))
    assert VQVAE.from_preset(str(broken), load_weights=False).num_embeddings == 16
    shutil.copy(os.path.join(out, "vqvae", "model.weights.h5"), broken)
    record = json.load(open(broken / "config.json"))
    record["config"]["num_hiddens"] = 24
    json.dump(record, open(broken / "config.json", "w"))
    with pytest.raises(PresetError, match="weights in .* do not fit the model of config.json"):
        VQVAE.from_preset(str(broken))
    os.remove(broken / "config.json")
    with pytest.raises(PresetError, match="is not a preset directory: it has no config.json and no vqvae/"):
        VQVAE.from_preset(str(broken))
    assert "fashion_mnist" in list_presets() and "PixelCNN" in list_presets()["fashion_mnist"]


def test_export_and_sample_from_a_preset(run, tmp_path):
    workdir, data_dir, out = run
    paths = export_savedmodel_lib.export_savedmodel_stage(None, str(tmp_path / "e"), preset=out)
    served = tf.saved_model.load(paths["vqvae"]).signatures["encode"]
    images = next(iter(data.load("fashion_mnist", "test", data_dir).batch(4)))[0]
    np.testing.assert_array_equal(served(images=images)["codes"], VQVAE.from_preset(out).encode(images))
    assert os.path.isdir(paths["prior"])
    report = export_tflite_lib.export_tflite_stage(None, str(tmp_path / "e"), ("float32",), data_dir, 8, preset=out)
    assert report["models"]["float32"]["encoder_code_agreement"] == 1.0
    a = sample_lib.write_samples(None, str(tmp_path / "a.png"), 3, seed=5, labels=["2"], preset=out)
    b = sample_lib.write_samples(workdir, str(tmp_path / "b.png"), 3, seed=5, labels=["2"])
    np.testing.assert_array_equal(a, b)
    assert open(tmp_path / "a.png", "rb").read() == open(tmp_path / "b.png", "rb").read()
    with pytest.raises(ValueError, match="exactly one of --workdir"):
        sample_lib.write_samples(workdir, str(tmp_path / "c.png"), 1, preset=out)


def test_fine_tuning_starts_from_the_preset(run, tmp_path):
    _, data_dir, out = run
    preset = VQVAE.from_preset(out)
    config = get_config("fashion_mnist")  # the preset's network replaces this one
    config.steps, config.batch_size, config.learning_rate, config.lr_schedule = 1, 8, 1e-12, "constant"
    w = str(tmp_path / "ft")
    opts = dict(data=DataSource(data_dir=data_dir), log_every=1, checkpoint_every=1)
    train_vqvae_lib.train_and_evaluate(config, RunOptions(w, **opts), init_from=out)
    tuned = train_vqvae_lib.load_trained_model(w)
    assert tuned.num_embeddings == 16  # tiny's K, not fashion_mnist's 256
    # One Adam step of 1e-12 later, the encoder is the preset's.
    np.testing.assert_allclose(np.asarray(tuned.encoder.weights[0]), np.asarray(preset.encoder.weights[0]), atol=1e-9)
    assert int(tuned.quantizer.num_updates.numpy()) == int(preset.quantizer.num_updates.numpy()) + 1
    config = get_config("tiny")
    config.steps, config.batch_size = 1, 8
    w2 = str(tmp_path / "ft2")
    train_vqvae_lib.train_and_evaluate(config, RunOptions(w2, **opts), init_from=out, reinit_codebook=True)
    again = train_vqvae_lib.load_trained_model(w2)
    assert int(again.quantizer.num_updates.numpy()) == 1  # the k-means install ran on the first batch
    assert not np.allclose(np.asarray(again.quantizer.codebook), np.asarray(preset.quantizer.codebook))
    with pytest.raises(ValueError, match=r"Preset .* takes 28x28x1 images, but fashion_mnist gives 56x56x1"):
        train_vqvae_lib.train_and_evaluate(
            get_config("tiny"),
            RunOptions(str(tmp_path / "x"), **dict(opts, data=DataSource(data_dir=data_dir, image_size=56))),
            init_from=out,
        )
    with pytest.raises(ValueError, match="--reinit_codebook .* needs --init_from"):
        train_vqvae_lib.train_and_evaluate(
            get_config("tiny"), RunOptions(str(tmp_path / "y"), **opts), reinit_codebook=True
        )


def test_prior_fine_tuning_checks_the_codes(run, tmp_path):
    workdir, _, out = run
    w = tmp_path / "w"
    for part in ("codes", "vqvae"):  # the prior stage reads the codes and decodes its samples
        shutil.copytree(os.path.join(workdir, part), w / part)
    prior_preset = PixelCNN.from_preset(out)
    config = PriorConfig(num_filters=32, steps=1, batch_size=8, learning_rate=1e-12, lr_schedule="constant")
    metrics = train_prior_lib.train_prior(config, RunOptions(str(w), log_every=1, num_sample_columns=2), init_from=out)
    assert metrics["steps"] == 1 and metrics["conditional"] is True
    tuned = train_prior_lib.load_trained_prior(str(w))
    assert tuned.num_filters == 8
    np.testing.assert_allclose(np.asarray(tuned.weights[0]), np.asarray(prior_preset.weights[0]), atol=1e-9)
    meta = json.load(open(w / "codes" / "meta.json"))
    meta["num_embeddings"] = 32
    json.dump(meta, open(w / "codes" / "meta.json", "w"))
    with pytest.raises(ValueError, match="models 7x7 grids of K=16 codes with 10 classes; the codes .* K=32"):
        train_prior_lib.train_prior(config, RunOptions(str(tmp_path / "w"), log_every=1), init_from=out)


def test_scripts_take_exactly_one_model_source(scripts, tmp_path):
    # (neither: the same check, cli.define_model_source)
    res = scripts.run(
        "export.export_savedmodel", f"--export_dir={tmp_path}", "--workdir=/tmp/x", "--preset=fashion_mnist"
    )
    assert res.returncode != 0 and "Give exactly one of --workdir" in res.stderr, res.stderr[-1500:]
    res = scripts.run("train.sample", "--preset=nope", f"--output={tmp_path / 's.png'}")
    assert res.returncode != 0 and "Unknown preset 'nope'" in res.stderr, res.stderr[-1500:]


# ------------------------------------------------------------------ the shipped presets

# The check metrics were computed on the first CHECK_EXAMPLES test images when the preset was
# written; recomputed here they may differ only by float reordering (different CPU kernels).
CHECK_TOLERANCE = 1e-3
# The full test split's figures (metadata test_metrics) against that subset's: the subset is
# 10% of the split, so its mean may differ by a few percent.
SUBSET_TOLERANCE = 0.1


@pytest.mark.skipif(not os.path.isdir(os.path.join(presets.WEIGHTS_DIR, "fashion_mnist")), reason="no shipped weights")
def test_shipped_fashion_mnist_presets_on_real_data():
    vq = VQVAE.from_preset("fashion_mnist")
    prior = PixelCNN.from_preset("fashion_mnist")
    vq_meta = presets.read_metadata("fashion_mnist", "vqvae")
    prior_meta = presets.read_metadata("fashion_mnist", "prior")
    assert vq_meta["command"] and vq_meta["commit"] and prior_meta["num_classes"] == 10
    source = data.DataSource.from_dict(vq_meta["data"])
    check = export_presets_lib.vqvae_check_metrics(vq, source)
    assert check["examples"] == export_presets_lib.CHECK_EXAMPLES
    for key in ("test_normalized_mse", "perplexity"):
        assert check[key] == pytest.approx(vq_meta["check_metrics"][key], rel=CHECK_TOLERANCE), key
        assert check[key] == pytest.approx(vq_meta["test_metrics"][key], rel=SUBSET_TOLERANCE), key
    # The prior on the codes that the shipped VQ-VAE gives those real test images.
    x, y = fashion_mnist_arrays("test", export_presets_lib.CHECK_EXAMPLES)
    codes = vq.encode(tf.constant(x[..., None] / np.float32(255.0)))
    bits = export_presets_lib.prior_bits_per_code(
        prior, tf.data.Dataset.from_tensor_slices((codes, y.astype(np.int32)))
    )
    assert bits == pytest.approx(prior_meta["check_metrics"]["test_bits_per_code"], rel=CHECK_TOLERANCE)
    assert bits == pytest.approx(prior_meta["test_metrics"]["test_bits_per_code"], rel=SUBSET_TOLERANCE)


# Image folders' check subsets are smaller (`check_examples`), and a few hundred clip-art images
# vary more than 1,000 Fashion-MNIST ones about the split's mean.
FOLDER_SUBSET_TOLERANCE = 0.2


def held_out_images(meta: dict, count: int):
    """The first `count` held-out images of an image-folder preset's data (and their labels), decoded
    from their files as the data pipeline decodes them, without decoding the whole folder."""
    return _held_out_images(json.dumps(meta["data"], sort_keys=True), count)


@functools.lru_cache(maxsize=2)  # (the clip-art presets share their data)
def _held_out_images(data_json: str, count: int):
    source = data.DataSource.from_dict(json.loads(data_json))
    folder_source = source.backend.folder(source) if hasattr(source.backend, "folder") else source
    folder = image_files.scan(folder_source.data_dir, float(source.test_fraction))
    xs, ys = [], []
    for rel, label in folder.files["test"]:
        try:
            x = image_files.decode(os.path.join(folder.root, rel), folder_source.image_size, folder_source.channels)
        except tf.errors.InvalidArgumentError:
            continue  # a corrupt file, which the pipeline skips too (skip_corrupt_images)
        xs.append(x.numpy())
        ys.append(label)
        if len(xs) == count:
            break
    return np.stack(xs).astype(np.float32) / np.float32(255.0), np.array(ys, np.int32)


@pytest.mark.parametrize("name", sorted(n for n in list_presets() if n.startswith("clipart")))
def test_shipped_colour_presets_on_real_clip_art(name, monkeypatch):
    """The clip-art presets' check metrics (autoencoder: normalized MSE, perplexity, LPIPS; prior:
    its test NLL) recomputed on the held-out clip-art files, and class-conditional samples."""
    if not os.path.isdir(clipart.default_dir()):
        pytest.skip(f"{clipart.default_dir()} not found: `make data-clipart` installs Debian's openclipart-png")
    vq, prior = models_lib.load_vqvae(preset=name), models_lib.load_prior(preset=name)
    vq_meta, prior_meta = (presets.read_metadata(name, kind) for kind in ("vqvae", "prior"))
    assert vq_meta["command"] and vq_meta["commit"] and vq_meta["data"]["name"] == "clipart"
    assert prior.num_classes == 22 == len(prior_meta["class_names"])
    x, y = held_out_images(vq_meta, export_presets_lib.check_examples(vq.image_shape))
    assert len(x) == vq_meta["check_metrics"]["examples"] == export_presets_lib.CHECK_EXAMPLES_LARGE
    monkeypatch.setenv("VQVAE_LPIPS_EXAMPLES", str(len(x)))  # (conftest's 64 for the other tests)
    check = export_presets_lib.vqvae_check_on(vq, tf.data.Dataset.from_tensor_slices((x, y)))
    for key in ("test_normalized_mse", "perplexity", "test_lpips"):
        assert check[key] == pytest.approx(vq_meta["check_metrics"][key], rel=CHECK_TOLERANCE), key
        assert check[key] == pytest.approx(vq_meta["test_metrics"][key], rel=FOLDER_SUBSET_TOLERANCE), key
    codes = vq.encode(tf.constant(x))
    prior_check = export_presets_lib.prior_check_on(prior, tf.data.Dataset.from_tensor_slices((codes, y)))
    ((key, value),) = ((k, v) for k, v in prior_check.items() if k != "examples")
    assert value == pytest.approx(prior_meta["check_metrics"][key], rel=CHECK_TOLERANCE)
    assert value == pytest.approx(prior_meta["test_metrics"][key], rel=FOLDER_SUBSET_TOLERANCE)
    labels = np.arange(22, dtype=np.int32)
    samples = vq.decode(sample_grids(prior, 22, seed=0, labels=labels)["codes"]).numpy()
    assert samples.shape == (22, *vq.image_shape) and np.isfinite(samples).all()
