r"""Converts the VQ-VAE encoder and decoder (and the on-device generator when a prior is trained)
to TFLite, builtin ops only, and checks them (library: vqvae_tf.serving.export_tflite_lib).

    python -m export.export_tflite --workdir=/tmp/run --export_dir=/tmp/serving --quantization=all
    python -m export.export_tflite --preset=fashion_mnist --export_dir=/tmp/phone --quantization=float16

Writes E/tflite/{decoder,encoder}_<q>.tflite and E/tflite/tflite_report.json.
"""

from absl import flags

from vqvae_tf import cli
from vqvae_tf.serving import export_tflite_lib

_WORKDIR, _PRESET = cli.define_model_source("Workdir with a trained VQ-VAE.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", None, "Output base directory (files go to EXPORT_DIR/tflite).", required=True
)
_QUANTIZATION = cli.define_quantization_flag()
_DATA_DIR = cli.define_data_dir()
_NUM_TEST_IMAGES = flags.DEFINE_integer(
    "num_test_images", 1000, "Real test images used for parity checks and int8 calibration.", lower_bound=1
)


def main():
    qs = cli.quantizations(_QUANTIZATION)
    export_tflite_lib.export_tflite_stage(
        _WORKDIR.value, _EXPORT_DIR.value, qs, _DATA_DIR.value, _NUM_TEST_IMAGES.value, preset=_PRESET.value
    )


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
