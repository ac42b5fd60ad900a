import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from vqvae_tf import get_recipe
from vqvae_tf.serving import tflite


def _pipeline(workdir, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "train.pipeline",
            f"--workdir={workdir}",
            "--preset=quick",
            "--vqvae_steps=20",
            "--prior_steps=10",
            *extra,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_pipeline_end_to_end_then_resumes(tmp_path):
    w = tmp_path / "run"
    res = _pipeline(w)
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
    ):
        assert (w / path).is_file(), path
    for q in tflite.QUANTIZATIONS:
        assert (w / "export" / "tflite" / f"decoder_{q}.tflite").is_file()
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
    assert "| float32 |" in report.split("On-device generator")[1]

    res = _pipeline(w)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("skipping") == 5
    assert sorted(os.listdir(w / "export" / "vqvae")) == ["1"]  # nothing exported twice


def test_recipes():
    recipe = get_recipe("default")
    vq, prior = recipe.vqvae, recipe.prior
    assert (vq.dataset, vq.steps, prior.steps, prior.conditional) == ("fashion_mnist", 6000, 5000, True)
    recipe = get_recipe("quick", "cifar10")
    vq, prior = recipe.vqvae, recipe.prior
    assert vq.image_shape == (32, 32, 3) and vq.steps == 800 and prior.steps == 600
    with pytest.raises(ValueError, match="Unknown pipeline recipe 'huge'"):
        get_recipe("huge")
