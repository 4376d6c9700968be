"""Write a Hugging Face tokenizer.json from the GPT-2-style BPE vocabulary in a GGUF file.

usage: gguf_tokenizer.py MODEL.gguf OUT.json

Needs the `gguf` package (fetch.sh installs it into CACHE_DIR/pydeps and sets
PYTHONPATH). Only `tokenizer.ggml.model == "gpt2"` with the pre-tokenizer
`smollm` is supported: llama.cpp splits such text with the regexes
    \\p{N}
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)
which is what the Hugging Face pipeline Digits(individual_digits) followed by
ByteLevel(use_regex, no prefix space) does, so the file uses those.

Tokens: `tokenizer.ggml.tokens` in id order (already in GPT-2's byte-to-unicode
alphabet, e.g. "Ġthe"), `tokenizer.ggml.merges` in rank order. Tokens of type
CONTROL (3) become special added tokens, so "<|im_end|>" in text is one token.
The file is written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import sys

try:
    import gguf
except ImportError as e:  # pragma: no cover - environment problem
    print(f"error: {e}. Install gguf (fetch.sh does this into CACHE_DIR/pydeps)", file=sys.stderr)
    sys.exit(1)

CONTROL = 3  # gguf.TokenType.CONTROL


def field(reader: "gguf.GGUFReader", key: str):
    f = reader.get_field(key)
    if f is None:
        raise SystemExit(f"error: the GGUF file has no {key}")
    return f.contents()


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src, dest = sys.argv[1:]
    reader = gguf.GGUFReader(src)
    model = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        raise SystemExit(f"error: tokenizer {model!r} / pre-tokenizer {pre!r} is not supported "
                         f"(only gpt2 / smollm)")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    if len(types) != len(tokens) or len(set(tokens)) != len(tokens):
        raise SystemExit("error: token list and token types disagree, or a token repeats")

    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }
    tmp = f"{dest}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    print(f"  wrote {dest}: {len(tokens)} tokens, {len(merges)} merges, {len(added)} special")
    return 0


if __name__ == "__main__":
    sys.exit(main())
