"""Convert a llama-architecture GGUF file into an F32 Hugging Face-style safetensors checkpoint.

usage: gguf_to_safetensors.py MODEL.gguf OUT_DIR [--keep-gguf-qk-order]

Needs the `gguf` and `numpy` packages (fetch.sh installs pinned versions into a
private prefix and sets PYTHONPATH). Writes:
  OUT_DIR/config.json        LlamaConfig-style hyperparameters from the GGUF metadata
  OUT_DIR/model.safetensors  every tensor dequantized to F32 (written last, atomically)

Names: GGUF llama names are mapped back to Hugging Face LlamaForCausalLM names
(token_embd.weight -> model.embed_tokens.weight, blk.N.attn_q.weight ->
model.layers.N.self_attn.q_proj.weight, ...). An unknown tensor name is an error.

Shapes: GGUF lists dims innermost-first (ne0 = row length), so the HF row-major
shape is the reverse: e.g. q_proj (out, in) = (576, 576), gate_proj (1536, 576),
down_proj (576, 1536), embed_tokens (vocab, hidden).

Rotary layout of q/k: llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute)
reorders the rows of q_proj/k_proj inside each head from HF's "rotate_half"
layout (first half / second half of head_dim) to the interleaved pair layout
ggml's rope expects:
    w.reshape(n_head, 2, head_dim // 2, in).swapaxes(1, 2).reshape(out, in)
with n_head = num_attention_heads for q and num_key_value_heads for k. We apply
the exact inverse,
    w.reshape(n_head, head_dim // 2, 2, in).swapaxes(1, 2).reshape(out, in)
so q_proj/k_proj rows are in HF order again (verify_smollm2.py checks this by
greedy-decoding a prompt with an HF-convention rotary embedding).
--keep-gguf-qk-order skips the inverse (rows stay in GGUF's interleaved order).

Values: the dequantized weights are exactly the Q4_1/Q8_0 grid values of the
GGUF file (not the original bf16 weights); F32 tensors (norms) are copied as-is.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import build_header, numel  # noqa: E402

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
except ImportError as e:  # pragma: no cover - environment problem
    print(f"error: {e}. Install gguf+numpy (fetch.sh does this into CACHE_DIR/pydeps "
          f"and sets PYTHONPATH)", file=sys.stderr)
    sys.exit(1)

# (gguf suffix in blk.N.<suffix>.weight, HF suffix in model.layers.N.<suffix>.weight, sort key)
BLOCK_MAP = {
    "attn_norm": ("input_layernorm", 0),
    "attn_q": ("self_attn.q_proj", 1),
    "attn_k": ("self_attn.k_proj", 2),
    "attn_v": ("self_attn.v_proj", 3),
    "attn_output": ("self_attn.o_proj", 4),
    "ffn_norm": ("post_attention_layernorm", 5),
    "ffn_gate": ("mlp.gate_proj", 6),
    "ffn_up": ("mlp.up_proj", 7),
    "ffn_down": ("mlp.down_proj", 8),
}
TOP_MAP = {
    "token_embd.weight": ("model.embed_tokens.weight", (-1, 0)),
    "output_norm.weight": ("model.norm.weight", (1 << 30, 0)),
    "output.weight": ("lm_head.weight", (1 << 30, 1)),
}
BLK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def hf_name(gguf_name: str) -> tuple[str, tuple[int, int]]:
    if gguf_name in TOP_MAP:
        return TOP_MAP[gguf_name]
    m = BLK_RE.match(gguf_name)
    if m and m.group(2) in BLOCK_MAP:
        layer = int(m.group(1))
        suffix, order = BLOCK_MAP[m.group(2)]
        return f"model.layers.{layer}.{suffix}.weight", (layer, order)
    raise SystemExit(f"error: don't know the Hugging Face name for GGUF tensor {gguf_name!r}")


def field(reader: "gguf.GGUFReader", key: str, default=None):
    f = reader.get_field(key)
    return default if f is None else f.contents()


def unpermute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    out, inp = w.shape
    if out % n_head or (out // n_head) % 2:
        raise SystemExit(f"error: cannot unpermute a ({out}, {inp}) q/k weight over {n_head} heads")
    return np.ascontiguousarray(
        w.reshape(n_head, out // n_head // 2, 2, inp).swapaxes(1, 2).reshape(out, inp))


def f32_repr(x) -> float:
    """float32 metadata value as the short decimal a human would write (9.99e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf_path")
    ap.add_argument("out_dir")
    ap.add_argument("--keep-gguf-qk-order", action="store_true",
                    help="do not undo llama.cpp's rotary permutation of q/k rows")
    a = ap.parse_args()

    reader = gguf.GGUFReader(a.gguf_path)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"error: {a.gguf_path}: architecture {arch!r} is not supported (only 'llama')")
    p = f"{arch}."
    n_head = int(field(reader, p + "attention.head_count"))
    n_kv = int(field(reader, p + "attention.head_count_kv", n_head))
    hidden = int(field(reader, p + "embedding_length"))
    names = {t.name for t in reader.tensors}
    tied = "output.weight" not in names
    token_embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab = int(field(reader, p + "vocab_size", int(token_embd.shape[1])))

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, p + "feed_forward_length")),
        "num_hidden_layers": int(field(reader, p + "block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": hidden // n_head,
        "max_position_embeddings": int(field(reader, p + "context_length")),
        "rms_norm_eps": f32_repr(field(reader, p + "attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_repr(field(reader, p + "rope.freq_base", 10000.0)),
        "vocab_size": vocab,
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        v = field(reader, f"tokenizer.ggml.{name}_token_id")
        if v is not None:
            config[key] = int(v)
    config["adpq_source"] = {
        "gguf_file": os.path.basename(a.gguf_path),
        "gguf_name": field(reader, "general.name"),
        "gguf_file_type": int(field(reader, "general.file_type", -1)),
        "qk_rotary_rows": "gguf_interleaved" if a.keep_gguf_qk_order else "hf_rotate_half",
        "note": "weights dequantized from the GGUF quantization grid, not the original checkpoint values",
    }

    # Plan: names, HF shapes, order. Header first (sizes are known without dequantizing).
    plan = []
    for t in reader.tensors:
        name, key = hf_name(t.name)
        shape = [int(d) for d in reversed(list(t.shape))]
        if numel(shape) != int(t.n_elements):
            raise SystemExit(f"error: {t.name}: shape {shape} does not match {t.n_elements} elements")
        plan.append((key, name, shape, t))
    plan.sort(key=lambda x: x[0])
    if len({p_[1] for p_ in plan}) != len(plan):
        raise SystemExit("error: two GGUF tensors map to the same Hugging Face name")

    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    metadata = {
        "format": "pt",
        "source": f"{os.path.basename(a.gguf_path)} dequantized to F32 by scripts/data/gguf_to_safetensors.py",
        "qk_rotary_rows": config["adpq_source"]["qk_rotary_rows"],
    }
    header, offsets = build_header([(name, "F32", shape) for _, name, shape, _ in plan], metadata)
    dest = os.path.join(a.out_dir, "model.safetensors")
    tmp = f"{dest}.tmp.{os.getpid()}"
    qtypes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    try:
        with open(tmp, "wb") as out:
            out.write(header)
            for (_, name, shape, t), (b, e) in zip(plan, offsets):
                w = np.asarray(dequantize(t.data, t.tensor_type), dtype="<f4").reshape(shape)
                if not a.keep_gguf_qk_order and t.name.endswith(".attn_q.weight"):
                    w = unpermute_rotary(w, n_head)
                elif not a.keep_gguf_qk_order and t.name.endswith(".attn_k.weight"):
                    w = unpermute_rotary(w, n_kv)
                if not np.isfinite(w).all():
                    raise SystemExit(f"error: {t.name}: non-finite values after dequantization")
                buf = np.ascontiguousarray(w).tobytes()
                if len(buf) != e - b:
                    raise SystemExit(f"error: {name}: wrote {len(buf)} bytes, header says {e - b}")
                out.write(buf)
                kind = re.sub(r"\.\d+\.", ".N.", name)
                qtypes[t.tensor_type.name][kind] += 1
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

    print(f"  wrote {dest}: {len(plan)} F32 tensors, {os.path.getsize(dest)} bytes; "
          f"lm_head {'absent (tied to embed_tokens)' if tied else 'present'}; "
          f"q/k rows {config['adpq_source']['qk_rotary_rows']}")
    for qt, kinds in sorted(qtypes.items()):
        print(f"  GGUF {qt}: {sum(kinds.values())} tensors: "
              + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
