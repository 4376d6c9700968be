#!/usr/bin/env python3
"""Pure-Python, line-by-line replica of auto-adpq 0.3.5's lambda' search.

This file is the *specification* the Rust port follows for outlier selection.
It mirrors ``Auto_AdpQ.lasso_outlier_detection``,
``Auto_AdpQ._optimization_function_fast`` and ``Auto_AdpQ._optimization_function``
from auto_adpq/module.py (version 0.3.5) statement by statement, using only
Python floats (IEEE-754 binary64, round-to-nearest-even) and Python ints.
No numpy is used here, so every arithmetic operation is an explicit scalar f64
operation in a fixed order; a Rust port that performs the same operations in
the same order on f64 reproduces lambda' bit-for-bit.

numpy equivalence notes (why the scalar loop matches the vectorized reference):
  * ``np.abs``, ``-``, ``/`` and ``>`` on float64 arrays are elementwise IEEE
    operations, identical to the scalar Python ones.
  * ``np.count_nonzero(mask)`` is an exact integer count; order is irrelevant.
  * ``np.finfo(float).eps`` == 2**-52 == 2.220446049250313e-16.
  * ``np.isclose(a, 0, atol=t)`` (rtol=1e-05 default) evaluates
    ``|a - 0| <= t + 1e-05 * |0|``  i.e. exactly ``a <= t`` for finite a >= 0.
  * ``fx = count - target`` is ``int - float`` -> float(count) - target, exact
    conversion (counts < 2**53).

Quirks of the reference that are reproduced on purpose (see README.md):
  Q1. The fast count replaces |w| == 0 by eps before ``|w| - lam/|w|``, so at
      lam == 0 a zero weight counts as an outlier (eps - 0/eps = eps > 0).  The
      final selection (``_optimization_function``) has NO eps replacement:
      0 - lam/0 is -inf (lam > 0) or nan (lam == 0), never > 0, so exact zeros
      are never selected.  Consequence: with zeros present, f(x0=0) seen by the
      search counts the zeros, which changes the first secant step.
  Q2. Every loop iteration re-evaluates the count at x0, x1 AND x2 (three calls),
      then once more at ``new``: 4 calls per full iteration, 3 in the iteration
      that breaks on the isclose test, plus 2 before the loop.
  Q3. The interpolation-acceptance test ``new < (3*x0 + x1)/4 or new > x1``
      assumes x0 < x1.  Whenever x0 > x1 (after a swap) it is always true, so the
      step is always a bisection.
  Q4. The final ``if abs(fx0) < abs(fx1): x0, x1 = x1, x0`` uses the fx0/fx1
      computed at the *top* of the iteration (stale w.r.t. ``new``/``fnew``) and
      swaps only x0/x1, not fx0/fx1 (harmless: they are recomputed at the top
      of the next iteration).
  Q5. When the loop ends on the step tolerance (|x1 - x0| <= 1e-5, absolute)
      or on ``ite == n_iters``, lambda' is the LAST evaluated ``new`` (not the
      best bracket end x1).  When it ends on the isclose test, lambda' is x0, x1
      or x2, tested in that order.
  Q6. ``d`` starts as None; it is only read when mflag is False, which never
      happens in the first iteration, so it is never used uninitialised.
  Q7. ``new`` is unbound if the loop body never runs (impossible with the
      hard-coded bracket [0, 1e7] since 1e7 > 1e-5) -> UnboundLocalError in the
      reference.  Here: raise.
  Q8. ``assert fx0 * fx1 < 0`` on the initial bracket: fails if fewer than
      alpha*n weights are non-NaN (count(0) <= target) or if at least alpha*n
      weights have w*w > ~1e7 (count(1e7) >= target).
  Q9. No ZeroDivisionError is possible in the inverse-quadratic branch: at the
      top of each iteration fx0 and fx1 have strictly opposite signs (a zero
      would have triggered the isclose break), so fx0 != fx1; the other two
      denominators are guarded by ``fx0 != fx2 and fx1 != fx2``.
  Q10. The branches ``elif (fx1 - fx0) == 0 ...`` are unreachable for the same
      reason (kept for faithfulness).

Usage:
  python3 brent_replica.py [DIR]   # verify every DIR/*.json against DIR/*.f32
(DIR defaults to crates/adpq-core/tests/data/parity relative to the repo root.)
"""

