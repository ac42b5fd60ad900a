"""Pretrained tokenizers from PyTorch: diffusers VQModel folders and taming-transformers checkpoints
converted into the zoo's VQVAE ("taming" network), checked against the reference implementations'
own outputs (tests/fixtures/conversion, made by bench/conversion_fixtures.py; no torch here)."""

import json
import os
import pickle
import shutil
import struct
import zipfile

import numpy as np
import pytest
from helpers import REPO_ROOT as REPO

from vqvae_tf import VQVAE
from vqvae_tf.convert import ConversionError, convert, load, read_source
from vqvae_tf.convert.safetensors_file import read_safetensors
from vqvae_tf.convert.torch_checkpoint import read_torch_checkpoint
from vqvae_tf.models.presets import PresetError

FIXTURES = os.path.join(REPO, "tests", "fixtures", "conversion")
SOURCES = {
    "diffusers_attention": "diffusers_attention",
    "diffusers_legacy_names": "diffusers_legacy_names",
    "diffusers_movq": "diffusers_movq",
    "taming": os.path.join("taming", "last.ckpt"),
}


def expected(name):
    e = np.load(os.path.join(FIXTURES, name, "expected.npz"))
    return {k: e[k] for k in e.files}


@pytest.fixture(scope="module")
def models():
    return {name: load(os.path.join(FIXTURES, src)) for name, src in SOURCES.items()}


@pytest.mark.parametrize("name", list(SOURCES))
def test_codes_and_decodings_equal_the_reference(models, name):
    model, e = models[name], expected(name)
    images = e["images"].astype(np.float32) / 255.0
    # The latents (after quant_conv) through every layer: float32 error only.
    np.testing.assert_allclose(model.encoder_outputs(images).numpy(), e["latents"], atol=3e-4, rtol=0)
    codes = model.encode(images).numpy()
    assert codes.dtype == np.int32 and codes.shape == e["codes"].shape
    np.testing.assert_array_equal(codes, e["codes"])
    assert len(np.unique(codes)) > 30  # (the fixtures' codes are diverse: a wrong weight moves them)
    np.testing.assert_allclose(model.decode(e["codes"]).numpy(), e["decoded"], atol=2e-5, rtol=0)


def test_the_networks_match_their_configs(models):
    movq = models["diffusers_movq"]
    assert movq.network == "taming" and movq.network_options["norm_type"] == "spatial"
    assert movq.network_options["mid_attention"] is False and movq.latent_shape == (8, 8)
    attention = models["diffusers_attention"]
    assert (attention.embedding_dim, attention.network_options["latent_channels"]) == (3, 4)  # vq_embed_dim
    assert attention.network_options["down_attention"] == [False, True]
    taming = models["taming"]
    assert taming.network_options["down_attention"] == [False, True]  # attn_resolutions=[16] at 32 px
    assert taming.network_options["up_attention"] == [True, False]


def test_preset_round_trip_and_metadata(tmp_path):
    out = str(tmp_path / "preset")
    meta = convert(os.path.join(FIXTURES, "taming", "last.ckpt"), out, command="test")
    assert meta["license"] == "unknown" and meta["source_format"] == "taming" and meta["global_step"] == 7
    saved = json.load(open(os.path.join(out, "vqvae", "metadata.json")))
    assert saved["source_config"]["model"]["params"]["n_embed"] == 64 and saved["converted"] is True
    model, e = VQVAE.from_preset(out), expected("taming")
    np.testing.assert_array_equal(model.encode(e["images"] / 255.0).numpy(), e["codes"])
    with pytest.raises(ConversionError, match="exists already"):
        convert(os.path.join(FIXTURES, "taming", "last.ckpt"), out)
    convert(os.path.join(FIXTURES, "diffusers_attention"), out, license="MIT", overwrite=True)
    assert json.load(open(os.path.join(out, "vqvae", "metadata.json")))["license"] == "MIT"


