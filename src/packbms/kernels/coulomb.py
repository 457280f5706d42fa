"""Coulomb counting with OCV correction at rest, batched over cells.

Per cell and row (``dt``, ``h`` and the held current ``i`` from
:func:`packbms.kernels.ekf.hold_steps`)::

    soc -= eta(i) i h / (3600 C)                          eta(i) = eta if i < 0 else 1

While the pack rests (``rest_age >= 0`` on a quiet row), each cell's voltage is averaged with an
exponential moving average of time constant ``avg_tau_s`` that restarts when the rest starts.
Once the rest is ``rest_min_s`` old, every further rest row sets ``soc = SoC_OCV(average)``: the
value counting resumes from is the one read at the *end* of the rest, when the cell has relaxed
most (the relaxation-aware part). The variance of the estimate is then (1 sigma)::

    var = var0 + (sigma_offset t / 3600 C)^2 + sigma_noise^2 sum(h^2) / (3600 C)^2
          + (sigma_cap dQ / C)^2

with ``t`` the time and ``dQ`` the charge (Ah) since the last correction (or the start), and
``var0 = (ocv_error_v / dOCV/dsoc)^2`` after a correction (``var0`` = the initial variance
before). Offset and capacity terms grow linearly (they are biases, not white noise).

State per cell (arrays [S], updated in place): ``soc``, ``var0``, ``v_avg`` (NaN: none),
``t_since_s``, ``h2_sum``, ``dq_ah``, ``used`` (1.0 once the current rest corrected the cell),
``n_corr`` (int64, rests used). Chunked runs give the same result as one run.
"""

import math

import numba
import numpy as np

from ._jit import kernel
from .ekf import KIND_OCV, KIND_PENDING, hold_steps, init_soc
from .ocv import interp_scalar, slope_scalar


@kernel(parallel=True)
def coulomb_run(time_s, current_a, volt, rest_age, rest_quiet, capacity_ah, eta, r0_ohm,
                r_factor, table_soc, table_ocv, max_hold_s, rest_min_s, avg_tau_s, q_noise_a2,
                q_offset_a2, q_cap_rel2, ocv_err_v2, init_mode, threshold_a, prior_soc,
                prior_var, ocv_var, soc, var0, v_avg, t_since_s, h2_sum, dq_ah, used, n_corr,
                init_kind, pack_state, out_soc, out_std, width):
    """Coulomb counting with OCV correction at rest; state arrays updated in place.

    Parameters
    ----------
    time_s, current_a : float64 [T]
    volt : float64 [T, S]
        Cell voltages (V), NaN where stale.
    rest_age : float64 [T]; rest_quiet : bool [T]
        From :func:`packbms.kernels.rest.rest_age` (-1: not at rest; rows of a rest that are
        not quiet, a brief current excursion, neither feed the average nor correct).
    capacity_ah, eta, r0_ohm : float64 [S]
    r_factor : float64 [T]
        Resistance multiplier per row (only used for the R0 drop of an OCV start).
    table_soc, table_ocv : float64 [n]
        OCV table (its inverse reads SoC from an averaged rest voltage).
    max_hold_s, rest_min_s, avg_tau_s : float
    q_noise_a2, q_offset_a2, q_cap_rel2, ocv_err_v2 : float
        Variances: current noise (A^2), current offset (A^2), relative capacity error, OCV
        reading error (V^2).
    init_mode, threshold_a, prior_soc [S], prior_var, ocv_var
        Start of each cell on its first row with a voltage, as for the EKF
        (:func:`packbms.kernels.ekf.init_soc`); until then the cell outputs its prior.
    soc, var0, v_avg, t_since_s, h2_sum, dq_ah, used : float64 [S]; n_corr, init_kind : int64 [S]
        State (see the module docstring).
    pack_state : float64 [2]
        ``[t_last, i_last]`` (as for the EKF).
    out_soc, out_std : float64 [T, S]
        Written: SoC clipped to 0..1 and its standard deviation.
    width : int
        Cells per parallel block (:func:`packbms.kernels.ekf.block_width`).
    """
    n_t = time_s.shape[0]
    n_s = capacity_ah.shape[0]
    if n_t == 0:
        return
    dts = np.empty(n_t)
    hs = np.empty(n_t)
    ips = np.empty(n_t)
    hold_steps(time_s, current_a, pack_state[0], pack_state[1], max_hold_s, dts, hs, ips)
    alpha = np.empty(n_t)
    for k in range(n_t):
        alpha[k] = 1.0 - math.exp(-dts[k] / avg_tau_s)
    n_blocks = (n_s + width - 1) // width
    for blk in numba.prange(n_blocks):
        _coulomb_block(blk * width, min(n_s, (blk + 1) * width), n_t, dts,
                       hs, ips, alpha, current_a, volt, rest_age, rest_quiet, capacity_ah, eta,
                       r0_ohm, r_factor, table_soc, table_ocv, rest_min_s, q_noise_a2,
                       q_offset_a2, q_cap_rel2, ocv_err_v2, init_mode, threshold_a, prior_soc,
                       prior_var, ocv_var, soc, var0, v_avg, t_since_s, h2_sum, dq_ah, used,
                       n_corr, init_kind, out_soc, out_std)
    pack_state[0] = time_s[n_t - 1]
    pack_state[1] = current_a[n_t - 1]


