import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO_ROOT, train_and_export_tiny, warmup_requests

from vqvae_tf import sample_codes
from vqvae_tf.serving import export_tflite_lib, savedmodel, tflite

H, W, C, h, w, K = 28, 28, 1, 7, 7, 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VQ-VAE + conditional prior trained a few steps on fake data, then exported."""
    return train_and_export_tiny(str(tmp_path_factory.mktemp("export")), prior_num_layers=2)


def images(n=3, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, H, W, C)).astype(np.float32)


def _io(signature):
    inputs = {k: (v.dtype, v.shape.as_list()) for k, v in signature.structured_input_signature[1].items()}
    outputs = {k: (v.dtype, v.shape.as_list()) for k, v in signature.structured_outputs.items()}
    return inputs, outputs


def test_layout(exported):
    assert exported["paths"]["vqvae"].endswith(os.path.join("vqvae", "1"))
    assert exported["paths"]["prior"].endswith(os.path.join("prior", "1"))
    for p in exported["paths"].values():
        assert os.path.isfile(os.path.join(p, "saved_model.pb"))
        assert os.path.isfile(os.path.join(p, savedmodel.WARMUP_PATH))
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        open(os.path.join(exported["export_dir"], "models.config")).read(), model_server_config_pb2.ModelServerConfig()
    )
    names = {c.name: c.base_path for c in config.model_config_list.config}
    assert names == {n: os.path.join(os.path.abspath(exported["export_dir"]), n) for n in ("vqvae", "prior")}
    assert "max_batch_size" in open(os.path.join(exported["export_dir"], "batching_parameters.txt")).read()


def test_vqvae_signatures(exported):
    sigs = exported["vq_sm"].signatures
    assert set(sigs) == {"serving_default", "encode", "decode", "encode_image_bytes", "decode_png"}
    f32, i32, s = tf.float32, tf.int32, tf.string
    assert _io(sigs["serving_default"]) == (
        {"images": (f32, [None, H, W, C])},
        {"reconstructions": (f32, [None, H, W, C]), "codes": (i32, [None, h, w])},
    )
    assert _io(sigs["encode"]) == ({"images": (f32, [None, H, W, C])}, {"codes": (i32, [None, h, w])})
    assert _io(sigs["decode"]) == ({"codes": (i32, [None, h, w])}, {"images": (f32, [None, H, W, C])})
    assert _io(sigs["encode_image_bytes"]) == ({"image_bytes": (s, [None])}, {"codes": (i32, [None, h, w])})
    assert _io(sigs["decode_png"]) == ({"codes": (i32, [None, h, w])}, {"png_bytes": (s, [None])})


def test_prior_signatures(exported):
    sigs = exported["prior_sm"].signatures
    assert set(sigs) == {"serving_default", "log_prob"}
    inputs, outputs = _io(sigs["serving_default"])
    assert inputs == {
        "num_samples": (tf.int32, []),
        "temperature": (tf.float32, []),
        "seed": (tf.int32, []),
        "labels": (tf.int32, [None]),
    }
    assert outputs == {"codes": (tf.int32, [None, h, w]), "images": (tf.float32, [None, H, W, C])}
    assert _io(sigs["log_prob"]) == (
        {"codes": (tf.int32, [None, h, w]), "labels": (tf.int32, [None])},
        {"log_prob": (tf.float32, [None]), "bits_per_code": (tf.float32, [None])},
    )


def test_values_equal_keras(exported):
    vq, sigs = exported["vqvae"], exported["vq_sm"].signatures
    x = images()
    codes = vq.encode(x).numpy()
    out = sigs["serving_default"](images=tf.constant(x))
    np.testing.assert_array_equal(out["codes"].numpy(), codes)
    np.testing.assert_allclose(out["reconstructions"].numpy(), vq(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(sigs["encode"](images=tf.constant(x))["codes"].numpy(), codes)
    decoded = vq.decode(codes).numpy()
    np.testing.assert_allclose(sigs["decode"](codes=tf.constant(codes))["images"].numpy(), decoded, atol=1e-6)
    pngs = sigs["decode_png"](codes=tf.constant(codes))["png_bytes"].numpy()
    for png, want in zip(pngs, decoded):
        np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), np.round(want * 255).astype(np.uint8))
    pixels = np.round(x * 255).astype(np.uint8)
    payload = tf.constant([tf.io.encode_png(p).numpy() for p in pixels])
    got = sigs["encode_image_bytes"](image_bytes=payload)["codes"].numpy()
    np.testing.assert_array_equal(got, vq.encode(pixels.astype(np.float32) / 255.0).numpy())


def test_prior_values_equal_library(exported):
    prior, vq, sigs = exported["prior"], exported["vqvae"], exported["prior_sm"].signatures
    labels = np.array([0, 3, 9, 1], np.int32)
    out = sigs["serving_default"](
        num_samples=tf.constant(4), temperature=tf.constant(0.8), seed=tf.constant(11), labels=tf.constant(labels)
    )
    want = sample_codes(prior, 4, temperature=0.8, seed=11, labels=labels)
    np.testing.assert_array_equal(out["codes"].numpy(), want.numpy())
    np.testing.assert_allclose(out["images"].numpy(), vq.decode(want).numpy(), atol=1e-6)
    lp = sigs["log_prob"](codes=want, labels=tf.constant(labels))
    # Independently: a NumPy log-softmax of the prior's logits, summed at the codes.
    logits = prior(want, labels).numpy().astype(np.float64)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    want_log_prob = np.take_along_axis(log_softmax, want.numpy()[..., None], -1).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(lp["log_prob"].numpy(), want_log_prob, rtol=1e-5)
    np.testing.assert_allclose(lp["bits_per_code"].numpy(), -want_log_prob / 49 / np.log(2), rtol=1e-5)


def _bad(fn, pattern, **inputs):
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        fn(**{k: tf.constant(v) for k, v in inputs.items()})


def test_bad_input_at_serving_time(exported):
    vq, prior = exported["vq_sm"].signatures, exported["prior_sm"].signatures
    bad_codes = np.full((1, h, w), K, np.int32)
    _bad(vq["decode"], r"codes must be in \[0, 16\)", codes=bad_codes)
    _bad(vq["decode"], r"codes must be in \[0, 16\): found values from\] \[-16\]", codes=-bad_codes)
    _bad(vq["decode_png"], r"codes must be in \[0, 16\)", codes=bad_codes)
    _bad(prior["log_prob"], r"codes must be in \[0, 16\)", codes=bad_codes, labels=np.zeros(1, np.int32))
    # Codes without the batch dimension: the shape is named, not a broadcast error.
    for shape in [(h, w), (h,)]:
        _bad(
            prior["log_prob"],
            rf"codes must have shape \[B, {h}, {w}\]",
            codes=np.zeros(shape, np.int32),
            labels=np.zeros(1, np.int32),
        )
    # An empty batch: empty results, as the VQ-VAE's signatures give.
    empty = prior["log_prob"](codes=tf.zeros([0, h, w], tf.int32), labels=tf.zeros([0], tf.int32))
    assert empty["log_prob"].shape == (0,) and empty["bits_per_code"].shape == (0,)
    assert vq["decode"](codes=tf.zeros([0, h, w], tf.int32))["images"].shape == (0, H, W, C)
    _bad(vq["encode"], r"images must be in \[0, 1\]", images=images() * 3)
    _bad(vq["serving_default"], r"images must be in \[0, 1\]", images=-images())
    _bad(vq["encode"], "finite", images=np.full((1, H, W, C), np.nan, np.float32))
    _bad(vq["encode"], r"images must have shape \[B, 28, 28, 1\]", images=np.zeros((1, 32, 32, 1), np.float32))
    _bad(vq["serving_default"], r"images must have shape \[B, 28, 28, 1\]", images=np.zeros((1, 28, 28, 3), np.float32))
    _bad(vq["encode_image_bytes"], "Unknown image file format", image_bytes=[b"not an image"])
    wrong_size = tf.io.encode_png(np.zeros((30, 28, 1), np.uint8)).numpy()
    _bad(
        vq["encode_image_bytes"],
        r"\[30,28,1\] is not compatible with expected shape \[28,28,1\]",
        image_bytes=[wrong_size],
    )
    ok = {"temperature": np.float32(1.0), "seed": np.int32(0)}
    _bad(
        prior["serving_default"],
        r"num_samples must be in \[1, 256\]",
        num_samples=np.int32(0),
        labels=np.zeros(0, np.int32),
        **ok,
    )
    _bad(
        prior["serving_default"],
        r"num_samples must be in \[1, 256\]",
        num_samples=np.int32(257),
        labels=np.zeros(257, np.int32),
        **ok,
    )
    _bad(
        prior["serving_default"],
        "temperature must be finite and > 0",
        num_samples=np.int32(1),
        temperature=np.float32(0.0),
        seed=np.int32(0),
        labels=np.zeros(1, np.int32),
    )
    _bad(
        prior["serving_default"],
        r"labels must be in \[0, 10\)",
        num_samples=np.int32(1),
        labels=np.array([10], np.int32),
        **ok,
    )
    _bad(
        prior["serving_default"],
        "labels must be one per sample",
        num_samples=np.int32(2),
        labels=np.zeros(1, np.int32),
        **ok,
    )


def test_warmup_records_parse_and_replay(exported):
    for name, sm in (("vqvae", exported["vq_sm"]), ("prior", exported["prior_sm"])):
        requests = list(warmup_requests(exported["paths"][name]))
        assert {signature_name for signature_name, _, _ in requests} == set(sm.signatures)
        for signature_name, inputs, request in requests:
            assert request.model_spec.name == name
            signature = sm.signatures[signature_name]
            out = signature(**inputs)  # every warmup request runs, and gives the declared outputs
            assert set(out) == set(signature.structured_outputs), request.model_spec.signature_name
            for key, value in out.items():
                assert value.dtype == signature.structured_outputs[key].dtype, key
                assert signature.structured_outputs[key].shape.is_compatible_with(value.shape), key
                if key in ("codes", "images", "reconstructions") and "num_samples" not in inputs:
                    batch = next(iter(inputs.values())).shape[0]
                    assert value.shape[0] == batch, (key, value.shape, batch)
                elif "num_samples" in inputs and key in ("codes", "images"):
                    assert value.shape[0] == int(inputs["num_samples"]), (key, value.shape)
                if key == "images":
                    assert 0.0 <= float(tf.reduce_min(value)) and float(tf.reduce_max(value)) <= 1.0


def test_versions_and_atomic_export(exported, tmp_path, monkeypatch):
    vq = exported["vqvae"]
    base = str(tmp_path / "serving")
    assert savedmodel.export_vqvae(vq, base).endswith("vqvae/1")
    assert savedmodel.export_vqvae(vq, base).endswith("vqvae/2")
    with pytest.raises(FileExistsError, match="--overwrite"):
        savedmodel.export_vqvae(vq, base, version=1)
    assert savedmodel.export_vqvae(vq, base, version=1, overwrite=True).endswith("vqvae/1")

    def boom(*a, **k):
        raise OSError("No space left on device")

    monkeypatch.setattr(savedmodel, "warmup_records", boom)
    with pytest.raises(OSError, match="No space left"):
        savedmodel.export_vqvae(vq, base)
    assert sorted(os.listdir(os.path.join(base, "vqvae"))) == ["1", "2"]  # no 3, no temp dir


SCRIPT_NO_PACKAGE = textwrap.dedent(
    """
    import json, sys
    sys.path = [p for p in sys.path if p not in ("", {repo!r}) and "__editable__" not in p]
    try:
        import vqvae_tf  # noqa: F401
        raise SystemExit("vqvae_tf must not be importable here")
    except ImportError:
        pass
    import numpy as np, tensorflow as tf
    m = tf.saved_model.load({path!r})
    codes = tf.constant(np.load({codes!r}))
    print(json.dumps(m.signatures["decode"](codes=codes)["images"].numpy().tolist()))
    """
)

SCRIPT_TF1 = textwrap.dedent(
    """
    import json, sys
    sys.path = [p for p in sys.path if p not in ("", {repo!r}) and "__editable__" not in p]
    import numpy as np, tensorflow as tf
    tf1 = tf.compat.v1
    with tf1.Session(graph=tf.Graph()) as sess:
        meta = tf1.saved_model.loader.load(sess, ["serve"], {path!r})
        sig = meta.signature_def["decode"]
        out = sess.run(sig.outputs["images"].name, feed_dict={{sig.inputs["codes"].name: np.load({codes!r})}})
        sig = meta.signature_def["serving_default"]
        codes = sess.run(sig.outputs["codes"].name, feed_dict={{sig.inputs["images"].name: np.load({images!r})}})
    print(json.dumps({{"images": out.tolist(), "codes": codes.tolist()}}))
    """
)


def _python(script, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_loads_without_the_package(exported, tmp_path):

    codes = exported["vqvae"].encode(images()).numpy()
    np.save(tmp_path / "codes.npy", codes)
    script = SCRIPT_NO_PACKAGE.format(
        repo=REPO_ROOT, path=exported["paths"]["vqvae"], codes=str(tmp_path / "codes.npy")
    )
    got = np.array(_python(script, str(tmp_path)))
    np.testing.assert_allclose(got, exported["vqvae"].decode(codes).numpy(), atol=1e-6)


def test_tf1_session_loader(exported, tmp_path):

    x = images()
    codes = exported["vqvae"].encode(x).numpy()
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "images.npy", x)
    script = SCRIPT_TF1.format(
        repo=REPO_ROOT,
        path=exported["paths"]["vqvae"],
        codes=str(tmp_path / "codes.npy"),
        images=str(tmp_path / "images.npy"),
    )
    got = _python(script, str(tmp_path))
    np.testing.assert_allclose(np.array(got["images"]), exported["vqvae"].decode(codes).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.array(got["codes"]), codes)


def test_tflite_parity_and_builtin_only(exported, tmp_path):
    report = export_tflite_lib.export_tflite_stage(
        exported["workdir"], str(tmp_path), tflite.QUANTIZATIONS, exported["data_dir"], num_test_images=10
    )
    assert set(report["models"]) == set(tflite.QUANTIZATIONS)
    saved = json.load(open(tmp_path / "tflite" / "tflite_report.json"))
    assert saved["models"].keys() == report["models"].keys() and "generator" in saved
    for q, r in report["models"].items():
        for kind in ("decoder", "encoder"):
            data = open(tmp_path / "tflite" / f"{kind}_{q}.tflite", "rb").read()
            ops = tflite.op_names(data)
            assert not [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "VAR_HANDLE")], (q, ops)
        # Each file's size on disk is the size the report gives.
        assert r["decoder_bytes"] == os.path.getsize(tmp_path / "tflite" / f"decoder_{q}.tflite")
    assert report["models"]["float32"]["decoder_max_abs_error"] <= 1e-4
    assert report["models"]["float16"]["decoder_max_abs_error"] <= 1e-2
    assert report["models"]["float32"]["encoder_code_agreement"] == 1.0
    gen = report["generator"]["float32"]
    assert gen["converted"] and gen["code_agreement_vs_tensorflow"] == 1.0
    data = open(tmp_path / "tflite" / "generator_float32.tflite", "rb").read()
    uniforms = np.random.default_rng(1).uniform(size=(3, h * w)).astype(np.float32)
    out = tflite.run_signature(
        data, "generate", uniforms=uniforms, temperature=np.float32(1.0), labels=np.array([0, 5, 9], np.int32)
    )
    assert out["codes"].shape == (3, h, w) and out["images"].shape == (3, H, W, C)
    assert out["codes"].min() >= 0 and out["codes"].max() < K
    np.testing.assert_allclose(out["images"], exported["vqvae"].decode(out["codes"]).numpy(), atol=1e-5)
    dec = open(tmp_path / "tflite" / "decoder_float32.tflite", "rb").read()
    with pytest.raises(RuntimeError, match="gather index out of bounds"):
        tflite.run_signature(dec, "decode", codes=np.full((1, h, w), K, np.int32))
    # What LiteRT itself accepts silently, the Python helper refuses with the input named: a 32x32
    # image in the 28x28 encoder (LiteRT returns 8x8 codes), pixels of 255, temperature 0.
    enc = open(tmp_path / "tflite" / "encoder_float32.tflite", "rb").read()
    runner = tflite._interpreter(enc).get_signature_runner("encode")
    assert runner(images=np.zeros((1, 32, 32, C), np.float32))["codes"].shape == (1, 8, 8)  # LiteRT: no check
    with pytest.raises(ValueError, match=rf"encode: images must have shape \[B, {H}, {W}, {C}\], got \[1, 32, 32, 1\]"):
        tflite.run_signature(enc, "encode", images=np.zeros((1, 32, 32, C), np.float32))
    with pytest.raises(ValueError, match=r"images must be finite and in \[0, 1\].*got values from 255.0 to 255.0"):
        tflite.run_signature(enc, "encode", images=np.full((1, H, W, C), 255.0, np.float32))
    with pytest.raises(ValueError, match="images must be float32, got uint8"):
        tflite.run_signature(enc, "encode", images=np.zeros((1, H, W, C), np.uint8))
    ok = dict(uniforms=uniforms, labels=np.array([0, 5, 9], np.int32))
    with pytest.raises(ValueError, match="temperature must be finite and > 0, got 0.0"):
        tflite.run_signature(data, "generate", temperature=np.float32(0.0), **ok)
    with pytest.raises(ValueError, match="temperature must be finite and > 0, got nan"):
        tflite.run_signature(data, "generate", temperature=np.float32("nan"), **ok)
    with pytest.raises(ValueError, match=r"uniforms must be finite and in \[0, 1\)"):
        tflite.run_signature(data, "generate", temperature=np.float32(1.0), **{**ok, "uniforms": uniforms + 1})
    ones = np.ones_like(uniforms)  # exactly 1: LiteRT would pick code K
    with pytest.raises(ValueError, match=r"uniforms must be finite and in \[0, 1\).*from 1.0 to 1.0"):
        tflite.run_signature(data, "generate", temperature=np.float32(1.0), **{**ok, "uniforms": ones})
    with pytest.raises(ValueError, match=r"one batch size, got \{'uniforms': 3, 'labels': 2\}"):
        tflite.run_signature(data, "generate", temperature=np.float32(1.0), uniforms=uniforms, labels=ok["labels"][:2])
    # An image without its batch dimension (LiteRT gives codes of a wrong shape), a NaN pixel.
    with pytest.raises(ValueError, match=rf"images must have shape \[B, {H}, {W}, {C}\], got \[{H}, {W}, {C}\]"):
        tflite.run_signature(enc, "encode", images=np.zeros((H, W, C), np.float32))
    nan = np.zeros((1, H, W, C), np.float32)
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images must be finite and in \[0, 1\]"):
        tflite.run_signature(enc, "encode", images=nan)
    with pytest.raises(
        ValueError, match=r"takes inputs \['labels', 'temperature', 'uniforms'\], got \['temperature', 'uniforms'\]"
    ):
        tflite.run_signature(data, "generate", temperature=np.float32(1.0), uniforms=uniforms)
    with pytest.raises(ValueError, match="quantization must be one of"):
        tflite.convert(str(tmp_path), "decode", "int4")
