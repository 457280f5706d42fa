"""Parameter identification kernels: R0 from current steps, relaxation fits, charge counting.

Conventions as in :mod:`packbms.kernels.ekf`: current positive = discharge, cell voltages [T, S]
with NaN where no fresh value exists, rows in time order. No validation here
(:mod:`packbms.identify` checks inputs).

Fresh samples
-------------
A cell voltage carried on CAN is zero-order held on the current's (faster) time base, so a value
repeated on later rows is one sample, not many. With ``every_row`` False a row is a fresh sample
of a cell when its voltage is finite and differs from the last finite one (as the EKF's
``update_on_change``); the sample was taken between the previous row and this one, so the
current at the sample is taken as the mean of the two rows' currents and the change of the
current between them (``ambiguity``) says how uncertain that is. With ``every_row`` True (bench
data: voltage and current logged together) every finite row is a sample at its own current.
"""

import math

import numba
import numpy as np

from ._jit import kernel


@kernel
def _sample_current(current_a, k, every_row):
    """``(current at the sample, ambiguity)`` for a fresh sample first seen on row ``k``."""
    if every_row or k == 0:
        return current_a[k], 0.0
    return 0.5 * (current_a[k - 1] + current_a[k]), abs(current_a[k] - current_a[k - 1])


@kernel(parallel=True)
def step_pairs(time_s, current_a, volt, temp_c, sensor_of_cell, activation_k, t_ref_k,
               every_row, max_pair_s, min_di_a, steady_frac, count_only, offsets,
               out_di, out_dv, out_t, out_count, width):
    """Pairs of consecutive fresh voltage samples of each cell across a current change.

    A pair ``(a, b)`` of consecutive fresh samples of cell ``c`` counts when ``t_b - t_a <=
    max_pair_s``, ``|dI| >= min_di_a`` with ``dI = I_b - I_a`` the currents at the two samples,
    and both samples' current ambiguity is at most ``steady_frac |dI|``. Stored per pair:
    ``dI f(T)`` (current change times the Arrhenius factor of the cell's temperature sensor at
    ``b``, so that the slope is the resistance at the reference temperature), ``dV = V_b - V_a``
    and the time of ``b``.

    Parameters
    ----------
    time_s, current_a : float64 [T]
    volt : float64 [T, S]
    temp_c : float64 [T, K]
        Sensor temperatures (°C), NaN where stale (the last finite value is held); K = 0
        disables the temperature referral.
    sensor_of_cell : int64 [S]
        Sensor of each cell (-1: no temperature scaling).
    activation_k, t_ref_k : float
        Arrhenius constant and reference temperature (K) of the chemistry.
    every_row : bool
        See the module docstring.
    max_pair_s, min_di_a, steady_frac : float
        Pair selection (above).
    count_only : bool
        First pass: only write ``out_count`` [S]; second pass: also fill the pair arrays at
        ``offsets`` [S + 1] (CSR layout).
    width : int
        Cells per parallel block (each block reads the rows once, in order).
    """
    n_s = volt.shape[1]
    n_blocks = (n_s + width - 1) // width
    for blk in numba.prange(n_blocks):
        _step_block(blk * width, min(n_s, (blk + 1) * width), time_s, current_a, volt, temp_c,
                    sensor_of_cell, activation_k, t_ref_k, every_row, max_pair_s, min_di_a,
                    steady_frac, count_only, offsets, out_di, out_dv, out_t, out_count)


