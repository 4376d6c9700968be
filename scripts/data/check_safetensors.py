"""Validate a safetensors file, or a sharded checkpoint directory, and summarize it.

usage: check_safetensors.py PATH [--expect-count N] [--expect-dtypes F32,I64]

PATH is either a *.safetensors file or a directory holding
model.safetensors.index.json (+ the shards it names) or model.safetensors.
Only the python standard library is used (json + struct).

Checks: header parses, dtypes known, offsets consistent and contiguous, file
size matches; for sharded checkpoints also that the index's weight_map names
exactly the tensors found in the shards and total_size equals the summed
tensor bytes. Prints tensor count, dtype histogram, total bytes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import DTYPE_SIZES, SafetensorsError, numel, read_header  # noqa: E402


def check_file(path: str) -> dict:
    _, tensors, _ = read_header(path)
    return tensors


def check_dir(path: str) -> tuple[dict, list[str]]:
    index = os.path.join(path, "model.safetensors.index.json")
    if not os.path.exists(index):
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(single):
            return check_file(single), [single]
        raise SafetensorsError(f"{path}: neither model.safetensors.index.json nor model.safetensors found")
    with open(index) as f:
        idx = json.load(f)
    wmap = idx.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise SafetensorsError(f"{index}: missing or empty weight_map")
    files = list(dict.fromkeys(wmap.values()))
    tensors: dict = {}
    for fn in files:
        for name, info in check_file(os.path.join(path, fn)).items():
            if name in tensors:
                raise SafetensorsError(f"{path}: tensor {name!r} appears in more than one shard")
            if wmap.get(name) != fn:
                raise SafetensorsError(f"{index}: weight_map says {name!r} -> {wmap.get(name)!r}, found in {fn}")
            tensors[name] = info
    missing = set(wmap) - set(tensors)
    if missing:
        raise SafetensorsError(f"{index}: weight_map names tensors not in any shard: {sorted(missing)[:5]}")
    total = sum(numel(i["shape"]) * DTYPE_SIZES[i["dtype"]] for i in tensors.values())
    declared = idx.get("metadata", {}).get("total_size")
    if declared != total:
        raise SafetensorsError(f"{index}: metadata.total_size={declared}, tensors sum to {total}")
    return tensors, [os.path.join(path, f) for f in files]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--expect-count", type=int)
    ap.add_argument("--expect-dtypes", help="comma-separated set of dtypes that must be exactly the ones present")
    a = ap.parse_args()
    try:
        if os.path.isdir(a.path):
            tensors, files = check_dir(a.path)
        else:
            tensors, files = check_file(a.path), [a.path]
    except (OSError, ValueError, KeyError, TypeError, SafetensorsError) as e:
        print(f"error: {a.path}: invalid checkpoint: {e}", file=sys.stderr)
        return 1
    dtypes = collections.Counter(i["dtype"] for i in tensors.values())
    nbytes = sum(numel(i["shape"]) * DTYPE_SIZES[i["dtype"]] for i in tensors.values())
    params = sum(numel(i["shape"]) for i in tensors.values())
    on_disk = sum(os.path.getsize(f) for f in files)
    print(f"  ok: {a.path}: {len(tensors)} tensors in {len(files)} file(s), "
          f"dtypes {dict(sorted(dtypes.items()))}, {params} elements, "
          f"{nbytes} tensor bytes, {on_disk} bytes on disk")
    if a.expect_count is not None and len(tensors) != a.expect_count:
        print(f"error: {a.path}: expected {a.expect_count} tensors, found {len(tensors)}", file=sys.stderr)
        return 1
    if a.expect_dtypes is not None and set(dtypes) != set(a.expect_dtypes.split(",")):
        print(f"error: {a.path}: expected dtypes {a.expect_dtypes}, found {sorted(dtypes)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
