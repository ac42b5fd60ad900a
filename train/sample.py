r"""Samples images from the trained prior + decoder into a PNG grid (library:
vqvae_tf.training.sample_lib).

    python -m train.sample --workdir=/tmp/run --num_samples=64 --temperature=1.0 --seed=0 \
        --output=/tmp/samples.png [--labels=0,1,2] [--top_k=20]
    python -m train.sample --workdir=/tmp/mg --num_samples=16 --steps=12 --guidance=1.0 --output=/tmp/s.png  # MaskGIT
    python -m train.sample --preset=fashion_mnist --labels=Sneaker,Bag --num_samples=2 --output=/tmp/s.png

The same seed gives the same file. For a conditional prior, --labels lists one label per sample,
or a single label used for all of them, each a class name (an image folder's class sub-folder,
Fashion-MNIST's "Sneaker", ...) or a class number; without it, labels are drawn with --seed from the training
class frequencies (and printed).
"""

from absl import app, flags

from vqvae_tf import cli
from vqvae_tf.training import sample_lib

_WORKDIR, _PRESET = cli.define_model_source("Workdir with vqvae/ and prior/.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "Number of samples.", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature (> 0).")
_SEED = cli.define_seed_flag()
_LABELS = flags.DEFINE_list(
    "labels",
    None,
    "Class names or numbers for a conditional prior (one per sample, or one for all; default: drawn from "
    "the training class frequencies).",
)
_TOP_K = flags.DEFINE_integer("top_k", None, "Sample only among the k most likely codes.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", None, "MaskGIT: parallel decoding steps (default 8).", lower_bound=1)
_GUIDANCE = flags.DEFINE_float(
    "guidance", None, "MaskGIT, class-conditional: classifier-free guidance scale (>= 0; default 0).", lower_bound=0
)
_COLUMNS = flags.DEFINE_integer("columns", 8, "Columns of the PNG grid.", lower_bound=1)
_OUTPUT = flags.DEFINE_string("output", None, "PNG file to write.", required=True)
cli.positive_float("temperature")


def main():
    try:
        sample_lib.write_samples(
            _WORKDIR.value,
            _OUTPUT.value,
            _NUM_SAMPLES.value,
            _TEMPERATURE.value,
            _SEED.value,
            _LABELS.value,
            _TOP_K.value,
            _COLUMNS.value,
            preset=_PRESET.value,
            steps=_STEPS.value,
            guidance=_GUIDANCE.value,
        )
    except sample_lib.LabelsError as e:
        raise app.UsageError(str(e)) from e


def run():
    """The installed command (pyproject's [project.scripts])."""
    cli.run(main)


if __name__ == "__main__":
    run()
