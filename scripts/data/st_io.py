"""Minimal, dependency-free safetensors reading/writing helpers.

Format (see the safetensors project's format description):
  8 bytes  little-endian u64 N = header length
  N bytes  UTF-8 JSON: {"__metadata__": {str: str}?, name: {"dtype", "shape", "data_offsets": [begin, end]}}
           (offsets are relative to the start of the data section; we pad the
           JSON with trailing spaces so the data section starts 8-byte aligned)
  rest     raw little-endian tensor bytes, contiguous, no holes

Only the python standard library is used here so that the check/shard steps
work without the private pydeps prefix.
"""

from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, Iterable

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}

MAX_HEADER = 100 * 1024 * 1024  # same sanity limit as the reference implementation


class SafetensorsError(Exception):
    pass


def numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def read_header(path: str) -> tuple[dict, dict, int]:
    """Return (metadata, tensors, data_start). `tensors` preserves JSON order.

    Validates: header length, JSON, dtypes, shape/offset consistency, that the
    tensors tile the data section exactly (no holes, no overlap) and that the
    file size matches.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise SafetensorsError(f"{path}: file too short ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError(f"{path}: bad header length {n} (file is {size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    data_start = 8 + n
    spans = []
    for name, info in header.items():
        dt = info.get("dtype")
        if dt not in DTYPE_SIZES:
            raise SafetensorsError(f"{path}: tensor {name!r} has unknown dtype {dt!r}")
        b, e = info["data_offsets"]
        want = numel(info["shape"]) * DTYPE_SIZES[dt]
        if e - b != want:
            raise SafetensorsError(
                f"{path}: tensor {name!r} {dt}{info['shape']} needs {want} bytes, offsets give {e - b}")
        spans.append((b, e, name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise SafetensorsError(f"{path}: hole/overlap before tensor {name!r} (offset {b}, expected {pos})")
        pos = e
    if data_start + pos != size:
        raise SafetensorsError(f"{path}: data section is {size - data_start} bytes, tensors cover {pos}")
    return metadata, header, data_start


def build_header(entries: list[tuple[str, str, list[int]]], metadata: dict | None = None) -> tuple[bytes, list[tuple[int, int]]]:
    """entries: (name, dtype, shape) in data order. Returns (8-byte len + padded JSON, offsets)."""
    hdr: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise SafetensorsError("__metadata__ must map str -> str")
        hdr["__metadata__"] = metadata
    offsets = []
    pos = 0
    for name, dtype, shape in entries:
        if name in hdr:
            raise SafetensorsError(f"duplicate tensor name {name!r}")
        if dtype not in DTYPE_SIZES:
            raise SafetensorsError(f"unknown dtype {dtype!r} for {name!r}")
        nbytes = numel(shape) * DTYPE_SIZES[dtype]
        hdr[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [pos, pos + nbytes]}
        offsets.append((pos, pos + nbytes))
        pos += nbytes
    js = json.dumps(hdr, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-(8 + len(js))) % 8)  # data section starts 8-byte aligned
    return struct.pack("<Q", len(js)) + js, offsets


def copy_range(src: BinaryIO, dst: BinaryIO, start: int, length: int, chunk: int = 16 << 20) -> None:
    src.seek(start)
    left = length
    while left:
        buf = src.read(min(chunk, left))
        if not buf:
            raise SafetensorsError("unexpected end of file while copying tensor data")
        dst.write(buf)
        left -= len(buf)


def atomic_path(path: str) -> str:
    """Temporary sibling path; callers os.replace() it onto `path` when done."""
    return f"{path}.tmp.{os.getpid()}"
