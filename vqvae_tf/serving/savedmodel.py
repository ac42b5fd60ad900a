"""SavedModels for TF Serving: signatures, warmup records, TF Serving's layout and server files.

`export_savedmodel_lib` exports a workdir's models with these (`python -m export.export_savedmodel`).

Layout (TF Serving's base path per model, one numeric directory per version)::

    E/models.config                       serves vqvae and prior
    E/batching_parameters.txt             an example for --enable_batching
    E/vqvae/N/                            saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    E/prior/N/

Signatures (batch dimension always None; inputs and outputs named as below):

    vqvae  serving_default     images float32 [B,H,W,C] in [0,1] -> reconstructions, codes
           encode              images -> codes int32 [B,h,w]
           decode              codes int32 [B,h,w] -> images float32 [B,H,W,C] in [0,1]
           encode_image_bytes  image_bytes string [B] (PNG/JPEG) -> codes
           decode_png          codes -> png_bytes string [B]
    prior  serving_default     num_samples int32 [], temperature float32 [], seed int32 []
                               (+ steps int32 [] for MaskGIT) (+ labels int32 [B] if conditional)
                               -> codes, images
           log_prob            codes (+ labels) -> log_prob float32 [B] (nats), bits_per_code
                               (PixelCNN, transformer, VQ-VAE-2; MaskGIT has no exact likelihood)
           sample_xla          serving_default's inputs and outputs, XLA-compiled (jit_compile):
                               only with --xla_sampler; TF Serving on CPU runs it when started
                               with --xla_cpu_compilation_enabled, TF Serving on GPU cannot

Codes are int32 [B,h,w], or [B,h,w,Q] for a residual-VQ model of depth Q (`VQVAE.codes_shape`). A
`VQVAE2`'s signatures have two code tensors, ``codes_top`` and ``codes_bottom``, wherever these
have ``codes`` (the autoencoder's `code_grids` names them).

Bad input raises InvalidArgument with a message naming the problem (codes outside [0, K),
pixel values outside [0, 1] or not finite, undecodable bytes, wrong image size, num_samples
outside [1, MAX_SAMPLES], temperature <= 0, MaskGIT's steps outside [1, MAX_STEPS]). Every
version directory is written beside its final
place and renamed when complete, so TF Serving never sees a half-written version.
"""

from __future__ import annotations

import inspect
import os
import re

import keras
import numpy as np
import tensorflow as tf

from vqvae_tf.serving.sample_checks import check_sample_inputs
from vqvae_tf.utils import checks, files

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")


# ------------------------------------------------------------------------------ versions


MODEL_NAMES = ("vqvae", "prior")  # TF Serving model names, each a base path EXPORT_DIR/<name>


def model_dir(export_dir: str, name: str) -> str:
    """TF Serving's base path of model `name` (one numeric sub-directory per version)."""
    return os.path.join(export_dir, name)


def existing_versions(model_dir: str) -> list[int]:
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if re.fullmatch(r"\d+", d))


def resolve_version(model_dir: str, version: int | None, overwrite: bool) -> int:
    """`version`, or the next free number; refuses an existing version unless `overwrite`."""
    versions = existing_versions(model_dir)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    checks.positive_int("version", version)
    if version in versions and not overwrite:
        raise FileExistsError(
            f"{os.path.join(model_dir, str(version))} already exists; pass --overwrite or another --version."
        )
    return version


# ------------------------------------------------------------------------------ endpoints


def _check_images(images, image_shape):
    # The signature's static shape is not enforced by every loader: check it in the graph.
    images = _check_codes(images, image_shape, "images")
    images = checks.require(
        images, tf.reduce_all(tf.math.is_finite(images)), "images must be finite (found NaN or Inf)"
    )
    empty = tf.equal(tf.size(images), 0)
    low, high = tf.reduce_min(images), tf.reduce_max(images)
    return checks.require(
        images,
        tf.logical_or(empty, tf.logical_and(low >= 0.0, high <= 1.0)),
        "images must be in [0, 1]: found values from",
        low,
        "to",
        high,
    )


