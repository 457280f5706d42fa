"""Pack-level aggregation of per-cell SoC (one pass over [T, S], no temporaries).

Per row: min, max and mean cell SoC, the charge the string can deliver before its first cell is
empty ``D = min_i s_i C_i`` and take before its first cell is full ``U = min_i (1 - s_i) C_i``
(Ah), and the usable pack SoC ``D / (D + U)`` (foxBMS, Simscape Battery). SoC is clipped to 0..1
first; a NaN SoC makes the row's outputs NaN. Serial: a few ns per cell-row, and a parallel
kernel would cost seconds of compile time at a cold start.
"""

import numpy as np

from ._jit import kernel


@kernel
def pack_soc_rows(soc, capacity_ah, out_min, out_max, out_mean, out_usable, out_d_ah,
                  out_u_ah):
    """Pack SoC figures of every row of ``soc`` [T, S] (written to the [T] outputs)."""
    n_t, n_s = soc.shape
    for k in range(n_t):
        lo = np.inf
        hi = -np.inf
        acc = 0.0
        d = np.inf
        u = np.inf
        bad = False
        for c in range(n_s):
            s = soc[k, c]
            if s != s:
                bad = True
            s = min(1.0, max(0.0, s))
            lo = min(lo, s)
            hi = max(hi, s)
            acc += s
            d = min(d, s * capacity_ah[c])
            u = min(u, (1.0 - s) * capacity_ah[c])
        if bad or n_s == 0:
            out_min[k] = out_max[k] = out_mean[k] = out_usable[k] = np.nan
            out_d_ah[k] = out_u_ah[k] = np.nan
            continue
        out_min[k] = lo
        out_max[k] = hi
        out_mean[k] = acc / n_s
        out_d_ah[k] = d
        out_u_ah[k] = u
        out_usable[k] = d / (d + u) if d + u > 0.0 else np.nan
