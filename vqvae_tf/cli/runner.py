"""The scripts' process runner: `run(main)` is `app.run` with one-line user errors (exit status 2),
quiet absl logging, and --help in the installed command's name."""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from vqvae_tf.training.checkpoints import CheckpointError
from vqvae_tf.training.loop import TrainingDiverged
from vqvae_tf.utils.commands import as_command_text, command_name, prepare_help
from vqvae_tf.utils.files import WorkdirError

FLAGS = flags.FLAGS


# Errors a user's input or machine causes (bad flags or data, a missing workdir or codes, a full
# disk): a script reports them in one line and exits with status 2, unless asked for the traceback.
USER_ERRORS = (app.UsageError, ValueError, OSError, WorkdirError, CheckpointError, TrainingDiverged)
TRACEBACK_ENV = "VQVAE_TRACEBACK"


def run(main) -> None:
    """`app.run` for a script whose `main()` takes no arguments: stray arguments are a usage
    error, and absl logs warnings and errors only (progress lines go to stdout). A `USER_ERRORS`
    exception ends the script with one line on stderr and exit status 2; ``--verbosity=1`` or
    ``VQVAE_TRACEBACK=1`` shows its traceback instead."""

    def absl_main(argv):
        verbosity = FLAGS.verbosity
        logging.set_verbosity(logging.WARNING)
        try:
            if len(argv) > 1:
                raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
            main()
        except USER_ERRORS as e:
            if verbosity >= 1 or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                raise
            spec = getattr(sys.modules["__main__"], "__spec__", None)
            script = command_name() or (spec.name if spec is not None else os.path.basename(sys.argv[0]))
            text = as_command_text(" ".join(str(e).split()) or type(e).__name__)
            print(f"{script}: error: {text}", file=sys.stderr)
            sys.exit(2)

    prepare_help(main, FLAGS)
    app.run(absl_main)