def _check_codes(codes, codes_shape, name="codes"):
    """`codes` (or any input `name`) checked to be ``[B, *codes_shape]``, whatever its rank
    (InvalidArgument naming the input and the shapes otherwise)."""
    shape = tf.shape(codes)
    # The dimensions after the batch, padded or cut to the expected count (any rank compares).
    dims = tf.pad(shape, [[0, len(codes_shape) + 1]])[1 : len(codes_shape) + 1]  # (a scalar's shape is empty)
    return checks.require(
        codes,
        tf.logical_and(
            tf.equal(tf.size(shape), len(codes_shape) + 1), tf.reduce_all(tf.equal(dims, list(codes_shape)))
        ),
        f"{name} must have shape [{', '.join(['B', *map(str, codes_shape)])}], got",
        shape,
    )


def _check_grids(codes, grids: dict) -> dict:
    """Signature inputs (one tensor per grid, in `grids`' order) -> {name: checked codes}: each
    ``[B, *shape]`` and, for several grids, the same B (InvalidArgument naming them otherwise)."""
    names = list(grids)
    checked = {name: _check_codes(c, grids[name], name) for name, c in zip(names, codes)}
    first = checked[names[0]]
    for name in names[1:]:
        checked[name] = checks.require(
            checked[name],
            tf.equal(tf.shape(checked[name])[0], tf.shape(first)[0]),
            f"{names[0]} and {name} must have the same batch size: got",
            tf.shape(first)[0],
            "and",
            tf.shape(checked[name])[0],
        )
    return checked


def _check_vector(strings, name: str):
    """`strings` checked to be a vector [B]. Not by its rank: the graph optimizer folds rank checks
    to the declared [None]; by values it cannot know, the shape's first entry (0 for a scalar) and
    its sum, which both equal the size only for a vector."""
    shape = tf.shape(strings)
    size = tf.size(strings)
    first = tf.concat([shape, [0]], 0)[0]
    vector = tf.logical_and(tf.equal(first, size), tf.equal(tf.reduce_sum(shape), size))
    message = f"{name} must be a vector [B] of encoded images (one string each), got a tensor of shape"
    with tf.control_dependencies([tf.debugging.Assert(vector, [message, shape])]):
        # The identity holds the Assert's control dependency: a reshape of a [None] input to [-1]
        # alone is removed by the graph optimizer, and the map then fails on a scalar before the
        # Assert runs ("Tensor must be at least a vector"; seen at 666d29d).
        return tf.reshape(tf.identity(strings), [-1])


def _decode_image_bytes(image_bytes, image_shape):
    h, w, c = image_shape
    image_bytes = _check_vector(image_bytes, "image_bytes")

    def one(data):
        # A wrong size fails here with "Shape of tensor ... [h', w', c] is not compatible with
        # expected shape [h, w, c]" (InvalidArgument).
        image = tf.io.decode_image(data, channels=c, expand_animations=False, dtype=tf.uint8)
        return tf.ensure_shape(image, [h, w, c])

    decoded = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))
    return tf.cast(decoded, tf.float32) / 255.0


def vqvae_endpoints(model) -> dict:
    """name -> (function, input signature) of the autoencoder SavedModel: a `VQVAE`'s codes are
    one tensor named ``codes``; a `VQVAE2`'s are two, ``codes_top`` and ``codes_bottom``
    (`model.code_grids` names them), as inputs and as outputs."""
    H, W, C = model.image_shape
    grids = model.code_grids
    images_spec = tf.TensorSpec([None, H, W, C], tf.float32, name="images")
    codes_specs = [tf.TensorSpec([None, *shape], tf.int32, name=name) for name, shape in grids.items()]
    bytes_spec = tf.TensorSpec([None], tf.string, name="image_bytes")

    def reconstruct(images):
        codes = model.encode_grids(_check_images(images, model.image_shape))
        return {"reconstructions": model.decode_grids(codes), **codes}

    def encode(images):
        return model.encode_grids(_check_images(images, model.image_shape))

    def decode(*codes):
        return {"images": model.decode_grids(_check_grids(codes, grids))}

    def encode_image_bytes(image_bytes):
        return model.encode_grids(_decode_image_bytes(image_bytes, model.image_shape))

    def decode_png(*codes):
        pixels = tf.cast(tf.round(model.decode_grids(_check_grids(codes, grids)) * 255.0), tf.uint8)
        png = tf.map_fn(tf.io.encode_png, pixels, fn_output_signature=tf.TensorSpec([], tf.string))
        return {"png_bytes": png}

    return {
        "serving_default": (reconstruct, [images_spec]),
        "encode": (encode, [images_spec]),
        "decode": (decode, codes_specs),
        "encode_image_bytes": (encode_image_bytes, [bytes_spec]),
        "decode_png": (decode_png, codes_specs),
    }


