"""Reads a .safetensors file into NumPy arrays, without torch (and without the safetensors package).

The format (https://github.com/huggingface/safetensors): an unsigned little-endian 64-bit header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{...}}``, then the tensors' bytes, little-endian, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from vqvae_tf.convert.errors import ConversionError

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 below
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
MAX_HEADER = 100 * 2**20


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values given as their uint16 bits -> float32 (exact: the high half of a float32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path: str) -> dict:
    """{name: np.ndarray} of the file at `path` (floats as stored, bfloat16 widened to float32).
    Raises ConversionError naming the file and what is wrong with it."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path} is not a safetensors file: it is {size} bytes long.")
        (n,) = struct.unpack("<Q", head)
        if n > min(MAX_HEADER, size - 8):
            raise ConversionError(f"{path} is not a safetensors file: its header length {n} does not fit the file.")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ConversionError(f"{path} is not a safetensors file: its header is not JSON ({e}).") from e
        data = f.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise ConversionError(
                f"{path}: tensor {name} has dtype {entry.get('dtype')!r}, not one of {sorted(_DTYPES)}."
            )
        begin, end = entry["data_offsets"]
        shape = tuple(int(s) for s in entry["shape"])
        want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != want:
            raise ConversionError(
                f"{path}: tensor {name}'s bytes [{begin}, {end}) do not hold its shape {list(shape)}."
            )
        array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<"), count=want // np.dtype(dtype).itemsize,
                              offset=begin).reshape(shape)  # fmt: skip
        out[name] = bfloat16_to_float32(array) if entry["dtype"] == "BF16" else array.copy()
    return out
