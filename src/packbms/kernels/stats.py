"""Whole-log statistics of the full-rate telemetry, accumulated chunk by chunk in one pass.

The streaming ``analyze`` keeps per-cell voltage minimum, maximum, sum and count, the first and
last rows where every cell has a fresh voltage, and the time each cell's balancing flag was on.
NumPy needs a temporary [T, S] array per figure (``~isnan``, ``flags != 0`` as float64 for a
matrix product); these kernels read each row once. Serial on purpose: they run at memory speed
and a parallel kernel would add compile and load time to every cold start.
"""

import numpy as np

from ._jit import kernel


@kernel
def voltage_stats(volt, stale, v_min, v_max, v_sum, v_n):
    """Fold ``volt`` [T, S] (NaN = none) into the per-cell ``v_min``, ``v_max``, ``v_sum``
    (float64 [S]) and ``v_n`` (int64 [S]), in place.

    Returns ``(first, last)``: the first and last row where no cell is ``stale`` ([T, S] bool),
    -1 when there is none.
    """
    n_t, n_s = volt.shape
    first = -1
    last = -1
    for k in range(n_t):
        fresh = True
        for c in range(n_s):
            x = volt[k, c]
            if x == x:
                if x < v_min[c]:
                    v_min[c] = x
                if x > v_max[c]:
                    v_max[c] = x
                v_sum[c] += x
                v_n[c] += 1
            if stale[k, c]:
                fresh = False
        if fresh:
            if first < 0:
                first = k
            last = k
    return first, last


@kernel
def flag_time(flags, time_s, out_s):
    """Add to ``out_s`` [S] the time (s) each cell's flag in ``flags`` [T, S] was non-zero,
    each row holding until the next row's time (the last row adds nothing)."""
    n_t, n_s = flags.shape
    for k in range(n_t - 1):
        dt = time_s[k + 1] - time_s[k]
        for c in range(n_s):
            if flags[k, c] != 0:
                out_s[c] += dt
