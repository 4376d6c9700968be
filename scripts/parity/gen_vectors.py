#!/usr/bin/env python3
"""Generate AdpQ parity vectors from the reference implementation.

Reference: auto-adpq 0.3.5 (``from auto_adpq import Auto_AdpQ``), imported with
the torch stub in ./torch_stub on PYTHONPATH (run.sh sets this up).

For every case this writes into OUT_DIR:
  <name>.f32        input matrix, raw little-endian f32, row-major (rows x cols)
  <name>.json       parameters + reference results (see README.md)
  <name>.recon.f16  reference reconstruction (reconstruct_weights output),
                    raw little-endian IEEE binary16, row-major; only when the
                    reference reconstruction succeeds.

Inputs are drawn as float32 (fixed seeds, numpy default_rng) and handed to the
reference as an exact float64 copy, so the reference's arithmetic is f64 and
the values are exactly representable in f32.

Every case is also re-derived with brent_replica.py (pure Python); the script
fails if the replica's lambda', outlier set or evaluation trace differ from the
reference in any bit.

Usage: gen_vectors.py [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

import auto_adpq
from auto_adpq import Auto_AdpQ

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import brent_replica  # noqa: E402

assert auto_adpq.__version__ == "0.3.5", auto_adpq.__version__


def _check_pins() -> None:
    # The RNG streams and np.mean's summation are numpy-version dependent;
    # the committed vectors were made with the versions in requirements.txt.
    pins = {}
    with open(os.path.join(HERE, "requirements.txt")) as fh:
        for line in fh:
            line = line.split("#")[0].strip()
            if "==" in line:
                k, v = line.split("==")
                pins[k.strip().lower()] = v.strip()
    if np.__version__ != pins.get("numpy"):
        print(
            f"warning: numpy {np.__version__} != pinned {pins.get('numpy')}; "
            "output may differ from the committed vectors",
            file=sys.stderr,
        )


_check_pins()

DEFAULT_OUT = os.path.join(HERE, "..", "..", "crates", "adpq-core", "tests", "data", "parity")


# (name, rows, cols, group_size, alpha, bits, symmetric, n_iters, generator)
def _gauss(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _student_t3(rng, shape):
    return (rng.standard_t(3, size=shape) * 0.02).astype(np.float32)


def _laplace(rng, shape):
    return rng.laplace(0.0, 0.05, size=shape).astype(np.float32)


def _gauss_small(rng, shape):
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)


def _gauss_with_zeros(rng, shape):
    m = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    zero = rng.random(shape) < 0.08
    neg = rng.random(shape) < 0.5
    m[zero & ~neg] = np.float32(0.0)
    m[zero & neg] = np.float32(-0.0)
    return m


CASES = [
    # name, rows, cols, gs, alpha, bits, symmetric, n_iters, seed, generator
    ("gauss_64x256_g128", 64, 256, 128, 0.06, 4, True, 100, 1001, _gauss),
    ("student_t3_32x512_g128", 32, 512, 128, 0.06, 4, True, 100, 1002, _student_t3),
    ("laplace_48x384_g64", 48, 384, 64, 0.1, 4, True, 100, 1003, _laplace),
    ("gauss_3bit_16x1024_g128", 16, 1024, 128, 0.03, 3, True, 100, 1004, _gauss_small),
    ("gauss_asym_40x256_g128", 40, 256, 128, 0.06, 4, False, 100, 1005, _gauss_small),
    # exact zeros (+0.0 and -0.0): exercises the eps replacement in the fast
    # count (zeros are counted at lambda=0) vs. none in the final selection.
    ("gauss_zeros_32x256_g128", 32, 256, 128, 0.06, 4, True, 100, 1006, _gauss_with_zeros),
    # target 0.05*2048 = 102.4, atol 0.1024: no integer count can satisfy the
    # isclose test, so the search ends on the 1e-5 step tolerance (lambda' is
    # the last evaluated point).
    ("gauss_steptol_16x128_g128", 16, 128, 128, 0.05, 4, True, 100, 1007, _gauss_small),
    # same kind of data with n_iters=4: ends on the iteration limit.
    ("gauss_iters4_16x256_g128", 16, 256, 128, 0.05, 4, True, 4, 1008, _gauss),
]


def run_reference(m64: np.ndarray, gs, alpha, bits, symmetric, n_iters):
    q = Auto_AdpQ(
        group_size=gs,
        alpha=alpha,
        n_iters=n_iters,
        q_bit=bits,
        # data_packing only matters for save/load, but reconstruct_weights
        # refuses odd q_bit when it is on; it never changes the numbers.
        data_packing=False,
        symmetrical_quantization=symmetric,
    )

    trace = []
    finals = []
    orig_fast = q._optimization_function_fast
    orig_final = q._optimization_function

    def fast(matrix, lambda_prime):
        c = orig_fast(matrix, lambda_prime)
        trace.append((float(lambda_prime), int(c)))
        return c

    def final(matrix, lambda_prime):
        finals.append(lambda_prime)
        return orig_final(matrix, lambda_prime)

    q._optimization_function_fast = fast  # instance attrs shadow the methods
    q._optimization_function = final

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(divide="ignore", invalid="ignore"):  # zeros: 0/0, x/0
            res = q.AdpQ_quantize(m64.copy())
    not_converged = any("did not converge" in str(w.message) for w in caught)
    assert len(finals) == 1
    # numpy 2.x: np.count_nonzero returns np.intp, so the Brent arithmetic runs
    # on np.float64 scalars (IEEE binary64, same results as Python floats).
    lam = finals[0]
    assert isinstance(lam, (float, np.floating)) and np.asarray(lam).dtype == np.float64
    lam = float(lam)

    recon, recon_err = None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # reconstruct_weights mutates res.scale in place (0 -> 1); harmless here
            recon = q.reconstruct_weights(res)
    except Exception as e:  # noqa: BLE001  (asymmetric mode: broadcast error)
        recon_err = f"{type(e).__name__}: {e}"

    mask = q._indices_to_bitmask_of_outliers(res.outlier_indices)
    return lam, mask, trace, not_converged, recon, recon_err


def fmt_json(obj: dict) -> str:
    # one key per line, values compact; json floats use repr -> exact round trip
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in obj.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(out_dir: str) -> int:
    os.makedirs(out_dir, exist_ok=True)
    for name, rows, cols, gs, alpha, bits, sym, n_iters, seed, gen in CASES:
        assert cols % gs == 0
        rng = np.random.default_rng(seed)
        m32 = np.ascontiguousarray(gen(rng, (rows, cols)), dtype=np.float32)
        assert m32.dtype == np.float32 and np.all(np.isfinite(m32))
        m64 = m32.astype(np.float64)

        try:
            lam, mask, trace, not_conv, recon, recon_err = run_reference(
                m64, gs, alpha, bits, sym, n_iters
            )
        except Exception as e:  # noqa: BLE001
            print(f"SKIP {name}: reference raised {type(e).__name__}: {e}", file=sys.stderr)
            continue

        flat_mask = mask.reshape(-1)  # reference groups = reshape(-1, gs) of flat
        outliers = [int(i) for i in np.flatnonzero(flat_mask)]

        # independent recomputation of the final predicate (f64, no eps)
        a = np.abs(m64.reshape(-1))
        with np.errstate(divide="ignore", invalid="ignore"):
            pred = (a - lam / a) > 0
        assert outliers == [int(i) for i in np.flatnonzero(pred)], name

        # pure-python replica must match bit for bit
        vals = m64.reshape(-1).tolist()
        r_lam, r_out, info = brent_replica.adpq_select(vals, alpha, n_iters)
        assert r_lam == lam and repr(r_lam) == repr(lam), (name, r_lam, lam)
        assert r_out == outliers, name
        assert info["trace"] == trace, name
        assert (info["stop_reason"] == "n_iters") == not_conv, name

        meta = {
            "name": name,
            "rows": rows,
            "cols": cols,
            "group_size": gs,
            "alpha": alpha,
            "bits": bits,
            "symmetric": sym,
            "n_iters": n_iters,
            "lambda_prime": lam,
            "n_outliers": len(outliers),
            "outliers": outliers,
            "ref_mse": None,
            "ref_count_evaluations": len(trace),
            # extras (informational)
            "seed": seed,
            "generator": gen.__name__.lstrip("_"),
            "target_outliers": alpha * (rows * cols),
            "stop_reason": info["stop_reason"],
            "iterations": info["iterations"],
            "ref_trace": [[l, c] for l, c in trace],
        }
        if recon is not None:
            rec = np.asarray(recon)
            assert rec.dtype == np.float16 and rec.shape == (rows, cols)
            meta["ref_mse"] = float(np.mean((rec.astype(np.float64) - m64) ** 2))
            meta["ref_recon_file"] = name + ".recon.f16"
            rec.astype("<f2").tofile(os.path.join(out_dir, name + ".recon.f16"))
        else:
            meta["ref_reconstruct_error"] = recon_err
        m32.astype("<f4").tofile(os.path.join(out_dir, name + ".f32"))
        with open(os.path.join(out_dir, name + ".json"), "w") as fh:
            fh.write(fmt_json(meta))
        print(
            f"{name}: lambda'={lam!r} n_outliers={len(outliers)} "
            f"ref_mse={meta['ref_mse']!r} evals={len(trace)} stop={info['stop_reason']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT))