def sample_inputs(prior) -> dict:
    """{input name: spec} of the prior SavedModel's sampling signatures: num_samples, temperature,
    seed, then MaskGIT's ``steps``, then a conditional prior's ``labels``."""
    specs = {
        "num_samples": tf.TensorSpec([], tf.int32, name="num_samples"),
        "temperature": tf.TensorSpec([], tf.float32, name="temperature"),
        "seed": tf.TensorSpec([], tf.int32, name="seed"),
    }
    if "steps" in inspect.signature(prior.sample_grids_graph).parameters:
        specs["steps"] = tf.TensorSpec([], tf.int32, name="steps")
    if prior.num_classes:
        specs["labels"] = tf.TensorSpec([None], tf.int32, name="labels")
    return specs


def prior_endpoints(prior, vqvae, xla_sampler: bool = False) -> dict:
    """name -> (function, input signature) of the prior SavedModel (prior + decoder). Its codes are
    the autoencoder's (``codes [B, *vqvae.codes_shape]``, or VQ-VAE-2's ``codes_top`` and
    ``codes_bottom``); the prior's grid layout stays inside. `serving_default` samples
    (`sample_inputs`); `log_prob` scores codes (a prior with an exact likelihood only: not
    MaskGIT); with `xla_sampler`, `sample_xla` is `serving_default` compiled by XLA (jit_compile):
    the same codes for the same inputs, for TF Serving on CPU with --xla_cpu_compilation_enabled."""
    grids = vqvae.code_grids
    names = list(grids)
    codes_specs = [tf.TensorSpec([None, *shape], tf.int32, name=name) for name, shape in grids.items()]
    labels_spec = tf.TensorSpec([None], tf.int32, name="labels")
    specs = sample_inputs(prior)

    def sample(*args):  # the inputs of `specs`, in its order
        inputs = check_sample_inputs(prior, dict(zip(specs, args)))
        num_samples = inputs.pop("num_samples")
        grids = prior.sample_grids_graph(
            num_samples, inputs.pop("temperature"), inputs.pop("seed"), inputs.pop("labels", None), **inputs
        )
        codes = vqvae.from_prior_grids(grids)
        return {**codes, "images": vqvae.decode_grids(codes)}

    def log_prob(*inputs):  # one tensor per code grid, then the labels of a conditional prior
        codes = _check_grids(inputs[: len(names)], grids)
        labels = inputs[len(names)] if len(inputs) > len(names) else None
        first = codes[names[0]]
        batch = tf.shape(first)[0]
        if labels is not None:
            with tf.control_dependencies([first]):  # the codes' own errors come first
                labels = checks.require(
                    labels, tf.equal(tf.size(labels), batch), "labels must be one per code grid: got", tf.size(labels)
                )
        # An empty batch gets empty results (as the VQ-VAE's signatures give), not a shape error;
        # nothing reads the codes before their shape check has passed.
        with tf.control_dependencies(list(codes.values())):
            lp = tf.cond(
                batch > 0, lambda: prior.log_prob_grids(vqvae.to_prior_grids(codes), labels), lambda: tf.zeros([0])
            )
        return {"log_prob": lp, "bits_per_code": prior.bits_per_code(lp)}

    endpoints = {"serving_default": (sample, list(specs.values()))}
    if prior.exact_likelihood:
        endpoints["log_prob"] = (log_prob, codes_specs + ([labels_spec] if prior.num_classes else []))
    if xla_sampler:
        # XLA drops Assert ops: the inputs are checked in the signature's own graph, before the
        # compiled sampler (whose checks are gone) runs.
        xla = tf.function(sample, input_signature=list(specs.values()), jit_compile=True, autograph=False)

        def sample_xla(*args):
            checked = check_sample_inputs(prior, dict(zip(specs, args)))
            return xla(*checked.values())

        endpoints["sample_xla"] = (sample_xla, list(specs.values()))
    return endpoints


# ------------------------------------------------------------------------------ warmup


