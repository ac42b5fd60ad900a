"""Presets: `get_config(name)` returns a `VQVAEConfig`.

    python -m train.train_vqvae --workdir=/tmp/vq --config=fashion_mnist
    python -m train.train_vqvae --workdir=/tmp/vq --config=cifar10 --dataset=cifar10

`tiny` is for tests (seconds on a CPU).
"""

from __future__ import annotations

import dataclasses

# Fields that define the network; a workdir trained with one value refuses another.
MODEL_FIELDS = (
    "image_shape",
    "num_embeddings",
    "embedding_dim",
    "num_hiddens",
    "num_residual_hiddens",
    "num_residual_layers",
    "downsample",
    "quantizer",
    "likelihood",
)


@dataclasses.dataclass
class VQVAEConfig:
    dataset: str = "fashion_mnist"
    image_shape: tuple = (28, 28, 1)
    num_embeddings: int = 256
    embedding_dim: int = 32
    num_hiddens: int = 64
    num_residual_hiddens: int = 32
    num_residual_layers: int = 2
    downsample: int = 4
    commitment_cost: float = 0.25
    quantizer: str = "ema"  # "vq" (gradient codebook) or "ema" (appendix A.1)
    decay: float = 0.99
    dead_code_threshold: float = 1.0
    kmeans_init: bool = True
    likelihood: str = "mse"  # "mse" (MSE / data variance) or "logistic" (discretized logistic)
    batch_size: int = 128
    steps: int = 6000
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"  # "constant" or "cosine" (decay to 10% over `steps`)
    jit_compile: bool = False

    @property
    def latent_shape(self):
        h, w, _ = self.image_shape
        return (h // self.downsample, w // self.downsample)

    def validate(self) -> "VQVAEConfig":
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) <= 0:
            raise ValueError(f"image_shape must be (H, W, C) with positive sizes, got {self.image_shape}.")
        h, w, _ = self.image_shape
        if h % self.downsample or w % self.downsample:
            raise ValueError(
                f"image size {h}x{w} is not divisible by downsample={self.downsample}; "
                "choose a preset whose image_shape fits the dataset."
            )
        if self.quantizer not in ("vq", "ema"):
            raise ValueError(f"quantizer must be 'vq' or 'ema', got {self.quantizer!r}.")
        if self.likelihood not in ("mse", "logistic"):
            raise ValueError(f"likelihood must be 'mse' or 'logistic', got {self.likelihood!r}.")
        for name in ("num_embeddings", "embedding_dim", "num_hiddens", "num_residual_hiddens", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.num_residual_layers < 0:
            raise ValueError(f"num_residual_layers must be >= 0, got {self.num_residual_layers}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VQVAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"Unknown config fields: {sorted(unknown)}.")
        return cls(**d).validate()


_PRESETS = {
    # 28x28x1 -> 7x7 codes. Small K with EMA codebook, k-means init and dead-code restart
    # keeps every code in use (see BENCHMARKS.md).
    "fashion_mnist": VQVAEConfig(),
    # Sonnet's CIFAR-10 example: 32x32x3 -> 8x8, K=512, D=64, 128 hidden, 32 residual hidden.
    "cifar10": VQVAEConfig(
        dataset="cifar10",
        image_shape=(32, 32, 3),
        num_embeddings=512,
        embedding_dim=64,
        num_hiddens=128,
        num_residual_hiddens=32,
        num_residual_layers=2,
        learning_rate=3e-4,
        batch_size=32,
        steps=10000,
    ),
    # The paper's ImageNet setting: 128x128x3 -> 32x32, K=512, 256 hidden, Adam 2e-4, batch 128.
    "imagenet128": VQVAEConfig(
        dataset="imagenet2012",
        image_shape=(128, 128, 3),
        num_embeddings=512,
        embedding_dim=64,
        num_hiddens=256,
        num_residual_hiddens=256,
        num_residual_layers=2,
        learning_rate=2e-4,
        batch_size=128,
        steps=250_000,
    ),
    # For tests: seconds on a CPU.
    "tiny": VQVAEConfig(
        num_embeddings=16,
        embedding_dim=8,
        num_hiddens=16,
        num_residual_hiddens=8,
        num_residual_layers=1,
        batch_size=16,
        steps=20,
        learning_rate=2e-3,
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def get_config(name: str) -> VQVAEConfig:
    """A fresh copy of preset `name` (one of `PRESET_NAMES`)."""
    if name not in _PRESETS:
        raise ValueError(f"Unknown config preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
    return dataclasses.replace(_PRESETS[name]).validate()