@kernel
def _step_block(c0, c1, time_s, current_a, volt, temp_c, sensor_of_cell, activation_k,
                t_ref_k, every_row, max_pair_s, min_di_a, steady_frac, count_only, offsets,
                out_di, out_dv, out_t, out_count):
    """Cells ``c0..c1-1`` of :func:`step_pairs`, row by row."""
    m = c1 - c0
    last_t = np.full(m, np.nan)
    vl = np.full(m, np.nan)
    has_prev = np.zeros(m, np.bool_)
    tp = np.zeros(m)
    vp = np.zeros(m)
    ip = np.zeros(m)
    ap = np.zeros(m)
    n = np.zeros(m, np.int64)
    use_t = temp_c.shape[1] > 0 and activation_k != 0.0
    for k in range(time_s.shape[0]):
        t = time_s[k]
        i_s, amb = _sample_current(current_a, k, every_row)
        for j in range(m):
            c = c0 + j
            if use_t:
                sensor = sensor_of_cell[c]
                if sensor >= 0:
                    tt = temp_c[k, sensor]
                    if tt == tt:
                        last_t[j] = tt
            v = volt[k, c]
            if v != v:
                continue
            if not every_row and v == vl[j]:
                continue
            vl[j] = v
            if has_prev[j] and t - tp[j] <= max_pair_s:
                di = i_s - ip[j]
                adi = abs(di)
                if adi >= min_di_a and amb <= steady_frac * adi and ap[j] <= steady_frac * adi:
                    if not count_only:
                        f = 1.0
                        if use_t and last_t[j] == last_t[j]:
                            f = math.exp(activation_k * (1.0 / (last_t[j] + 273.15)
                                                         - 1.0 / t_ref_k))
                        pos = offsets[c] + n[j]
                        out_di[pos] = di * f
                        out_dv[pos] = v - vp[j]
                        out_t[pos] = t
                    n[j] += 1
            has_prev[j] = True
            tp[j] = t
            vp[j] = v
            ip[j] = i_s
            ap[j] = amb
    for j in range(m):
        out_count[c0 + j] = n[j]


@kernel
def _median(a):
    return np.median(a)


@kernel(parallel=True)
def robust_slope(offsets, x, y, z_clip, iterations, min_n, out_slope, out_std, out_n):
    """Per group (CSR ``offsets``): slope of ``y = b x`` (through the origin), robustly.

    Starting from the median of ``y / x``, points whose residual exceeds ``z_clip`` robust
    standard deviations (1.4826 MAD) are dropped and the slope refitted by least squares on the
    kept points, ``iterations`` times.
    ``out_std`` is the residual standard deviation over ``sqrt(sum x^2)`` of the kept points;
    groups with fewer than ``min_n`` points give NaN.
    """
    n_g = offsets.shape[0] - 1
    for g in numba.prange(n_g):
        a = offsets[g]
        b = offsets[g + 1]
        m = b - a
        out_slope[g] = np.nan
        out_std[g] = np.nan
        out_n[g] = 0
        if m < min_n:
            continue
        keep = np.ones(m, np.bool_)
        scale = np.nan
        # a robust start (the median ratio), so that wild points cannot steer the first fit
        ratio = np.empty(m)
        nr = 0
        for j in range(m):
            if x[a + j] != 0.0:
                ratio[nr] = y[a + j] / x[a + j]
                nr += 1
        slope = _median(ratio[:nr]) if nr > 0 else np.nan
        for it in range(iterations + 1):
            if it > 0:
                sxx = 0.0
                sxy = 0.0
                for j in range(m):
                    if keep[j]:
                        sxx += x[a + j] * x[a + j]
                        sxy += x[a + j] * y[a + j]
                if sxx <= 0.0:
                    break
                slope = sxy / sxx
            res = np.empty(m)
            for j in range(m):
                res[j] = abs(y[a + j] - slope * x[a + j])
            kept_res = res[keep]
            if kept_res.shape[0] < min_n:
                break
            scale = 1.4826 * _median(kept_res)
            if it == iterations or scale <= 0.0:
                break
            for j in range(m):
                keep[j] = res[j] <= z_clip * scale
        n = 0
        sxx = 0.0
        ss = 0.0
        for j in range(m):
            if keep[j]:
                n += 1
                sxx += x[a + j] * x[a + j]
                r = y[a + j] - slope * x[a + j]
                ss += r * r
        if n >= min_n and sxx > 0.0:
            out_slope[g] = slope
            out_std[g] = math.sqrt(ss / max(n - 1, 1)) / math.sqrt(sxx)
            out_n[g] = n