@kernel
def _coulomb_block(c0, c1, n_t, dts, hs, ips, alpha, current_a, volt, rest_age, rest_quiet,
                   capacity_ah, eta, r0_ohm, r_factor, table_soc, table_ocv, rest_min_s,
                   q_noise_a2, q_offset_a2, q_cap_rel2, ocv_err_v2, init_mode, threshold_a,
                   prior_soc, prior_var, ocv_var, soc, var0, v_avg, t_since_s, h2_sum, dq_ah,
                   used, n_corr, init_kind, out_soc, out_std):
    """Cells ``c0..c1-1`` row by row (state in small local arrays, written back at the end)."""
    # explicit loops, not slices: slice copies cost seconds of compile time
    m = c1 - c0
    s = np.empty(m)
    va = np.empty(m)
    ts = np.empty(m)
    h2 = np.empty(m)
    dq = np.empty(m)
    u = np.empty(m)
    v0 = np.empty(m)
    nc = np.empty(m, np.int64)
    kind = np.empty(m, np.int64)
    for j in range(m):
        c = c0 + j
        s[j] = soc[c]
        va[j] = v_avg[c]
        ts[j] = t_since_s[c]
        h2[j] = h2_sum[c]
        dq[j] = dq_ah[c]
        u[j] = used[c]
        v0[j] = var0[c]
        nc[j] = n_corr[c]
        kind[j] = init_kind[c]
    prior_std = math.sqrt(prior_var)
    for k in range(n_t):
        dt = dts[k]
        h = hs[k]
        i = ips[k]
        age = rest_age[k]
        at_rest = age >= 0.0 and rest_quiet[k]
        for j in range(m):
            c = c0 + j
            cap = capacity_ah[c]
            dtj = dt
            if kind[j] == KIND_PENDING:
                kd, s0 = init_soc(init_mode, volt[k, c], current_a[k], r0_ohm[c] * r_factor[k],
                                  threshold_a, prior_soc[c], table_soc, table_ocv)
                kind[j] = kd
                if kd == KIND_PENDING:
                    out_soc[k, c] = min(1.0, max(0.0, prior_soc[c]))
                    out_std[k, c] = prior_std
                    continue
                s[j] = s0
                v0[j] = ocv_var if kd == KIND_OCV else prior_var
                ts[j] = 0.0
                h2[j] = 0.0
                dq[j] = 0.0
                dtj = 0.0
            if dtj > 0.0:
                i_eff = i * eta[c] if i < 0.0 else i
                s[j] -= i_eff * h / (3600.0 * cap)
                ts[j] += dtj
                h2[j] += h * h
                dq[j] += i_eff * h / 3600.0
            if at_rest:
                v = volt[k, c]
                if age == 0.0:
                    va[j] = v
                    u[j] = 0.0
                elif v == v:
                    if va[j] == va[j]:
                        va[j] += alpha[k] * (v - va[j])
                    else:
                        va[j] = v
                if age >= rest_min_s and va[j] == va[j]:
                    s[j] = interp_scalar(va[j], table_ocv, table_soc)
                    slope = slope_scalar(s[j], table_soc, table_ocv)
                    v0[j] = ocv_err_v2 / (slope * slope)
                    ts[j] = 0.0
                    h2[j] = 0.0
                    dq[j] = 0.0
                    if u[j] == 0.0:
                        nc[j] += 1
                        u[j] = 1.0
            q_as = 1.0 / (3600.0 * cap)
            var = (v0[j] + (ts[j] * q_as) ** 2 * q_offset_a2 + q_noise_a2 * h2[j] * q_as * q_as
                   + q_cap_rel2 * (dq[j] / cap) ** 2)
            out_soc[k, c] = min(1.0, max(0.0, s[j]))
            out_std[k, c] = math.sqrt(var)
    for j in range(m):
        c = c0 + j
        soc[c] = s[j]
        v_avg[c] = va[j]
        t_since_s[c] = ts[j]
        h2_sum[c] = h2[j]
        dq_ah[c] = dq[j]
        used[c] = u[j]
        var0[c] = v0[j]
        n_corr[c] = nc[j]
        init_kind[c] = kind[j]
