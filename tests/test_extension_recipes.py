"""README's recipes followed from outside the package. "Add a quantizer": a quantizer defined in
this file trains in a VQVAE, encodes, decodes, saves (.keras, presets), exports (SavedModel,
TFLite) and, once registered by name, is built from a config like the zoo's own. "Add a data
source": a backend defined here serves --dataset=squares to the training stage and the codes
export, and the model trained on it exports."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from vqvae_tf import VQVAE, Quantizer, get_config, register_quantizer
from vqvae_tf.data import Backend, DatasetInfo, DataSource, register_backend
from vqvae_tf.data import codes as codes_format
from vqvae_tf.data.sources import base
from vqvae_tf.layers.quantizers import registry
from vqvae_tf.layers.quantizers.registry import Option
from vqvae_tf.models.presets import PresetMixin
from vqvae_tf.models.priors import PriorFamily, register_prior_family, sampling
from vqvae_tf.models.priors.base import AutoregressivePrior
from vqvae_tf.models.priors.inputs import PriorInputs
from vqvae_tf.models.priors.sampling import sample_grids
from vqvae_tf.serving import savedmodel, tflite
from vqvae_tf.training import export_codes_lib, train_vqvae_lib
from vqvae_tf.training.options import RunOptions


@keras.saving.register_keras_serializable(package="user_quantizers")
class TernaryQuantizer(Quantizer):
    """Each channel rounded to -1, 0 or +1 (straight-through); the code is base-3 over channels."""

    def __init__(self, embedding_dim=2, num_embeddings=None, **kwargs):
        super().__init__(3**embedding_dim, embedding_dim, **kwargs)

    @classmethod
    def geometry(cls, num_embeddings, embedding_dim, **options):
        return 3**embedding_dim, embedding_dim, 1

    def call(self, z, training=False):
        values = tf.clip_by_value(tf.round(z), -1.0, 1.0)
        indices = self.indices_of(z)
        counts = tf.math.bincount(tf.reshape(indices, [-1]), minlength=self.num_embeddings, dtype=tf.float32)
        probs = counts / tf.reduce_sum(counts)
        return {
            "quantized": z + tf.stop_gradient(values - z),
            "indices": indices,
            "codebook_loss": tf.zeros([]),
            "commitment_loss": 0.1 * tf.reduce_mean(tf.square(z - tf.stop_gradient(values))),
            "perplexity": tf.exp(-tf.reduce_sum(tf.math.xlogy(probs, probs))),
        }

    def indices_of(self, z, codebook=None):
        digits = tf.cast(tf.clip_by_value(tf.round(tf.cast(z, tf.float32)), -1.0, 1.0), tf.int32) + 1
        return tf.reduce_sum(digits * 3 ** tf.range(self.embedding_dim), axis=-1)

    def lookup(self, indices, codebook=None, check=True):
        indices = self.checked_indices(indices, check)
        if codebook is not None:
            return tf.gather(codebook, indices)
        digits = (indices[..., None] // 3 ** tf.range(self.embedding_dim)) % 3
        return tf.cast(digits - 1, tf.float32)

    def get_config(self):
        return dict(super().get_config(), embedding_dim=self.embedding_dim)


def small_vqvae(quantizer):
    return VQVAE(
        image_shape=(28, 28, 1),
        num_hiddens=16,
        num_residual_hiddens=8,
        num_residual_layers=1,
        quantizer=quantizer,
        data_variance=0.1,
    )


def test_a_quantizer_of_our_own_trains_saves_and_exports(tmp_path):
    model = small_vqvae(TernaryQuantizer(2, name="ternary"))
    assert (model.num_embeddings, model.embedding_dim, model.quantizer_type) == (9, 2, "TernaryQuantizer")
    x = tf.random.stateless_uniform([16, 28, 28, 1], seed=[3, 4])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, batch_size=8, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and "entropy_loss" not in history.history
    codes = model.encode(x)
    assert codes.shape == (16, 7, 7) and 0 <= int(tf.reduce_min(codes)) and int(tf.reduce_max(codes)) < 9
    np.testing.assert_allclose(model.decode(codes).numpy(), model(x).numpy(), atol=1e-5)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.quantizer, TernaryQuantizer)
    np.testing.assert_array_equal(loaded.encode(x).numpy(), codes.numpy())

    model.save_to_preset(str(tmp_path / "preset"))
    preset = VQVAE.from_preset(str(tmp_path / "preset"))
    np.testing.assert_allclose(preset(x).numpy(), model(x).numpy(), atol=1e-6)

    version_dir = savedmodel.export_vqvae(model, str(tmp_path / "export"))
    served = tf.saved_model.load(version_dir)
    np.testing.assert_array_equal(served.signatures["encode"](images=x)["codes"].numpy(), codes.numpy())
    np.testing.assert_allclose(
        served.signatures["decode"](codes=codes)["images"].numpy(), model.decode(codes).numpy(), atol=1e-5
    )
    report = tflite.export_tflite(model, str(tmp_path / "export"), x.numpy()[:8], quantizations=("float32",))
    assert report["models"]["float32"]["encoder_code_agreement"] == 1.0
    assert report["models"]["float32"]["decoder_max_abs_error"] <= 1e-4


def test_options_are_refused_with_a_quantizer_instance():
    with pytest.raises(ValueError, match="apply to a quantizer given by name"):
        VQVAE(quantizer=TernaryQuantizer(2), fsq_levels=(4, 4))
    with pytest.raises(TypeError, match="registered name .* or a Quantizer layer, got Dense"):
        VQVAE(quantizer=keras.layers.Dense(2))


@pytest.fixture
def clean_registry():
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    if "registered_name" in TernaryQuantizer.__dict__:
        del TernaryQuantizer.registered_name


def test_a_registered_quantizer_is_built_by_name(clean_registry):
    register_quantizer("ternary", help="three levels per channel")(TernaryQuantizer)
    assert "ternary" in registry.names() and registry.get("ternary").help == "three levels per channel"
    config = dataclasses.replace(get_config("tiny"), quantizer="ternary", embedding_dim=3).validate()
    assert (config.num_embeddings, config.embedding_dim) == (27, 3)  # the quantizer's geometry
    model = config.build(data_variance=0.1)
    assert isinstance(model.quantizer, TernaryQuantizer) and model.quantizer.name == "quantizer"
    assert VQVAE.from_config(model.get_config()).quantizer_type == "ternary"
    with pytest.raises(ValueError, match="fsq_levels=\\(4, 4\\) applies to the fsq quantizer, not 'ternary'"):
        dataclasses.replace(config, fsq_levels=(4, 4)).validate()


def test_a_conflicting_option_is_refused_at_registration(clean_registry):
    other = Option("commitment_cost", 0.5, "another default")
    with pytest.raises(ValueError, match="declares option 'commitment_cost' unlike the one registered before"):
        register_quantizer("ternary", other)(TernaryQuantizer)
    with pytest.raises(ValueError, match="already registered to VectorQuantizer"):
        register_quantizer("vq")(TernaryQuantizer)


# ------------------------------------------------------------------ "add a data source"


class SquaresBackend(Backend):
    """A data source of our own: grey 16x16 images of a bright square (class 0) or a dark one on
    white (class 1), made from a seed; served as --dataset=squares."""

    name = "squares"

    def claims(self, source):
        return source.name == "squares"

    def arrays(self, split):
        rng = np.random.default_rng({"train": 0, "test": 1}[split])
        n = {"train": 48, "test": 16}[split]
        labels = rng.integers(0, 2, n).astype(np.int32)
        images = np.where(labels[:, None, None], 255, 0).astype(np.uint8) * np.ones((1, 16, 16), np.uint8)
        for image, (y, x) in zip(images, rng.integers(0, 10, (n, 2))):
            image[y : y + 6, x : x + 6] = 255 - image[y, x]
        return images[..., None], labels

    def info(self, source):
        counts = {split: len(self.arrays(split)[1]) for split in ("train", "test")}
        return DatasetInfo("squares", (16, 16, 1), 2, "squares", counts, ("bright", "dark"))

    def load_native(self, source, split):
        return tf.data.Dataset.from_tensor_slices(self.arrays(split))

    def fingerprint_key(self, source):
        return "squares|v1"


@pytest.fixture
def squares():
    register_backend(SquaresBackend)
    yield
    base._BACKENDS[:] = [b for b in base._BACKENDS if b.name != "squares"]


def test_a_data_source_of_our_own_trains_and_exports(tmp_path, squares):
    source = DataSource("squares")
    assert type(source.backend) is SquaresBackend and source.info().class_names == ("bright", "dark")
    assert DataSource("squares", image_size=8).info().image_shape == (8, 8, 1)  # resized like any source
    workdir = str(tmp_path / "w")
    config = dataclasses.replace(get_config("tiny"), steps=3, batch_size=8)
    metrics = train_vqvae_lib.train_and_evaluate(config, RunOptions(workdir, data=source, log_every=3))
    assert metrics["dataset"] == "squares" and metrics["test_examples"] == 16
    meta = export_codes_lib.export_codes_stage(workdir)  # reads the source back from config.json
    assert meta["class_names"] == ["bright", "dark"] and meta["latent_shape"] == [4, 4]
    model = train_vqvae_lib.load_trained_model(workdir)
    version_dir = savedmodel.export_vqvae(model, str(tmp_path / "export"))
    x = next(iter(source.load("test").batch(4)))[0]
    served = tf.saved_model.load(version_dir).signatures["encode"](images=x)["codes"]
    np.testing.assert_array_equal(served.numpy(), model.encode(x).numpy())


@keras.saving.register_keras_serializable(package="tests_mine")
class RandomProjectionQuantizer(Quantizer):
    """BEST-RQ style: a fixed random codebook, nearest code. Its get_config adds only its own
    argument, as Keras' convention has it (issue 44)."""

    def __init__(self, num_embeddings, embedding_dim, seed=7, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.seed = seed

    def build_state(self):
        init = keras.initializers.RandomNormal(seed=self.seed)
        self.table = self.add_weight(shape=(self.num_embeddings, self.embedding_dim), initializer=init, trainable=False)

    def indices_of(self, z, codebook=None):
        table = self.table if codebook is None else codebook
        z = tf.cast(z, tf.float32)
        d = (
            tf.reduce_sum(z**2, -1, keepdims=True)
            - 2 * tf.tensordot(z, table, [[-1], [1]])
            + tf.reduce_sum(table**2, -1)
        )
        return tf.argmin(d, axis=-1, output_type=tf.int32)

    def lookup(self, indices, codebook=None, check=True):
        return tf.gather(self.table if codebook is None else codebook, self.checked_indices(indices, check))

    def call(self, z, training=False):
        indices = self.indices_of(z)
        values = self.lookup(indices, check=False)
        return {
            "quantized": z + tf.stop_gradient(values - z),
            "indices": indices,
            "codebook_loss": tf.zeros([]),
            "commitment_loss": 0.25 * tf.reduce_mean(tf.square(z - tf.stop_gradient(values))),
            "perplexity": tf.ones([]),
        }

    def get_config(self):
        return dict(super().get_config(), seed=self.seed)


@keras.saving.register_keras_serializable(package="tests_mine")
class ForgetfulQuantizer(RandomProjectionQuantizer):
    """Takes one more argument but does not record it."""

    def __init__(self, num_embeddings, embedding_dim, scale, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.scale = scale


def test_a_user_quantizer_following_keras_config_convention_reloads(tmp_path):
    """The base records K and D: a subclass whose get_config adds only its own argument round-trips
    .keras and presets with equal codes, and exports; one that forgets an argument gets one line
    naming its class and the argument."""
    model = small_vqvae(RandomProjectionQuantizer(16, 8, seed=3, name="rp"))
    x = tf.random.stateless_uniform([8, 28, 28, 1], seed=[5, 6])
    codes = model.encode(x)
    assert len(np.unique(codes.numpy())) > 1
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.quantizer, RandomProjectionQuantizer) and loaded.quantizer.seed == 3
    np.testing.assert_array_equal(loaded.encode(x).numpy(), codes.numpy())
    model.save_to_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(VQVAE.from_preset(str(tmp_path / "preset")).encode(x).numpy(), codes.numpy())
    served = tf.saved_model.load(savedmodel.export_vqvae(model, str(tmp_path / "export")))
    np.testing.assert_array_equal(served.signatures["encode"](images=x)["codes"].numpy(), codes.numpy())
    report = tflite.export_tflite(model, str(tmp_path / "export"), x.numpy(), quantizations=("float32",))
    assert report["models"]["float32"]["encoder_code_agreement"] == 1.0
    forgetful = ForgetfulQuantizer(16, 8, scale=2.0)
    with pytest.raises(TypeError, match=r"^ForgetfulQuantizer cannot be rebuilt from its config \(.*'scale'\)"):
        ForgetfulQuantizer.from_config(forgetful.get_config())


# ------------------------------------------------------------------ a prior of our own (issue 39)


@keras.saving.register_keras_serializable(package="tests_mine")
class IndependentPrior(AutoregressivePrior, PriorInputs, PresetMixin, keras.Model):
    """p(codes) = prod over positions of a learned categorical per position (and class): no
    position sees another, so it is trivially autoregressive, with an exact likelihood."""

    prior_network = "independent"
    condition_shape = None
    depth = 1

    def __init__(self, num_embeddings, latent_shape=(4, 4), num_classes=0, **kwargs):
        super().__init__(**kwargs)
        self.num_embeddings, self.latent_shape, self.num_classes = int(num_embeddings), tuple(latent_shape), num_classes
        self.table = self.add_weight(shape=(*self.latent_shape, self.num_embeddings), initializer="zeros", name="table")
        self.class_bias = self.add_weight(shape=(max(num_classes, 1), self.num_embeddings), initializer="zeros")
        self._make_trackers()
        self.built = True  # (its weights exist from the start, as the zoo's priors')

    def call(self, codes, labels=None, training=False, condition=None):
        codes = self.check_codes(codes)
        labels = self.check_labels(labels, tf.shape(codes)[0])
        logits = tf.zeros_like(codes, tf.float32)[..., None] + self.table
        if labels is not None:
            logits += tf.gather(self.class_bias, labels)[:, None, None]
        return logits

    def sample_grids_graph(self, num_samples, temperature, seed, labels=None, top_k=None) -> dict:
        labels = self.check_labels(labels, num_samples)
        codes = tf.zeros(tf.stack([num_samples, *self.latent_shape]), tf.int32)
        h, w = self.latent_shape
        logits = tf.reshape(self(codes, labels), [-1, h * w, self.num_embeddings])

        def body(p, codes):
            return p + 1, sampling.place(codes, p, sampling.pick(logits[:, p], temperature, seed, p, top_k))

        return {"codes": tf.while_loop(lambda p, c: p < h * w, body, [tf.constant(0), codes])[1]}

    def get_config(self):
        return dict(
            super().get_config(),
            num_embeddings=self.num_embeddings,
            latent_shape=list(self.latent_shape),
            num_classes=self.num_classes,
        )


@register_prior_family("independent")
class IndependentFamily(PriorFamily):
    cls = IndependentPrior
    title = "independent per-position prior"
    network_fields = ()

    def build(self, network, meta):
        grid = tuple(codes_format.grid_shapes(meta)["codes"])
        return IndependentPrior(network["num_embeddings"], grid, network["num_classes"])


def test_a_prior_of_our_own_trains_samples_serves_and_loads_as_a_preset(tmp_path, squares):
    """A prior family registered outside the package runs every prior stage with no edit in
    vqvae_tf/: train_prior (config, training, evaluation, samples.png), train.sample, the prior
    SavedModel and the presets; samples are checked on peaked weights (code = its position's
    mode), through the library, the SavedModel and the preset."""
    from vqvae_tf.configs import PriorConfig
    from vqvae_tf.models import priors
    from vqvae_tf.serving import export_presets_lib, export_savedmodel_lib
    from vqvae_tf.training import models_lib, sample_lib, train_prior_lib

    assert "independent" in priors.network_names()
    workdir = str(tmp_path / "w")
    config = dataclasses.replace(get_config("tiny"), steps=2, batch_size=8)
    train_vqvae_lib.train_and_evaluate(config, RunOptions(workdir, data=DataSource("squares"), log_every=2))
    export_codes_lib.export_codes_stage(workdir)
    prior_config = PriorConfig(prior="independent", steps=3, batch_size=8, conditional=True)
    metrics = train_prior_lib.train_prior(prior_config, RunOptions(workdir, log_every=1, num_sample_columns=2))
    assert metrics["prior"] == "independent" and np.isfinite(metrics["test_bits_per_code"])
    with pytest.raises(ValueError, match="the independent prior has no kernel_size"):
        train_prior_lib.train_prior(dataclasses.replace(prior_config, kernel_size=5, steps=4), RunOptions(workdir))

    prior = train_prior_lib.load_trained_prior(workdir)
    assert type(prior) is IndependentPrior and prior.num_classes == 2
    K, (h, w) = prior.num_embeddings, prior.latent_shape
    modes = (np.arange(h * w).reshape(h, w) * 5) % K
    prior.table.assign(20.0 * np.eye(K, dtype=np.float32)[modes])  # peaked: each position's mode
    expected = np.broadcast_to(modes, (3, h, w))
    np.testing.assert_array_equal(sample_grids(prior, 3, seed=1, labels=[0, 1, 1])["codes"].numpy(), expected)

    # The peaked prior as a preset pair and a SavedModel: the same codes from both.
    vqvae = train_vqvae_lib.load_trained_model(workdir)
    vqvae.save_to_preset(str(tmp_path / "pair" / "vqvae"))
    prior.save_to_preset(str(tmp_path / "pair" / "prior"))
    pair = str(tmp_path / "pair")
    loaded = models_lib.load_prior(preset=pair)
    assert type(loaded) is IndependentPrior
    np.testing.assert_array_equal(sample_grids(loaded, 3, seed=2, labels=[1, 0, 1])["codes"].numpy(), expected)
    paths = export_savedmodel_lib.export_savedmodel_stage(None, str(tmp_path / "export"), preset=pair)
    served = tf.saved_model.load(paths["prior"]).signatures["serving_default"]
    out = served(
        num_samples=tf.constant(3), temperature=tf.constant(1.0), seed=tf.constant(4), labels=tf.constant([0, 1, 0])
    )
    np.testing.assert_array_equal(out["codes"].numpy(), expected)
    used = sample_lib.write_samples(None, str(tmp_path / "s.png"), 4, labels=[0, 1, 0, 1], preset=pair)
    assert list(used) == [0, 1, 0, 1]
    assert os.path.getsize(tmp_path / "s.png") > 0
    presets_made = export_presets_lib.export_presets_stage(workdir, str(tmp_path / "presets"))
    assert type(models_lib.load_prior(preset=str(tmp_path / "presets"))) is IndependentPrior, presets_made


def test_a_stage_of_our_own_runs_in_the_pipeline_and_is_skipped_when_done(tmp_path, squares, capsys):
    """A stage written outside the package (its work, its directory, its `done`) runs after the
    VQ-VAE's with no edit inside vqvae_tf/, and a second run skips both."""
    from vqvae_tf.configs import get_recipe
    from vqvae_tf.pipeline import pipeline_lib
    from vqvae_tf.training.stage import Stage

    def usage_file(ctx):
        return ctx.workdir.stage_dir("usage").file("usage.json")

    def count_codes(ctx):
        model = train_vqvae_lib.load_trained_model(ctx.workdir.root)
        x = np.concatenate([x for x, _ in DataSource("squares").load("test").batch(8).as_numpy_iterator()])
        used = np.unique(model.encode(x).numpy()).size
        os.makedirs(os.path.dirname(usage_file(ctx)))
        with open(usage_file(ctx), "w") as f:
            f.write(f'{{"used": {used}}}')
        ctx.results["used"] = used

    stage = Stage(
        "count codes", count_codes, lambda ctx: "Counted already" if os.path.exists(usage_file(ctx)) else None
    )
    recipe = get_recipe("quick", dataset="squares", config="tiny")
    recipe.vqvae = dataclasses.replace(recipe.vqvae, steps=3, batch_size=8)
    options = RunOptions(str(tmp_path / "w"), data=DataSource("squares"), log_every=3)
    pipeline_lib.run_pipeline(recipe, options, stages=(train_vqvae_lib.STAGE, stage))
    out = capsys.readouterr().out
    assert "[2/2] count codes" in out and "Counted already" not in out
    with open(os.path.join(str(tmp_path / "w"), "usage", "usage.json")) as f:
        assert 1 <= int(f.read().split(":")[1].strip(" }")) <= recipe.vqvae.num_embeddings
    pipeline_lib.run_pipeline(recipe, options, stages=(train_vqvae_lib.STAGE, stage))
    out = capsys.readouterr().out
    assert "Done already" in out and "Counted already; skipping." in out
