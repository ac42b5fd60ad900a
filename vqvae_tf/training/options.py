"""`RunOptions`: how a stage runs (where, on which devices, how often it reports), as opposed to
what it trains (`vqvae_tf.configs`). Every stage and the pipeline take this one type."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from vqvae_tf.data import DataSource
from vqvae_tf.utils import checks

STRATEGIES = ("default", "mirrored", "multi_worker")
# "auto": bf16 where the CPU has it and a probe of the stage's step shows it faster (training.precision).
MIXED_PRECISION = ("none", "auto", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class RunOptions:
    workdir: str
    # The data flags; a source without a name is the config's dataset (`data_source`).
    data: DataSource = dataclasses.field(default_factory=DataSource)
    strategy: str | tf.distribute.Strategy = "default"
    mixed_precision: str = "none"
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 500
    flags_text: str | None = None  # written to the stage's flags.txt (absl flagfile format)
    eval_batch_size: int = 500
    num_sample_columns: int = 10

    def validate(self) -> "RunOptions":
        """Checks the values a stage reads; the strategy is checked where it is made (loop.make_strategy)."""
        checks.one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if not isinstance(self.data, DataSource):
            raise TypeError(f"RunOptions.data must be a DataSource, got {type(self.data).__name__}.")
        for name in ("log_every", "checkpoint_every", "eval_batch_size", "num_sample_columns"):
            checks.positive_int(name, getattr(self, name))
        return self

    def data_source(self, default_name: str) -> DataSource:
        """The dataset these options name (`data.name`, else `default_name`), with their data fields."""
        return self.data.named(default_name)
