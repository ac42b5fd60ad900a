"""Reads the tensors of a PyTorch checkpoint (``torch.save``'s zip format: a PyTorch Lightning
``.ckpt`` or a ``.pt`` / ``.bin`` state dict) into NumPy arrays, without torch and without
running any code from the file.

A checkpoint's ``data.pkl`` is a pickle, and unpickling can call any function the file names.
This reader's unpickler resolves only the names a tensor needs (`_rebuild_tensor_v2`, the storage
types, OrderedDict) to functions of its own; every other name (Lightning's callbacks, OmegaConf
configs, NumPy scalars in hyper-parameters, ...) becomes an inert `Opaque` placeholder that keeps
its arguments and calls nothing. Tensors are read from the zip's ``data/<key>`` records by dtype,
offset, size and stride, bounds-checked.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np

from vqvae_tf.convert.errors import ConversionError
from vqvae_tf.convert.safetensors_file import bfloat16_to_float32

_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class Opaque:
    """What an unknown global of the pickle becomes: it accepts any arguments and state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        return Opaque(*args)

    # What the pickle of a list or dict subclass calls (APPEND, APPENDS, SETITEMS): kept aside.
    def __setitem__(self, key, value):
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("values", []).extend(values)


class _OpaqueClass(Opaque):
    """A placeholder for an unknown class: instances made by NEWOBJ or REDUCE are `Opaque`."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(Opaque)


class _Storage:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, read_record, path):
        super().__init__(file)
        self._read_record = read_record
        self._path = path
        self._cache = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return lambda data, *args: data
        if module == "torch" and name in _STORAGES:
            return _Storage(name, _STORAGES[name])
        return _OpaqueClass

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ConversionError(f"{self._path}: unexpected persistent id {pid!r} (not a tensor storage).")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _Storage):
            raise ConversionError(f"{self._path}: storage {key} has an unsupported type.")
        if key not in self._cache:
            raw = self._read_record(key)
            dtype = np.dtype(storage_type.dtype).newbyteorder("<")
            if len(raw) < numel * dtype.itemsize:
                raise ConversionError(
                    f"{self._path}: storage {key} holds {len(raw)} bytes, fewer than its {numel} values."
                )
            array = np.frombuffer(raw, dtype=dtype, count=numel)
            self._cache[key] = (array, storage_type.name)
        return self._cache[key]

    def _rebuild_tensor(self, storage, offset, size, stride, *unused):
        array, kind = storage
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
        if any(n == 0 for n in size):
            out = np.zeros(size, array.dtype)
        elif offset < 0 or min(stride, default=0) < 0 or last >= array.size:
            raise ConversionError(f"{self._path}: a tensor of shape {list(size)} reaches outside its storage.")
        else:
            view = np.lib.stride_tricks.as_strided(
                array[offset:], shape=size, strides=[s * array.itemsize for s in stride], writeable=False
            )
            out = np.array(view)
        return bfloat16_to_float32(out) if kind == "BFloat16Storage" else out


def read_torch_checkpoint(path: str):
    """The object `torch.load(path)` would give, with tensors as NumPy arrays and anything else
    that is not a dict, list, tuple or plain value as an inert `Opaque`. Raises ConversionError for
    a file that is not torch's zip format (e.g. the pre-1.6 legacy format)."""
    if not zipfile.is_zipfile(path):
        raise ConversionError(
            f"{path} is not a PyTorch zip checkpoint (torch.save's format since PyTorch 1.6); a legacy "
            "checkpoint can be re-saved with torch.save in a PyTorch environment."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise ConversionError(f"{path} has no data.pkl: not a PyTorch checkpoint.")
        prefix = pickles[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).strip() not in (b"little", b""):
            raise ConversionError(f"{path} was saved on a big-endian machine: not supported.")

        def read_record(key):
            try:
                return archive.read(f"{prefix}data/{key}")
            except KeyError as e:
                raise ConversionError(f"{path} has no record data/{key} for a tensor it names.") from e

        with archive.open(pickles[0]) as f:
            try:
                return _Unpickler(f, read_record, path).load()
            except ConversionError:
                raise
            except Exception as e:  # a damaged pickle: name the file, not an unpickler internal
                raise ConversionError(f"{path}: its data.pkl could not be read ({type(e).__name__}: {e}).") from e


def state_dict_of(checkpoint, path: str) -> dict:
    """{key: np.ndarray} of a checkpoint: a Lightning checkpoint's ``state_dict`` or a plain state dict."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"{path} holds no state dict (neither a 'state_dict' entry nor a dict of tensors).")
    return {str(k): v for k, v in state.items() if isinstance(v, np.ndarray)}