from __future__ import annotations

import json
import os
import struct
import sys

EPS = 2.0**-52  # np.finfo(float).eps


# --------------------------------------------------------------------------
# Count / selection predicates (evaluated in f64)
# --------------------------------------------------------------------------
def count_fast(values: list[float], lam: float) -> int:
    """Replica of ``_optimization_function_fast``: number of w with
    ``a - lam / a > 0`` where a = |w|, and a = eps if |w| == 0."""
    n = 0
    for w in values:
        a = abs(w)
        if a == 0.0:
            a = EPS
        if a - lam / a > 0.0:
            n += 1
    return n


def select_final(values: list[float], lam: float) -> list[int]:
    """Replica of ``_optimization_function``: flat indices i with
    ``|w_i| - lam / |w_i| > 0`` (no eps replacement; |w| == 0 never selected)."""
    out = []
    for i, w in enumerate(values):
        a = abs(w)
        if a == 0.0:
            # numpy: 0 - lam/0 == -inf (lam > 0) or nan (lam == 0): never > 0
            continue
        if a - lam / a > 0.0:
            out.append(i)
    return out


# --------------------------------------------------------------------------
# The lambda' search (lasso_outlier_detection), statement by statement
# --------------------------------------------------------------------------
def lambda_search(count, n_item: int, alpha: float, n_iters: int = 100):
    """Return (lambda_prime, info) where info has 'stop_reason', 'iterations',
    'trace' (list of (lam, count) for every count() call, in call order) and
    'count_evaluations'.

    ``count`` is a function lam -> int (the fast count, with eps replacement).
    """
    trace = []

    def f(lam):
        c = count(lam)
        trace.append((lam, c))
        return c

    x0 = 0.0
    x1 = 1e7

    # Previous points
    prev_n_outlier = f(x0)
    # Initial point
    n_outlier = f(x1)

    ite = 0
    target_outlier = alpha * n_item  # float * int, f64

    fx0, fx1 = prev_n_outlier - target_outlier, n_outlier - target_outlier

    if not ((fx0 * fx1) < 0):  # Q8
        raise AssertionError("Initial points do not bracket the target outlier number.")

    if abs(fx0) < abs(fx1):
        x0, x1 = x1, x0
        prev_n_outlier, n_outlier = n_outlier, prev_n_outlier
        fx0, fx1 = fx1, fx0

    x2, fx2 = x0, fx0

    mflag = True

    tolerance = 1e-5
    tolerance_outliers = 1e-3 * target_outlier

    d = None  # Q6
    new = None  # Q7: unbound in the reference
    stop_reason = None

    while ite < n_iters and abs(x1 - x0) > tolerance:
        fx0 = f(x0)  # Q2: three fresh evaluations every iteration
        fx1 = f(x1)
        fx2 = f(x2)

        fx0 = fx0 - target_outlier
        fx1 = fx1 - target_outlier
        fx2 = fx2 - target_outlier

        # np.isclose(abs(fx), 0, atol=tolerance_outliers)  <=>  abs(fx) <= atol
        if abs(fx0) <= tolerance_outliers:
            new = x0
            stop_reason = "isclose_x0"
            break
        if abs(fx1) <= tolerance_outliers:
            new = x1
            stop_reason = "isclose_x1"
            break
        if abs(fx2) <= tolerance_outliers:
            new = x2
            stop_reason = "isclose_x2"
            break

        if fx0 != fx2 and fx1 != fx2:
            # inverse quadratic interpolation; Python evaluates a*b*c as (a*b)*c
            L0 = (x0 * fx1 * fx2) / ((fx0 - fx1) * (fx0 - fx2))
            L1 = (x1 * fx0 * fx2) / ((fx1 - fx0) * (fx1 - fx2))
            L2 = (x2 * fx1 * fx0) / ((fx2 - fx0) * (fx2 - fx1))
            new = L0 + L1 + L2  # (L0 + L1) + L2
        elif (fx1 - fx0) == 0 and fx1 == 0:  # Q10 unreachable
            new = x1
        elif (fx1 - fx0) == 0:  # Q10 unreachable
            new = x0
        else:
            # secant
            new = x1 - ((fx1 * (x1 - x0)) / (fx1 - fx0))

        # Q3: assumes x0 < x1.  `and`/`or` short-circuit exactly as in Python;
        # d is only read when mflag is False.
        if (
            (new < ((3 * x0 + x1) / 4) or new > x1)
            or (mflag and (abs(new - x1)) >= (abs(x1 - x2) / 2))
            or (not mflag and (abs(new - x1)) >= (abs(x2 - d) / 2))
            or (mflag and (abs(x1 - x2)) < tolerance)
            or (not mflag and (abs(x2 - d)) < tolerance)
        ):
            new = (x0 + x1) / 2
            mflag = True
        else:
            mflag = False

        fnew = f(new)
        fnew = fnew - target_outlier
        d, x2 = x2, x1

        if (fx0 * fnew) < 0:
            x1 = new
        else:
            x0 = new

        if abs(fx0) < abs(fx1):  # Q4: stale fx0/fx1, only x swapped
            x0, x1 = x1, x0

        ite += 1

    if stop_reason is None:
        # reference warns "did not converge" iff ite == n_iters
        stop_reason = "n_iters" if ite == n_iters else "step_tolerance"

    if new is None:  # Q7
        raise UnboundLocalError("new referenced before assignment (loop never ran)")

    # Q5: lambda' is whatever `new` holds now
    return new, {
        "stop_reason": stop_reason,
        "iterations": ite,
        "trace": trace,
        "count_evaluations": len(trace),
    }


