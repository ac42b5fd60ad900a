import json
import os
import shutil

import pytest

from vqvae_tf import get_recipe
from vqvae_tf.data.sources import clipart
from vqvae_tf.serving import tflite


def _pipeline(scripts, workdir, *extra, env=None):
    """train.pipeline's quick recipe, short, as a fork of the warm script server."""
    args = [f"--workdir={workdir}", "--recipe=quick", "--vqvae_steps=20", "--prior_steps=10"]
    args.append("--quantization=float32")  # (every quantization converts in test_export)
    return scripts.run("train.pipeline", *args, *extra, env=env, timeout=900)


@pytest.mark.slow
def test_pipeline_end_to_end_then_resumes(scripts, tmp_path):
    w = tmp_path / "run"
    res = _pipeline(scripts, w, "--config=tiny")
    assert res.returncode == 0, res.stderr[-3000:]
    for i in range(1, 7):
        assert f"=== [{i}/6]" in res.stdout  # overall progress across stages
    for path in (
        "vqvae/metrics.json",
        "vqvae/reconstructions.png",
        "vqvae/codebook_usage.png",
        "codes/meta.json",
        "prior/metrics.json",
        "prior/samples.png",
        "export/vqvae/1/saved_model.pb",
        "export/prior/1/saved_model.pb",
        "export/models.config",
        "export/tflite/tflite_report.json",
        "pipeline_flags.txt",
        "REPORT.md",
        "presets/vqvae/model.weights.h5",
        "presets/prior/metadata.json",
    ):
        assert (w / path).is_file(), path
    for q in tflite.QUANTIZATIONS:  # --quantization=float32: only those files
        assert (w / "export" / "tflite" / f"decoder_{q}.tflite").is_file() == (q == "float32")
    report = (w / "REPORT.md").read_text()
    vq = json.load(open(w / "vqvae" / "metrics.json"))
    prior = json.load(open(w / "prior" / "metrics.json"))
    assert vq["steps"] == 20 and prior["steps"] == 10 and prior["conditional"] is True
    # The report shows the figures of the metrics files and links the pictures.
    assert f"| test_normalized_mse | {vq['test_normalized_mse']:.4g} |" in report
    assert f"| test_bits_per_code | {prior['test_bits_per_code']:.4g} |" in report
    for picture in ("vqvae/reconstructions.png", "prior/samples.png", "vqvae/codebook_usage.png"):
        assert f"]({picture})" in report
    assert (w / "export" / "tflite" / "generator_float32.tflite").is_file()
    assert "`vqvae`: `presets/vqvae`, `prior`: `presets/prior`" in report
    meta = json.load(open(w / "presets" / "vqvae" / "metadata.json"))
    assert meta["command"].startswith("python -m train.pipeline --workdir=") and "--recipe=quick" in meta["command"]
    assert "| float32 |" in report.split("On-device generator")[1]

    # Re-run on the workdir moved elsewhere: every stage is done already (the done-markers are
    # relative to the workdir), and nothing is exported twice.
    moved = tmp_path / "moved"
    shutil.move(str(w), str(moved))
    res = _pipeline(scripts, moved, "--config=tiny")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("skipping") == 6, res.stdout
    assert sorted(os.listdir(moved / "export" / "vqvae")) == ["1"]
    assert f"`vqvae`: `{moved}/export/vqvae/1`" in (moved / "REPORT.md").read_text()  # where they are now

    # Each training stage has its flags file, with the project's flags only, and it repeats the
    # stage with the stage's own script (here: the prior, resumed at its last step, same network).
    for stage in ("vqvae", "prior"):
        text = (moved / stage / "flags.txt").read_text()
        assert f"--workdir={w}" in text and "--steps=" in text and "--log_every=" in text, text
        assert "--test_tmpdir" not in text and "--hbm_oom_exit" not in text and "--recipe" not in text, text
    assert "--conditional" in (moved / "prior" / "flags.txt").read_text()
    assert "--test_tmpdir" not in (moved / "pipeline_flags.txt").read_text()
    res = scripts.run("train.train_prior", f"--flagfile={moved / 'prior' / 'flags.txt'}", f"--workdir={moved}")
    assert res.returncode == 0 and "Resumed from step 10" in res.stdout, res.stderr[-3000:] + res.stdout[-2000:]


def clipart_subset(root, categories=("animals", "food", "plants"), per_category=16) -> str:
    """A small folder of real clip art (Debian's openclipart-png): links to the first PNGs, in
    sorted order, of a few categories, in category folders as the package has them."""
    source = clipart.default_dir()
    if not os.path.isdir(source):
        pytest.skip(f"{source} not found: `make data-clipart` installs Debian's openclipart-png")
    for category in categories:
        found = sorted(
            os.path.join(d, f)
            for d, _, names in os.walk(os.path.join(source, category))
            for f in names
            if f.endswith(".png")
        )
        os.makedirs(os.path.join(root, category))
        for i, path in enumerate(found[:per_category]):
            os.symlink(path, os.path.join(root, category, f"{i:03d}.png"))
    return str(root)


