"""The TFDS backend: any TensorFlow Datasets image dataset by name (``cifar10``, ``svhn_cropped``,
...), honouring ``data_dir`` / ``$TFDS_DATA_DIR``; it needs a network the first time. The fallback:
it claims every name that no other backend claims."""

from __future__ import annotations

import os

import tensorflow as tf

from vqvae_tf.data import idx_files
from vqvae_tf.data.errors import DataError
from vqvae_tf.data.sources.base import Backend, DatasetInfo, register_backend


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # importlib_resources is an undeclared need of tfds 4.9.10
        raise DataError(f"tensorflow_datasets cannot be imported ({e}); pip install -r requirements.txt") from e
    return tfds


def _builder(name: str, data_dir: str | None):
    try:
        return _tfds().builder(name, data_dir=data_dir)
    except DataError:
        raise
    except Exception as e:  # DatasetNotFoundError and friends
        raise DataError(
            f"Unknown dataset {name!r}: neither local IDX files ({', '.join(idx_files.IDX_DATASETS)}) "
            f"nor a TFDS dataset of that name ({type(e).__name__}: {str(e).splitlines()[0]})."
        ) from e


def _download_and_prepare(builder, name: str) -> None:
    """Downloads and prepares a TFDS dataset (as tfds.load would); DataError if that fails, e.g.
    on a machine without internet access."""
    try:
        builder.download_and_prepare()
    except Exception as e:
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and could not be downloaded "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Without internet access, "
            "prepare it on a connected machine and copy its TFDS data directory (--data_dir), or train on "
            "local files: fashion_mnist / mnist IDX files, or a folder of images (--dataset=image_folder --data_dir=DIR)."
        ) from e


@register_backend
class TfdsBackend(Backend):
    name = "tfds"
    fallback = True

    def claims(self, source) -> bool:
        return True

    def info(self, source) -> DatasetInfo:
        builder = _builder(source.name, source.data_dir)
        if not builder.info.splits:  # not prepared here, and TFDS could not fetch its split sizes either
            _download_and_prepare(builder, source.name)
            builder = _builder(source.name, source.data_dir)
        features = builder.info.features
        if "image" not in features:
            raise DataError(f"TFDS dataset {source.name!r} has no 'image' feature; it is not an image dataset.")
        shape = tuple(features["image"].shape)  # None where the size varies: DataSource.info checks
        has_label = "label" in features
        num_classes = features["label"].num_classes if has_label else 0
        names = tuple(features["label"].names) if has_label else ()
        counts = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
        return DatasetInfo(source.name, shape, num_classes, "tfds", counts, names)

    def load_native(self, source, split):
        name, data_dir = source.name, source.data_dir
        builder = _builder(name, data_dir)
        if builder.info.splits and split not in builder.info.splits:  # known once prepared
            raise DataError(
                f"Split {split!r} does not exist for dataset {name!r}; available: {sorted(builder.info.splits)}."
            )
        try:
            ds = _tfds().load(name, split=split, data_dir=data_dir, shuffle_files=False)
        except Exception as e:
            hint = idx_files.missing_message(name, data_dir) if name in idx_files.IDX_DATASETS else ""
            raise DataError(f"tfds.load({name!r}, split={split!r}) failed: {e}. {hint}") from e
        has_label = "label" in builder.info.features
        return ds.map(
            lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32) if has_label else tf.constant(-1)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def fingerprint_key(self, source) -> str:
        return f"{source.name}|tfds|{source.data_dir or os.environ.get('TFDS_DATA_DIR', '')}"