def adpq_select(values: list[float], alpha: float, n_iters: int = 100):
    """Full selection: lambda' search with the fast count, then the final
    selection at lambda' (flat indices in input order == sorted)."""
    lam, info = lambda_search(lambda l: count_fast(values, l), len(values), alpha, n_iters)
    return lam, select_final(values, lam), info


# --------------------------------------------------------------------------
# Stand-alone verification of committed vectors (no numpy needed)
# --------------------------------------------------------------------------
def read_f32(path: str) -> list[float]:
    with open(path, "rb") as fh:
        raw = fh.read()
    n = len(raw) // 4
    return list(struct.unpack("<%df" % n, raw))  # f32 -> Python float (exact)


def verify_dir(d: str) -> int:
    bad = 0
    names = sorted(p[:-5] for p in os.listdir(d) if p.endswith(".json"))
    if not names:
        print(f"no vectors in {d}", file=sys.stderr)
        return 1
    for name in names:
        with open(os.path.join(d, name + ".json")) as fh:
            meta = json.load(fh)
        vals = read_f32(os.path.join(d, name + ".f32"))
        assert len(vals) == meta["rows"] * meta["cols"]
        lam, outl, info = adpq_select(vals, meta["alpha"], meta["n_iters"])
        ok = (
            lam == meta["lambda_prime"]
            and outl == meta["outliers"]
            and len(outl) == meta["n_outliers"]
            and info["count_evaluations"] == meta["ref_count_evaluations"]
        )
        bad += not ok
        print(
            f"{'OK ' if ok else 'BAD'} {name}: lambda'={lam!r} "
            f"(ref {meta['lambda_prime']!r}) n_outliers={len(outl)} "
            f"evals={info['count_evaluations']} stop={info['stop_reason']}"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "crates", "adpq-core", "tests", "data", "parity")
    sys.exit(verify_dir(sys.argv[1] if len(sys.argv) > 1 else default))
