"""`RunOptions`: how a stage runs (where, on which devices, how often it reports), as opposed to
what it trains (`vqvae_tf.configs`). Every stage and the pipeline take this one type."""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from vqvae_tf.data import DataSource
from vqvae_tf.utils import checks

STRATEGIES = ("default", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass
class RunOptions:
    workdir: str
    dataset: str | None = None  # None: the config's
    data_dir: str | None = None
    image_size: str | tuple | None = None  # N, "H,W" or (H, W); None: the data's own
    channels: int | None = None  # 1 or 3; None: the data's own
    test_fraction: float = 0.1  # image folders without split folders
    skip_corrupt_images: bool = False
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
        if self.dataset is not None:
            self.data_source(self.dataset)  # DataError for a bad image size, channels or fraction
        for name in ("log_every", "checkpoint_every", "eval_batch_size", "num_sample_columns"):
            checks.positive_int(name, getattr(self, name))
        return self

    def data_source(self, default_name: str) -> DataSource:
        """The dataset these options name (`dataset`, else `default_name`), with their data fields."""
        return DataSource(
            self.dataset or default_name,
            self.data_dir,
            self.image_size,
            self.channels,
            self.test_fraction,
            self.skip_corrupt_images,
        )
