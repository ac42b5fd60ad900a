r"""Converts the VQ-VAE encoder and decoder to TFLite (builtin ops only) and checks them.

    python -m export.export_tflite --workdir=/tmp/run --export_dir=/tmp/serving --quantization=all

Writes E/tflite/{decoder,encoder}_<q>.tflite and E/tflite/tflite_report.json.
"""

from absl import app, flags, logging

from vqvae_tf import stages, tflite

flags.DEFINE_string("workdir", None, "Workdir with a trained VQ-VAE.", required=True)
flags.DEFINE_string("export_dir", None, "Output base directory (files go to EXPORT_DIR/tflite).", required=True)
flags.DEFINE_list("quantization", ["all"], f"Any of {', '.join(tflite.QUANTIZATIONS)}, or 'all'.")
flags.DEFINE_string("data_dir", None, "Data directory for the test images used in the checks.")
flags.DEFINE_integer("num_test_images", 1000, "Real test images used for parity checks and int8 calibration.")
flags.register_validator(
    "quantization",
    lambda qs: all(q in tflite.QUANTIZATIONS + ("all",) for q in qs),
    message=f"--quantization must be from {', '.join(tflite.QUANTIZATIONS)} or 'all'.",
)
flags.register_validator("num_test_images", lambda v: v > 0, message="--num_test_images must be > 0.")
FLAGS = flags.FLAGS


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    qs = tflite.QUANTIZATIONS if "all" in FLAGS.quantization else tuple(dict.fromkeys(FLAGS.quantization))
    stages.export_tflite_stage(FLAGS.workdir, FLAGS.export_dir, qs, FLAGS.data_dir, FLAGS.num_test_images)


if __name__ == "__main__":
    app.run(main)
