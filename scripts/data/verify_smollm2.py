"""Sanity-check a converted llama checkpoint by running it: a tiny numpy forward pass.

usage: verify_smollm2.py MODEL_DIR MODEL.gguf [--prompt TEXT] [--expect WORD] [--tokens N]

Loads MODEL_DIR/model.safetensors + config.json (as written by
gguf_to_safetensors.py) and takes the tokenizer (byte-level BPE vocab + merges)
from the GGUF file. Three forward passes over the prompt, all in float32 numpy
(RMSNorm, grouped-query attention, SwiGLU MLP, tied lm_head when there is no
lm_head.weight), differing only in the q/k weights and the rotary convention:

  hf     converted safetensors, Hugging Face rotary (rotate_half: dims i and i+D/2)
  ggml   tensors dequantized straight from the GGUF, ggml/llama.cpp rotary
         (LLAMA_ROPE_TYPE_NORM: adjacent dims 2i and 2i+1) - what llama.cpp runs
  naive  tensors straight from the GGUF with Hugging Face rotary, i.e. what a
         converter that does not undo llama.cpp's q/k permutation would give

The conversion is correct iff hf == ggml (max |logit diff| below --tol); naive
is printed for contrast (it still "works" a bit, since any fixed pairing of
dims is a valid rotary embedding, but its perplexity is worse). Then greedy-
decodes a continuation with the hf model; --expect WORD makes the script fail
unless WORD occurs in it. Needs numpy and gguf, like the converter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read_header  # noqa: E402

import numpy as np  # noqa: E402
import gguf  # noqa: E402


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    def __init__(self, reader: "gguf.GGUFReader"):
        self.tokens = reader.get_field("tokenizer.ggml.tokens").contents()
        merges = reader.get_field("tokenizer.ggml.merges").contents()
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}

    def _bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((parts[i], parts[i + 1]), 1 << 60), i) for i in range(len(parts) - 1)]
            rank, i = min(pairs)
            if rank == 1 << 60:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts

    def encode(self, text: str) -> list[int]:
        # Simplified pre-tokenization (words with their leading space, digits,
        # punctuation) - enough for plain-English prompts.
        out = []
        for piece in re.findall(r" ?[A-Za-z]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", text):
            word = "".join(self.b2u[b] for b in piece.encode("utf-8"))
            for p in self._bpe(word):
                if p not in self.ids:
                    raise SystemExit(f"error: token {p!r} not in vocabulary")
                out.append(self.ids[p])
        return out

    def decode(self, ids: list[int]) -> str:
        s = "".join(self.tokens[i] for i in ids)
        return bytes(self.u2b.get(c, ord("?")) for c in s).decode("utf-8", "replace")


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    _, tensors, start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    w = {}
    for name, info in tensors.items():
        if info["dtype"] != "F32":
            raise SystemExit(f"error: {name}: expected F32, got {info['dtype']}")
        b, e = info["data_offsets"]
        w[name] = mm[start + b:start + e].view("<f4").reshape(info["shape"])
    return w


def load_gguf_raw(reader: "gguf.GGUFReader") -> dict[str, np.ndarray]:
    """GGUF tensors dequantized, HF names and shapes, q/k rows left in GGUF order."""
    from gguf_to_safetensors import hf_name
    from gguf.quants import dequantize
    return {hf_name(t.name)[0]: np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            .reshape([int(d) for d in reversed(list(t.shape))]) for t in reader.tensors}


class Llama:
    def __init__(self, cfg: dict, weights: dict[str, np.ndarray], rope_mode: str):
        self.cfg, self.w, self.rope_mode = cfg, weights, rope_mode
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg["rms_norm_eps"]) * w

    def logits(self, ids: list[int]) -> np.ndarray:
        c = self.cfg
        H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        T = len(ids)
        inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, D, 2, dtype=np.float64) / D))
        ang = np.arange(T)[:, None] * inv_freq[None, :]  # (T, D/2): angle of rotary pair i
        cos = np.cos(ang).astype(np.float32)[:, None, :]
        sin = np.sin(ang).astype(np.float32)[:, None, :]

        def rope(x):  # x: (T, heads, D)
            if self.rope_mode == "hf":  # pair i = (dim i, dim i + D/2)
                x1, x2 = x[..., : D // 2], x[..., D // 2:]
                return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
            # ggml NORM mode: pair i = (dim 2i, dim 2i + 1)
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(x.shape)

        mask = np.triu(np.full((T, T), -np.inf, dtype=np.float32), 1)
        x = self.w["model.embed_tokens.weight"][ids].astype(np.float32)
        for L in range(c["num_hidden_layers"]):
            p = f"model.layers.{L}."
            h = self.rms(x, self.w[p + "input_layernorm.weight"])
            q = rope((h @ self.w[p + "self_attn.q_proj.weight"].T).reshape(T, H, D))
            k = rope((h @ self.w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, D))
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, D)
            k = np.repeat(k, H // KV, axis=1)
            v = np.repeat(v, H // KV, axis=1)
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(D) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = np.einsum("hts,shd->thd", s, v).reshape(T, H * D)
            x = x + a @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
            g = h @ self.w[p + "mlp.gate_proj.weight"].T
            u = h @ self.w[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ self.w[p + "mlp.down_proj.weight"].T
        x = self.rms(x, self.w["model.norm.weight"])
        return x @ self.lm_head.T


def nll(logits: np.ndarray, ids: list[int]) -> float:
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    return float(-np.mean([lp[i, ids[i + 1]] for i in range(len(ids) - 1)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("gguf_path")
    ap.add_argument("--prompt", default="The capital of France is Paris. The capital of Germany is Berlin. "
                                        "The capital of Italy is")
    ap.add_argument("--expect", help="fail unless this string occurs in the greedy continuation")
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--tol", type=float, default=1e-2, help="max |logit difference| between hf and ggml")
    a = ap.parse_args()

    reader = gguf.GGUFReader(a.gguf_path)
    tok = Tokenizer(reader)
    with open(os.path.join(a.model_dir, "config.json")) as f:
        cfg = json.load(f)
    conv = load_safetensors(os.path.join(a.model_dir, "model.safetensors"))
    raw = load_gguf_raw(reader)
    if sorted(conv) != sorted(raw):
        raise SystemExit("error: converted checkpoint and GGUF have different tensor sets")
    ids = tok.encode(a.prompt)
    if len(ids) < 2:
        raise SystemExit("error: prompt too short")
    hf = Llama(cfg, conv, "hf")
    lg = {"hf": hf.logits(ids), "ggml": Llama(cfg, raw, "ggml").logits(ids),
          "naive": Llama(cfg, raw, "hf").logits(ids)}
    diff = float(np.abs(lg["hf"] - lg["ggml"]).max())
    print(f"  prompt: {len(ids)} tokens; mean NLL hf {nll(lg['hf'], ids):.4f}, "
          f"ggml {nll(lg['ggml'], ids):.4f}, naive {nll(lg['naive'], ids):.4f} nats; "
          f"max |logit(hf) - logit(ggml)| = {diff:.2e}")
    out = list(ids)
    logits = lg["hf"]
    for _ in range(a.tokens):
        out.append(int(np.argmax(logits[-1])))
        logits = hf.logits(out)
    cont = tok.decode(out[len(ids):])
    print(f"  greedy: {a.prompt!r} -> {cont!r}")
    if not diff <= a.tol:
        print(f"error: converted checkpoint disagrees with the GGUF under llama.cpp semantics "
              f"(max logit diff {diff:.3g} > {a.tol}); the q/k permutation or name/shape mapping is wrong",
              file=sys.stderr)
        return 1
    if a.expect is not None and a.expect not in cont:
        print(f"error: expected {a.expect!r} in the continuation; the conversion looks wrong", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