@kernel
def nominal_step(time_s):
    """Median of (up to 1001 evenly spread) row steps (s); 0 for fewer than two rows."""
    n_t = time_s.shape[0]
    m = min(n_t - 1, 1001)
    if m <= 0:
        return 0.0
    smp = np.empty(m)
    stride = max(1, (n_t - 1) // m)
    for j in range(m):
        kk = min(n_t - 1, 1 + j * stride)
        smp[j] = time_s[kk] - time_s[kk - 1]
    return np.median(smp)


@kernel
def rc_filter(time_s, current_a, taus_s, max_hold_s, dt0, k_start, k_end, state, out):
    """Current through first-order lags of time constants ``taus_s`` [P], carrying ``state``.

    ``state[p]`` is the voltage per ohm (A) of an RC pair of time constant ``taus_s[p]`` and
    unit resistance, i.e. the pair voltage divided by its resistance: the exact zero-order-hold
    step of :mod:`packbms.kernels.ekf` (the previous row's current held for at most
    ``max_hold_s``). The steps *into* rows ``max(k_start, 1) .. k_end - 1`` are taken
    (``state`` is updated in place), and when ``out`` has rows, ``out[k - k_start, p]`` is the
    state on row ``k`` for ``k_start <= k < k_end``.

    ``exp(-dt/tau)`` is evaluated once for the nominal step ``dt0`` (:func:`nominal_step`) and
    corrected by a third-order series for the jitter around it (relative error below 1e-9 per
    step); other steps (gaps) use ``exp`` itself.
    """
    n_p = taus_s.shape[0]
    write = out.shape[0] > 0
    a0 = np.empty(n_p)
    inv = np.empty(n_p)
    tau_min = 1e300
    for p in range(n_p):
        inv[p] = 1.0 / taus_s[p]
        a0[p] = math.exp(-dt0 * inv[p])
        if taus_s[p] < tau_min:
            tau_min = taus_s[p]
    tol = 0.01 * tau_min
    if write and k_start < k_end and k_start == 0:
        for p in range(n_p):
            out[0, p] = state[p]
    for k in range(max(k_start, 1), k_end):
        dt = time_s[k] - time_s[k - 1]
        if dt > 0.0:
            h = dt if dt < max_hold_s else max_hold_s
            i = current_a[k - 1]
            eps = dt - dt0
            if h == dt and abs(eps) < tol:
                for p in range(n_p):
                    x = eps * inv[p]
                    a = a0[p] * (1.0 - x * (1.0 - x * (0.5 - x / 6.0)))
                    state[p] = a * state[p] + i * (1.0 - a)
            else:
                for p in range(n_p):
                    a = math.exp(-dt * inv[p])
                    b = 1.0 if h == dt else math.exp(-(dt - h) * inv[p])
                    state[p] = a * state[p] + i * (b - a)
        if write:
            for p in range(n_p):
                out[k - k_start, p] = state[p]


@kernel(parallel=True)
def relax_sums(k0, k1, current_a, volt, every_row, r0_f_ohm, regress, min_n,
               out_n, out_my, out_mg, out_syy, out_sgy, out_sgg):
    """Centred least-squares sums of every cell's relaxation over rows ``k0..k1-1``.

    Per cell, on its fresh samples ``k``: ``y_k = v_k + R0 f I_k`` (the ohmic drop of what
    current remains removed; ``r0_f_ohm`` [S] is R0 at the rest's temperature) and the
    regressors ``g_k = regress[k - k0, :]`` [G] (RC-pair voltages per ohm, :func:`rc_filter`).
    Written: ``out_n`` [S] samples, means ``out_my`` [S] and ``out_mg`` [S, G], and the centred
    sums ``out_syy`` [S], ``out_sgy`` [S, G], ``out_sgg`` [S, G, G] from which
    :func:`relax_solve` fits ``y = a - sum_p R_p g_p`` for any subset of the columns.
    Cells with fewer than ``min_n`` samples get ``out_n`` = their count and NaN sums.
    """
    n_s = volt.shape[1]
    n_g = regress.shape[1]
    for c in numba.prange(n_s):
        rows = np.empty(k1 - k0, np.int64)
        n = 0
        vl = np.nan
        for k in range(k0, k1):
            v = volt[k, c]
            if v != v:
                continue
            if not every_row and v == vl:
                continue
            vl = v
            rows[n] = k
            n += 1
        out_n[c] = n
        if n < min_n:
            out_my[c] = np.nan
            out_syy[c] = np.nan
            for p in range(n_g):
                out_mg[c, p] = np.nan
                out_sgy[c, p] = np.nan
                for q in range(n_g):
                    out_sgg[c, p, q] = np.nan
            continue
        y = np.empty(n)
        my = 0.0
        for j in range(n):
            k = rows[j]
            i_s, amb = _sample_current(current_a, k, every_row)
            y[j] = volt[k, c] + r0_f_ohm[c] * i_s
            my += y[j]
        my /= n
        mg = np.zeros(n_g)
        for j in range(n):
            k = rows[j] - k0
            for p in range(n_g):
                mg[p] += regress[k, p]
        for p in range(n_g):
            mg[p] /= n
        syy = 0.0
        sgy = np.zeros(n_g)
        sgg = np.zeros((n_g, n_g))
        gc = np.empty(n_g)
        for j in range(n):
            k = rows[j] - k0
            yc = y[j] - my
            syy += yc * yc
            for p in range(n_g):
                gc[p] = regress[k, p] - mg[p]
                sgy[p] += gc[p] * yc
            for p in range(n_g):
                for q in range(p, n_g):
                    sgg[p, q] += gc[p] * gc[q]
        out_my[c] = my
        out_syy[c] = syy
        for p in range(n_g):
            out_mg[c, p] = mg[p]
            out_sgy[c, p] = sgy[p]
            for q in range(p, n_g):
                out_sgg[c, p, q] = sgg[p, q]
                out_sgg[c, q, p] = sgg[p, q]


@kernel(parallel=True)
def relax_solve(n, my, mg, syy, sgy, sgg, cols, out_sse, out_coef):
    """Fit ``y = a - sum_p R_p g_p`` for every cell and every candidate column set.

    ``cols`` [C, P] (P = 1 or 2) lists the regressor columns of each candidate; the sums come
    from :func:`relax_sums`. Written: ``out_sse`` [S, C] residual sum of squares and
    ``out_coef`` [S, C, 1 + P] = ``(a, R_1, .., R_P)``; NaN where the cell has no sums or the
    columns are (nearly) collinear.
    """
    n_s = n.shape[0]
    n_c = cols.shape[0]
    n_p = cols.shape[1]
    for c in numba.prange(n_s):
        for q in range(n_c):
            out_sse[c, q] = np.nan
            for j in range(n_p + 1):
                out_coef[c, q, j] = np.nan
            if syy[c] != syy[c]:
                continue
            if n_p == 1:
                p = cols[q, 0]
                d = sgg[c, p, p]
                if not d > 0.0:
                    continue
                r = -sgy[c, p] / d
                out_sse[c, q] = max(syy[c] - r * r * d, 0.0)
                out_coef[c, q, 1] = r
                out_coef[c, q, 0] = my[c] + r * mg[c, p]
            else:
                p1 = cols[q, 0]
                p2 = cols[q, 1]
                a11 = sgg[c, p1, p1]
                a22 = sgg[c, p2, p2]
                a12 = sgg[c, p1, p2]
                det = a11 * a22 - a12 * a12
                if not (a11 > 0.0 and a22 > 0.0 and det > 1e-10 * a11 * a22):
                    continue
                b1 = -sgy[c, p1]
                b2 = -sgy[c, p2]
                r1 = (a22 * b1 - a12 * b2) / det
                r2 = (a11 * b2 - a12 * b1) / det
                out_sse[c, q] = max(syy[c] - (r1 * b1 + r2 * b2), 0.0)
                out_coef[c, q, 1] = r1
                out_coef[c, q, 2] = r2
                out_coef[c, q, 0] = my[c] + r1 * mg[c, p1] + r2 * mg[c, p2]


@kernel
def cumulative_charge(time_s, current_a, offset_a, eta, max_hold_s, out_ah):
    """Charge discharged since row 0 (Ah) on every row: the held current minus ``offset_a``,
    charging scaled by ``eta`` (coulombic efficiency), as the estimators count it."""
    n_t = time_s.shape[0]
    q = 0.0
    if n_t > 0:
        out_ah[0] = 0.0
    for k in range(1, n_t):
        dt = time_s[k] - time_s[k - 1]
        if dt > 0.0:
            h = dt if dt < max_hold_s else max_hold_s
            i = current_a[k - 1] - offset_a
            if i < 0.0:
                i *= eta
            q += i * h / 3600.0
        out_ah[k] = q


@kernel(parallel=True)
def bleed_charge(time_s, flags, bleed_a, rows, max_hold_s, out_ah):
    """Per cell, charge bled by passive balancing (Ah) up to each of ``rows`` (sorted).

    ``flags`` [T, S] bool are the logged balancing flags, each held until the next row for at
    most ``max_hold_s``; ``out_ah`` [len(rows), S].
    """
    n_t = time_s.shape[0]
    n_s = flags.shape[1]
    n_r = rows.shape[0]
    for c in numba.prange(n_s):
        q = 0.0
        r = 0
        for k in range(n_t):
            while r < n_r and rows[r] == k:
                out_ah[r, c] = q
                r += 1
            if k + 1 < n_t and flags[k, c]:
                dt = time_s[k + 1] - time_s[k]
                if dt > 0.0:
                    q += bleed_a * (dt if dt < max_hold_s else max_hold_s) / 3600.0
        while r < n_r:
            out_ah[r, c] = q
            r += 1