def test_from_preset_converts_a_diffusers_folder_in_memory(tmp_path):
    e = expected("diffusers_attention")
    # A repository folder with the VQModel in vqvae/ (as aMUSEd's), loaded by VQVAE.from_preset directly.
    shutil.copytree(os.path.join(FIXTURES, "diffusers_attention"), tmp_path / "repo" / "vqvae")
    model = VQVAE.from_preset(str(tmp_path / "repo"))
    np.testing.assert_array_equal(model.encode(e["images"] / 255.0).numpy(), e["codes"])
    with pytest.raises(PresetError, match="huggingface_hub"):
        VQVAE.from_preset("hf://org/name/vqvae")  # (no huggingface_hub in CI's venv)


def _copy(tmp_path, name="diffusers_attention"):
    dst = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.load(open(path))
    config.update(changes)
    json.dump(config, open(path, "w"))


def _write_safetensors(path, tensors: dict):
    header, blobs, offset = {}, [], 0
    for name, (dtype, array_bytes, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(array_bytes)]}
        blobs.append(array_bytes)
        offset += len(array_bytes)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(_class_name="AutoencoderKL"), "holds a diffusers 'AutoencoderKL', not a VQModel"),
        (dict(act_fn="gelu"), "act_fn='gelu' is not supported"),
        (
            dict(down_block_types=["DownEncoderBlock2D", "CrossAttnDownBlock2D"]),
            "'CrossAttnDownBlock2D' is not supported",
        ),
        (dict(up_block_types=["UpDecoderBlock2D"]), "up_block_types has 1 entries for 2 block_out_channels"),
        (dict(remap="used.npy"), "option 'remap' is not supported"),
        (dict(num_vq_embeddings=65), r"'quantize.embedding.weight' has shape \[64, 3\].*\[65, 3\]"),
        (dict(norm_num_groups=5), "divide into norm_num_groups=5"),
        (
            dict(mid_block_add_attention=False),
            r"weights this config does not make \(\d+, e.g. 'decoder.mid_block.attentions",
        ),
    ],
)
def test_bad_diffusers_folders_are_refused_by_name(tmp_path, changes, message):
    folder = _copy(tmp_path)
    _edit_config(folder, **changes)
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=message):
        convert(str(folder), str(out))
    assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_missing_and_damaged_weights_are_named(tmp_path):
    folder = _copy(tmp_path)
    weights = read_safetensors(str(folder / "diffusion_pytorch_model.safetensors"))
    del weights["encoder.conv_norm_out.weight"]
    _write_safetensors(
        folder / "diffusion_pytorch_model.safetensors",
        {k: ("F32", v.astype("<f4").tobytes(), v.shape) for k, v in weights.items()},
    )
    with pytest.raises(ConversionError, match=r"no weight 'encoder.conv_norm_out.weight' \(1 missing\)"):
        read_and_build(folder)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"\x08\x00")
    with pytest.raises(ConversionError, match="not a safetensors file"):
        read_and_build(folder)
    os.remove(folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ConversionError, match="no diffusion_pytorch_model.safetensors"):
        read_and_build(folder)
    with pytest.raises(ConversionError, match="not a diffusers VQModel folder"):
        read_source(str(tmp_path))
    with pytest.raises(ConversionError, match="does not exist"):
        read_source(str(tmp_path / "nothing.ckpt"))


def read_and_build(folder):
    from vqvae_tf.convert.convert_lib import build

    return build(read_source(str(folder)))