def warmup_records(model_name: str, requests: list[tuple[str, dict]]) -> list[bytes]:
    """Serialized PredictionLog records (TF Serving's warmup format) for (signature, inputs)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for signature, inputs in requests:
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def _vqvae_warmup(model) -> list[tuple[str, dict]]:
    H, W, C = model.image_shape
    images = np.full((2, H, W, C), 0.5, np.float32)
    codes = {name: np.zeros((2, *shape), np.int32) for name, shape in model.code_grids.items()}
    png = tf.io.encode_png(np.zeros((H, W, C), np.uint8)).numpy()
    return [
        ("serving_default", {"images": images}),
        ("encode", {"images": images}),
        ("decode", codes),
        ("encode_image_bytes", {"image_bytes": np.array([png, png], dtype=object)}),
        ("decode_png", codes),
    ]


def _prior_warmup(prior, vqvae, endpoints) -> list[tuple[str, dict]]:
    values = {"num_samples": np.int32(2), "temperature": np.float32(1.0), "seed": np.int32(0), "steps": np.int32(8)}
    sampling = {name: values.get(name, np.zeros([2], np.int32)) for name in sample_inputs(prior)}
    log_prob_inputs = {name: np.zeros((2, *shape), np.int32) for name, shape in vqvae.code_grids.items()}
    if prior.num_classes:
        log_prob_inputs["labels"] = np.zeros([2], np.int32)
    requests = [("serving_default", sampling)]
    if "log_prob" in endpoints:
        requests.append(("log_prob", log_prob_inputs))
    # No sample_xla request: a server started without --xla_cpu_compilation_enabled would fail
    # the warmup, and with it the model's load.
    return requests


# ------------------------------------------------------------------------------ writing


def write_savedmodel(
    model_dir: str, model_name: str, tracked: list, endpoints: dict, warmup, version=None, overwrite=False
) -> str:
    """Writes ``model_dir/<version>`` atomically; returns its path."""
    version = resolve_version(model_dir, version, overwrite)
    final = os.path.join(model_dir, str(version))
    archive = keras.export.ExportArchive()
    for obj in tracked:
        archive.track(obj)
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)  # signature None: `fn` is a tf.function
    with files.atomic_directory(final, overwrite=overwrite) as tmp:
        archive.write_out(tmp, verbose=False)
        records = warmup_records(model_name, warmup)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(tmp, WARMUP_PATH)) as writer:
            for record in records:
                writer.write(record)
    return final


def export_vqvae(model, export_dir: str, version=None, overwrite=False) -> str:
    return write_savedmodel(
        model_dir(export_dir, "vqvae"),
        "vqvae",
        [model],
        vqvae_endpoints(model),
        _vqvae_warmup(model),
        version,
        overwrite,
    )


def export_prior(prior, vqvae, export_dir: str, version=None, overwrite=False, xla_sampler=False) -> str:
    endpoints = prior_endpoints(prior, vqvae, xla_sampler)
    return write_savedmodel(
        model_dir(export_dir, "prior"),
        "prior",
        [prior, vqvae],
        endpoints,
        _prior_warmup(prior, vqvae, endpoints),
        version,
        overwrite,
    )


MODELS_CONFIG_FILE = "models.config"
BATCHING_FILE = "batching_parameters.txt"
MODELS_CONFIG = """model_config_list {{
{entries}}}
"""
MODEL_ENTRY = """  config {{
    name: "{name}"
    base_path: "{base_path}"
    model_platform: "tensorflow"
  }}
"""
BATCHING_PARAMETERS = """# Example for tensorflow_model_server --enable_batching --batching_parameters_file=...
# Tune on your hardware: see TF Serving's batching guide.
max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 4 }
pad_variable_length_inputs: false
"""


def write_server_files(export_dir: str, base_path: str | None = None) -> None:
    """models.config (for the models present in `export_dir`) and batching_parameters.txt.
    `base_path` is the directory as the server sees it (default: `export_dir`, absolute)."""
    base = base_path or os.path.abspath(export_dir)
    names = [n for n in MODEL_NAMES if existing_versions(model_dir(export_dir, n))]
    entries = "".join(MODEL_ENTRY.format(name=n, base_path=f"{base.rstrip('/')}/{n}") for n in names)
    files.atomic_write_text(os.path.join(export_dir, MODELS_CONFIG_FILE), MODELS_CONFIG.format(entries=entries))
    files.atomic_write_text(os.path.join(export_dir, BATCHING_FILE), BATCHING_PARAMETERS)
