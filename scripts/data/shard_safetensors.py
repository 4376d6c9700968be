"""Split one safetensors file into N shards + a Hugging Face style index.

usage: shard_safetensors.py SRC.safetensors OUT_DIR [--shards 3] [--extra FILE]...

Writes OUT_DIR/model-0000k-of-0000N.safetensors and
OUT_DIR/model.safetensors.index.json:
  {"metadata": {"total_size": <sum of tensor bytes>}, "weight_map": {name: shard file}}

Tensors keep the source file's data order (by data offset) and are split into
N contiguous runs whose byte sizes are as equal as the tensor sizes allow, in
the least-squares sense (minimum sum of squared shard sizes; one huge
embedding can still make one shard bigger than the others). Every shard gets
at least one tensor. Tensor bytes are copied verbatim, and the
source __metadata__ (e.g. {"format": "pt"}) is repeated in each shard. Shards
are written under a temporary directory that is renamed into place at the end,
so OUT_DIR either is complete or does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import SafetensorsError, build_header, copy_range, read_header  # noqa: E402


def partition(sizes: list[int], k: int) -> list[int]:
    """Cut points for k contiguous non-empty groups minimising the sum of squared group sums.

    Returns the start index of each group. O(k * n^2), fine for a few hundred tensors.
    """
    n = len(sizes)
    if not 1 <= k <= n:
        raise SafetensorsError(f"cannot split {n} tensors into {k} non-empty shards")
    pre = [0]
    for s in sizes:
        pre.append(pre[-1] + s)
    INF = float("inf")
    # best[j][i]: min over splits of the first i items into j groups of sum(group_sum ** 2)
    best = [[INF] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n - (k - j) + 1):
            for s in range(j - 1, i):
                v = best[j - 1][s] + (pre[i] - pre[s]) ** 2
                if v < best[j][i]:
                    best[j][i], cut[j][i] = v, s
    starts = []
    i = n
    for j in range(k, 0, -1):
        i = cut[j][i]
        starts.append(i)
    return starts[::-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out_dir")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--extra", action="append", default=[],
                    help="file to copy into OUT_DIR as well (e.g. config.json); repeatable")
    a = ap.parse_args()

    try:
        metadata, tensors, data_start = read_header(a.src)
    except (OSError, SafetensorsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    order = sorted(tensors, key=lambda nm: tensors[nm]["data_offsets"][0])
    sizes = [tensors[nm]["data_offsets"][1] - tensors[nm]["data_offsets"][0] for nm in order]
    try:
        starts = partition(sizes, a.shards) + [len(order)]
    except SafetensorsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    out = os.path.abspath(a.out_dir)
    tmp = f"{out}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    weight_map: dict[str, str] = {}
    try:
        with open(a.src, "rb") as src:
            for k in range(a.shards):
                names = order[starts[k]:starts[k + 1]]
                fn = f"model-{k + 1:05d}-of-{a.shards:05d}.safetensors"
                entries = [(nm, tensors[nm]["dtype"], tensors[nm]["shape"]) for nm in names]
                header, _ = build_header(entries, metadata)
                with open(os.path.join(tmp, fn), "wb") as dst:
                    dst.write(header)
                    for nm in names:
                        b, e = tensors[nm]["data_offsets"]
                        copy_range(src, dst, data_start + b, e - b)
                nbytes = sum(sizes[starts[k]:starts[k + 1]])
                print(f"  {fn}: {len(names)} tensors, {nbytes} tensor bytes "
                      f"({names[0]} .. {names[-1]})")
                for nm in names:
                    weight_map[nm] = fn
        index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
        for extra in a.extra:
            shutil.copy(extra, os.path.join(tmp, os.path.basename(extra)))
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"  wrote {out} ({a.shards} shards, total_size {sum(sizes)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