def test_safetensors_dtypes_read_without_torch(tmp_path):
    values = np.array([1.5, -2.25, 3.0e-3, 65504.0], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    path = str(tmp_path / "t.safetensors")
    _write_safetensors(
        path,
        {
            "f32": ("F32", values.astype("<f4").tobytes(), (2, 2)),
            "f16": ("F16", values.astype("<f2").tobytes(), (4,)),
            "bf16": ("BF16", bf16.tobytes(), (4,)),
            "i64": ("I64", np.arange(3, dtype="<i8").tobytes(), (3,)),
        },
    )
    got = read_safetensors(path)
    np.testing.assert_array_equal(got["f32"], values.reshape(2, 2))
    np.testing.assert_array_equal(got["f16"], values.astype(np.float16))
    assert got["bf16"].dtype == np.float32  # (bfloat16: float32's high 16 bits)
    np.testing.assert_array_equal(got["bf16"], (values.view(np.uint32) & 0xFFFF0000).view(np.float32))
    assert got["bf16"][0] == 1.5 and got["bf16"][3] == 65280.0
    np.testing.assert_array_equal(got["i64"], np.arange(3))
    _write_safetensors(path, {"x": ("F32", b"\x00" * 12, (4,))})
    with pytest.raises(ConversionError, match=r"tensor x's bytes \[0, 12\) do not hold its shape \[4\]"):
        read_safetensors(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {}, "payload": _Exploit(marker)}, protocol=2))
    loaded = read_torch_checkpoint(str(path))
    assert not marker.exists()  # os.system was never called
    assert type(loaded["payload"]).__name__ == "Opaque"
    (tmp_path / "model.yaml").write_text(open(os.path.join(FIXTURES, "taming", "model.yaml")).read())
    with pytest.raises(ConversionError, match="holds no state dict"):
        read_source(str(path))
    assert not marker.exists()
    (tmp_path / "legacy.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(ConversionError, match="not a PyTorch zip checkpoint"):
        read_torch_checkpoint(str(tmp_path / "legacy.ckpt"))


def test_the_taming_reader_checks_its_yaml(tmp_path):
    shutil.copytree(os.path.join(FIXTURES, "taming"), tmp_path / "t")
    ckpt, yaml_path = str(tmp_path / "t" / "last.ckpt"), tmp_path / "t" / "model.yaml"
    text = yaml_path.read_text()
    yaml_path.write_text(text.replace("taming.models.vqgan.VQModel", "taming.models.vqgan.GumbelVQ"))
    with pytest.raises(ConversionError, match="'taming.models.vqgan.GumbelVQ' is not supported"):
        read_source(ckpt)
    yaml_path.write_text(text.replace("z_channels: 4", "z_channels: 8"))
    with pytest.raises(ConversionError, match=r"'encoder.conv_out.weight' has shape \[4, 64, 3, 3\]"):
        read_and_build(ckpt)
    os.remove(yaml_path)
    with pytest.raises(ConversionError, match="Pass --config=the project .yaml"):
        read_source(ckpt)


def test_savedmodel_of_a_converted_preset(tmp_path):
    """An autoencoder-only preset exports alone: its SavedModel gives the reference's codes and decodings."""
    import tensorflow as tf

    from vqvae_tf.serving import export_savedmodel_lib

    preset = str(tmp_path / "preset")
    convert(os.path.join(FIXTURES, "diffusers_attention"), preset)
    e = expected("diffusers_attention")
    paths = export_savedmodel_lib.export_savedmodel_stage(None, str(tmp_path / "serving"), preset=preset)
    assert set(paths) == {"vqvae"}
    served = tf.saved_model.load(paths["vqvae"])
    codes = served.signatures["encode"](images=tf.constant(e["images"] / 255.0, tf.float32))["codes"]
    np.testing.assert_array_equal(codes.numpy(), e["codes"])
    images = served.signatures["decode"](codes=codes)["images"].numpy()
    np.testing.assert_allclose(images, e["decoded"], atol=2e-5)


def test_tflite_of_the_taming_network_is_builtin_only(tmp_path):
    """GroupNorm, attention and MoVQ's spatial norm convert to builtin ops, float32 equal to
    TensorFlow within 1e-4; a preset without data is checked on the images of --data_dir."""
    from PIL import Image

    from vqvae_tf.serving import export_tflite_lib, tflite

    # (Four levels: three upsamplings, where a converter that loses the spatial shapes fails.)
    options = dict(block_out_channels=[32] * 4, norm_type="spatial", up_attention=[True, False, False, False],
                   latent_channels=4)  # fmt: skip
    model = VQVAE(image_shape=(16, 16, 3), num_embeddings=32, embedding_dim=4, downsample=8, quantizer="vq",
                  network="taming", network_options=options)  # fmt: skip
    rng = np.random.default_rng(0)
    for v in model.weights:  # (every weight away from its initial value, as a trained model's)
        v.assign(v.numpy() * (1 + 0.3 * rng.standard_normal(v.shape)) + 0.05 * rng.standard_normal(v.shape))
    preset = str(tmp_path / "preset")
    model.save_to_preset(os.path.join(preset, "vqvae"), metadata={"image_shape": [16, 16, 3]})
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(expected("taming")["images"]):
        Image.fromarray(im).save(folder / f"{i}.png")
    report = export_tflite_lib.export_tflite_stage(None, str(tmp_path / "out"), ["float32"], str(folder), preset=preset)
    r = report["models"]["float32"]
    assert r["decoder_max_abs_error"] <= 1e-4 and r["encoder_code_agreement"] == 1.0
    for kind in ("decoder", "encoder"):
        ops = tflite.op_names(open(tmp_path / "out" / "tflite" / f"{kind}_float32.tflite", "rb").read())
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], (kind, ops)
    assert {"MEAN", "BATCH_MATMUL", "SOFTMAX"} <= set(
        tflite.op_names(open(tmp_path / "out" / "tflite" / "decoder_float32.tflite", "rb").read())
    )