@pytest.mark.slow
def test_clipart_recipe_with_its_maskgit_prior(scripts, tmp_path):
    """--recipe=clipart (the colour presets' recipe) on real clip art, as few steps as it takes:
    64x64x3 images through clipart_64, its class-conditional MaskGIT prior through every stage
    (masked NLL, no bound, in the metrics and the report), a SavedModel with `steps`, an on-device
    generator, presets, and flags that repeat the prior stage with train.train_prior."""
    import tensorflow as tf

    from vqvae_tf import VQVAE, MaskGITPrior

    folder = clipart_subset(tmp_path / "clipart")
    w = tmp_path / "run"
    res = _pipeline(scripts, w, "--recipe=clipart", f"--data_dir={folder}", "--vqvae_steps=2", "--prior_steps=4")
    assert res.returncode == 0, res.stderr[-3000:]
    vq = json.load(open(w / "vqvae" / "metrics.json"))
    assert vq["dataset"] == "clipart" and vq["code_bits_per_image"] == 2048 and "test_lpips" in vq
    prior = json.load(open(w / "prior" / "metrics.json"))
    assert prior["prior"] == "maskgit" and prior["steps"] == 4 and "bits_per_dim" not in prior
    report = (w / "REPORT.md").read_text()
    assert "# VQ-VAE + MaskGIT prior" in report and "## Prior (MaskGIT, class-conditional)" in report
    assert f"| test_masked_bits_per_code | {prior['test_masked_bits_per_code']:.4g} |" in report
    assert "no exact likelihood" in report and "bits_per_dim_uniform_prior" not in report
    assert "`VQVAE.from_preset` / `MaskGITPrior.from_preset`" in report
    signature = tf.saved_model.load(str(w / "export" / "prior" / "1")).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"num_samples", "temperature", "seed", "steps", "labels"}
    assert (w / "export" / "tflite" / "generator_float32.tflite").is_file()
    assert VQVAE.from_preset(str(w / "presets")).image_shape == (64, 64, 3)
    preset = MaskGITPrior.from_preset(str(w / "presets"))
    meta = json.load(open(w / "presets" / "prior" / "metadata.json"))
    assert preset.num_classes == 3 and meta["class_names"] == ["animals", "food", "plants"]
    assert meta["check_metrics"]["test_masked_bits_per_code"] > 0
    text = (w / "prior" / "flags.txt").read_text()
    assert "--prior=maskgit" in text and "--kernel_size" not in text, text
    assert "--config=clipart_64" in (w / "vqvae" / "flags.txt").read_text()  # (its dataset: clipart)
    res = scripts.run("train.train_prior", f"--flagfile={w / 'prior' / 'flags.txt'}", "--steps=5")
    assert res.returncode == 0 and "Resumed from step 4" in res.stdout, res.stderr[-3000:] + res.stdout[-2000:]


def test_recipes():
    recipe = get_recipe("default")
    vq, prior = recipe.vqvae, recipe.prior
    assert (vq.dataset, vq.steps, prior.steps, prior.conditional) == ("fashion_mnist", 6000, 5000, True)
    recipe = get_recipe("quick", "cifar10")
    vq, prior = recipe.vqvae, recipe.prior
    assert vq.image_shape == (32, 32, 3) and vq.steps == 800 and prior.steps == 600
    recipe = get_recipe("clipart")
    vq, prior = recipe.vqvae, recipe.prior
    assert (vq.name, vq.dataset, vq.image_shape, vq.num_embeddings) == ("clipart_64", "clipart", (64, 64, 3), 256)
    assert vq.prior_grids() == {"codes": (16, 16)}  # 256 codes of 8 bits: 2048 bits per image
    assert (vq.perceptual_net, vq.perceptual_start, vq.adversarial_weight, prior.prior) == ("vgg", 8500, 0.0, "maskgit")
    assert get_recipe("default", "clipart").vqvae.name == "clipart_64"  # the dataset's own config
    with pytest.raises(ValueError, match=r"--recipe=clipart\) with a VQ-VAE-2: .* MaskGIT has no exact likelihood"):
        get_recipe("clipart", model="vqvae2")
    with pytest.raises(ValueError, match="Unknown pipeline recipe 'huge'"):
        get_recipe("huge")


def test_stage_flags_repeat_the_recipe_with_the_stage_script(tmp_path):
    """W/vqvae/flags.txt of a pipeline run: the shared flags the pipeline got, the recipe's values
    spelled out for train.train_vqvae (a bool quantizer option given as --noNAME included), and
    none of the pipeline's own flags."""
    import dataclasses

    from vqvae_tf.pipeline.stages import StageContext, vqvae_stage_flags
    from vqvae_tf.training.options import RunOptions
    from vqvae_tf.training.workdir import Workdir

    recipe = get_recipe("quick")
    recipe.vqvae = dataclasses.replace(recipe.vqvae, kmeans_init=False, steps=5)
    given = [
        "--workdir=/w",
        "--recipe=quick",
        "--nokmeans_init",
        "--seed=3",
        "--vqvae_steps=5",
        "--noskip_corrupt_images",
    ]
    ctx = StageContext(
        recipe, RunOptions(str(tmp_path), log_every=7), Workdir(str(tmp_path)), pipeline_flags="\n".join(given)
    )
    lines = vqvae_stage_flags(ctx).splitlines()
    for line in (
        "--workdir=/w",
        "--seed=3",
        "--noskip_corrupt_images",
        "--nokmeans_init",
        "--steps=5",
        "--log_every=7",
    ):
        assert line in lines, lines
    assert "--config=fashion_mnist" in lines and "--model=vqvae" in lines
    assert not [x for x in lines if x.startswith(("--recipe", "--vqvae_steps", "--quantizer="))], lines