def test_convert_checkpoint_script(scripts, tmp_path):
    out = str(tmp_path / "preset")
    src = os.path.join(FIXTURES, "diffusers_movq")
    cmd = ["export.convert_checkpoint", f"--checkpoint={src}", f"--output={out}"]
    res = scripts.run(*cmd, "--license=CC-BY-4.0")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Converted diffusers checkpoint" in res.stdout and "8x8 codes of 48" in res.stdout
    assert json.load(open(os.path.join(out, "vqvae", "metadata.json")))["license"] == "CC-BY-4.0"
    res = scripts.run(*cmd)
    assert res.returncode == 2 and res.stderr.strip().endswith("exists already (pass --overwrite to replace it).")


@pytest.mark.slow
def test_a_converted_tokenizer_through_the_stages(scripts, tmp_path):
    """A converted diffusers VQModel on real clip art: decoder-only fine-tuning from the preset, the
    codes export (the frozen encoder's codes: the preset's own), a prior on them and samples decoded
    by the fine-tuned decoder; the usual scripts, nothing special-cased."""
    from test_pipeline import clipart_subset

    from vqvae_tf import read_codes
    from vqvae_tf.data import DataSource

    preset = str(tmp_path / "preset")
    convert(os.path.join(FIXTURES, "diffusers_attention"), preset)
    folder = clipart_subset(tmp_path / "clipart", per_category=8)
    w = str(tmp_path / "w")
    data = ["--dataset=image_folder", f"--data_dir={folder}", "--image_size=32", "--test_fraction=0.25"]
    res = scripts.run(
        "train.train_vqvae", f"--workdir={w}", f"--init_from={preset}", "--trainable=decoder", *data,
        "--steps=2", "--batch_size=4", "--log_every=1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    res = scripts.run("train.export_codes", f"--workdir={w}")
    assert res.returncode == 0, res.stderr[-3000:]
    tokenizer = VQVAE.from_preset(preset)
    images, _ = next(
        iter(DataSource("image_folder", data_dir=folder, image_size=32, test_fraction=0.25).load("test").batch(64))
    )
    codes, _ = next(iter(read_codes(os.path.join(w, "codes"), "test").batch(64)))
    np.testing.assert_array_equal(codes.numpy(), tokenizer.encode(images).numpy())  # the preset's codes
    res = scripts.run(
        "train.train_prior", f"--workdir={w}", "--prior=transformer", "--num_filters=16", "--num_layers=1",
        "--steps=2", "--batch_size=4", "--log_every=1",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "samples.png"
    res = scripts.run("train.sample", f"--workdir={w}", "--num_samples=3", f"--output={out}")
    assert res.returncode == 0 and out.stat().st_size > 0, res.stderr[-3000:]
