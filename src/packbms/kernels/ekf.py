"""Extended Kalman filter over a series string, batched over cells (one RC pair per cell).

Model (per cell, current ``i`` positive = discharge, :mod:`packbms.cell`)::

    x = [soc, v1]                       (SoC fraction, RC-pair voltage in V)
    soc_k+1 = soc_k - eta(i) i h / (3600 C)              eta(i) = eta if i < 0 else 1
    v1_k+1  = a v1_k + R1 i (b - a)                      a = exp(-dt/tau), b = exp(-(dt-h)/tau)
    v_k     = OCV(soc_k) - R0 i_k - v1_k + noise          (measurement)

``dt`` is the time between two rows and ``h = min(dt, max_hold_s)`` how long the previous row's
current is held (zero-order hold, as the simulator and the CAN sampling assume); after a gap
longer than ``max_hold_s`` the current is taken as zero, which is exact for a logger that stopped
while the car was parked. ``b - a = 1 - a`` when ``h = dt`` (the exact ZOH step of an RC pair).

Filter (Simon, *Optimal State Estimation*, 2006, eqs. 13.47-13.49; Joseph form eq. 5.19)::

    predict:  x- = f(x, i_prev),  P- = F P F^T + Q,   F = [[1, 0], [0, a]]
    update:   H = [dOCV/dsoc(soc-), -1],  S = H P- H^T + R,  K = P- H^T / S
              x+ = x- + K (v - h(x-)),  P+ = (I - K H) P- (I - K H)^T + K R K^T   (then symmetrised)

Noise (the public :class:`packbms.soc.EKFConfig` turns meaningful quantities into these)::

    Q_ss = (h / 3600 C)^2 (q_noise_a2 + q_cap_rel2 i^2) + q_offset_a2 dt / (3600 C^2)
    Q_vv = q_rc_rel2 (f R1 i (b - a))^2
    R    = r_meas_v2 + r_res_rel2 ((f R0 i_k)^2 + (f R1 L_k)^2)

with ``f`` the row's resistance factor (temperature) and ``L_k`` the recent load: |current|
averaged exponentially over ``load_tau_s`` (pack level). The last term stands for the slow
polarisation a one-RC model lacks; it also enters the reported standard deviation::

    std = sqrt(P00 + r_res_rel2 (f R1 L_k)^2 / (dOCV/dsoc)^2)

because that error is correlated over minutes and many updates cannot average it away.

Start: each cell starts on its first row with a voltage (:func:`init_soc`); until then it
outputs the prior. No prediction happens on the starting row.

The OCV table is sampled on a uniform SoC grid (``grid_s0``, ``grid_inv_h``, ``grid_ocv``), so
a lookup is O(1); outside the grid the end segments are extrapolated linearly, and at a knot the
slope of the segment to the right is used, as in :mod:`packbms.kernels.ocv`.

The kernel updates its state arrays in place, so running a log in chunks, carrying the state,
gives bit-for-bit the same result as one call (no quantity depends on where a chunk starts).
fastmath stays off (covariance update).
"""

import math

import numba
import numpy as np

from ._jit import kernel
from .ocv import interp_scalar

#: Fewest cells per parallel work item. A block walks the rows in order with its cells' states in
#: small local arrays and reads one contiguous piece of each [T, S] row; wide blocks stream
#: through memory (measured: 8-cell blocks run at half the speed of 48-cell blocks, from TLB and
#: prefetch misses on the strided rows), so blocks are as wide as the thread count allows.
MIN_CELLS_PER_BLOCK = 8


def block_width(n_cells: int, n_threads: int) -> int:
    """Cells per block for the kernels' ``width``: the cells split evenly over the threads (at
    least :data:`MIN_CELLS_PER_BLOCK`). Any width gives the same numbers."""
    return max(-(-int(n_cells) // max(1, int(n_threads))), MIN_CELLS_PER_BLOCK)


@kernel
def grid_index(s, s0, inv_h, n):
    """Segment index of SoC ``s`` on a uniform grid of ``n`` knots (0..n-2, end segments kept)."""
    u = (s - s0) * inv_h
    if not u > 0.0:            # also NaN
        return 0
    if u >= n - 1:
        return n - 2
    return int(u)


@kernel
def grid_ocv(s, s0, inv_h, grid):
    """OCV (V) at SoC ``s`` from a uniform-grid table, linear extrapolation outside."""
    n = grid.shape[0]
    j = grid_index(s, s0, inv_h, n)
    u = (s - s0) * inv_h - j
    return grid[j] + (grid[j + 1] - grid[j]) * u


@kernel
def grid_slope(s, s0, inv_h, grid):
    """dOCV/dSoC (V per unit SoC) at ``s`` from a uniform-grid table."""
    n = grid.shape[0]
    j = grid_index(s, s0, inv_h, n)
    return (grid[j + 1] - grid[j]) * inv_h


@kernel
def hold_steps(time_s, current_a, t_last, i_last, max_hold_s, out_dt, out_h, out_i):
    """Per row: time since the previous row ``dt``, held time ``h`` and the held current.

    ``t_last``/``i_last`` are the previous chunk's last row (``t_last`` NaN: none, the first row
    gets ``dt = h = 0``). Negative steps (should not happen: telemetry is sorted) count as 0.
    """
    tp = t_last
    ip = i_last
    for k in range(time_s.shape[0]):
        t = time_s[k]
        if tp == tp:
            dt = t - tp
            if not dt > 0.0:
                dt = 0.0
        else:
            dt = 0.0
            ip = 0.0
        h = dt if dt < max_hold_s else max_hold_s
        out_dt[k] = dt
        out_h[k] = h
        out_i[k] = ip
        tp = t
        ip = current_a[k]


#: Initialisation modes (``init_mode``) shared with :mod:`packbms.kernels.coulomb`.
INIT_GIVEN, INIT_AUTO, INIT_OCV = 0, 1, 2
#: ``init_kind`` values per cell: not initialised yet, from the prior, from the OCV.
KIND_PENDING, KIND_GIVEN, KIND_OCV = 0, 1, 2


@kernel
def init_soc(mode, v, i, r0, threshold_a, prior, table_soc, table_ocv):
    """``(kind, soc)`` for a cell's first row with a voltage ``v`` (NaN: stay pending).

    ``INIT_GIVEN`` takes the prior at once; ``INIT_AUTO`` reads the OCV (``v + r0 i``) when
    ``|i| < threshold_a``, else the prior; ``INIT_OCV`` always reads the OCV.
    """
    if mode == INIT_GIVEN:
        return KIND_GIVEN, prior
    if v != v:
        return KIND_PENDING, prior
    if mode == INIT_OCV or abs(i) < threshold_a:
        return KIND_OCV, interp_scalar(v + r0 * i, table_ocv, table_soc)
    return KIND_GIVEN, prior


@kernel
def pack_rows(time_s, current_a, pack_state, max_hold_s, load_tau_s, out_dt, out_h, out_i,
              out_load):
    """Pack-level per-row inputs: ``dt``, held time ``h``, held current and recent load.

    ``pack_state = [t_last, i_last, load]`` of the previous row (NaN: none) is updated in
    place. The load is an exponential average of |current| over ``load_tau_s`` (it starts at
    the first row's |current|).
    """
    hold_steps(time_s, current_a, pack_state[0], pack_state[1], max_hold_s, out_dt, out_h,
               out_i)
    n_t = time_s.shape[0]
    load = pack_state[2]
    if load != load and n_t > 0:
        load = abs(current_a[0])
    for k in range(n_t):
        w = math.exp(-out_dt[k] / load_tau_s)
        load = w * load + (1.0 - w) * abs(out_i[k])
        out_load[k] = load
    if n_t > 0:
        pack_state[0] = time_s[n_t - 1]
        pack_state[1] = current_a[n_t - 1]
        pack_state[2] = load


@kernel(parallel=True)
def ekf_run(time_s, current_a, volt, capacity_ah, r0_ohm, r1_ohm, tau1_s, eta,
            grid_s0, grid_inv_h, grid_ocv_v, table_soc, table_ocv,
            max_hold_s, q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_meas_v2, r_res_rel2,
            load_tau_s, update_on_change, r_factor,
            init_mode, threshold_a, prior_soc, prior_var, ocv_var, rc_var,
            x, P, v_last, init_kind, pack_state, out_soc, out_std, out_updates, width):
    """Run the EKF over rows ``time_s`` for every cell, in place on the state.

    Parameters
    ----------
    time_s, current_a : float64 [T]
        Row times (s, continuing the state's time base) and pack current (A, + = discharge).
    volt : float64 [T, S]
        Cell voltages (V); NaN = no measurement (the update is skipped).
    capacity_ah, r0_ohm, r1_ohm, tau1_s, eta : float64 [S]
        Estimator cell parameters (nominal, not the truth).
    grid_s0, grid_inv_h, grid_ocv_v
        Uniform OCV grid: first SoC knot, 1 / knot spacing, OCV at the knots [n].
    table_soc, table_ocv : float64 [m]
        The OCV table itself (its inverse reads the SoC of an OCV start).
    max_hold_s, q_*, r_*, load_tau_s
        Noise terms (see the module docstring).
    update_on_change : bool
        Update only on rows where a cell's voltage differs from the last one used: a
        zero-order-held voltage repeated on faster current rows is one measurement, and pairing
        it with later currents would be wrong.
    r_factor : float64 [T]
        Multiplier of R0 and R1 on each row (temperature; ones when unknown). The step into
        row k uses row k's factor.
    init_mode, threshold_a, prior_soc [S], prior_var, ocv_var, rc_var
        Start of a cell on its first row with a voltage (:func:`init_soc`): SoC variance
        ``prior_var`` (prior) or ``ocv_var`` (OCV), RC voltage 0 with variance ``rc_var``.
        Until then the cell outputs its prior.
    x : float64 [S, 2]; P : float64 [S, 2, 2]; v_last : float64 [S]; init_kind : int64 [S]
        State, updated in place.
    pack_state : float64 [3]
        ``[t_last, i_last, load]`` of the previous row (NaN: none); updated in place.
    out_soc, out_std : float64 [T, S]
        Written: SoC clipped to 0..1 (the state itself is not clipped) and its 1-sigma.
    out_updates : int64 [S]
        Incremented by the number of measurement updates made per cell.
    width : int
        Cells per parallel block (:func:`block_width`); does not change the results.
    """
    n_t = time_s.shape[0]
    n_s = capacity_ah.shape[0]
    if n_t == 0:
        return
    dts = np.empty(n_t)
    hs = np.empty(n_t)
    ips = np.empty(n_t)
    loads = np.empty(n_t)
    pack_rows(time_s, current_a, pack_state, max_hold_s, load_tau_s, dts, hs, ips, loads)
    # exp(-dt/tau) once per row when every cell has the same tau (nominal parameters)
    shared_tau = True
    for c in range(1, n_s):
        if tau1_s[c] != tau1_s[0]:
            shared_tau = False
    ea = np.empty(n_t if shared_tau else 0)
    eb = np.empty(n_t if shared_tau else 0)
    if shared_tau:
        for k in range(n_t):
            ea[k] = math.exp(-dts[k] / tau1_s[0])
            eb[k] = 1.0 if hs[k] == dts[k] else math.exp(-(dts[k] - hs[k]) / tau1_s[0])
    n_blocks = (n_s + width - 1) // width
    for blk in numba.prange(n_blocks):
        _ekf_block(blk * width, min(n_s, (blk + 1) * width), n_t, dts, hs,
                   ips, loads, shared_tau, ea, eb, current_a, volt, capacity_ah, r0_ohm, r1_ohm,
                   tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v, table_soc, table_ocv,
                   q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_meas_v2, r_res_rel2,
                   update_on_change, r_factor, init_mode, threshold_a, prior_soc, prior_var,
                   ocv_var, rc_var, x, P, v_last, init_kind, out_soc, out_std, out_updates)


@kernel
def _ekf_block(c0, c1, n_t, dts, hs, ips, loads, shared_tau, ea, eb, current_a, volt,
               capacity_ah, r0_ohm, r1_ohm, tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v,
               table_soc, table_ocv, q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_meas_v2,
               r_res_rel2, update_on_change, r_factor, init_mode, threshold_a, prior_soc,
               prior_var, ocv_var, rc_var, x, P, v_last, init_kind, out_soc, out_std,
               out_updates):
    """Cells ``c0..c1-1`` over all rows, row by row (each voltage row is read once, in order).

    The per-cell state lives in small local arrays and is written back at the end.
    """
    m = c1 - c0
    s = np.empty(m)
    v1 = np.empty(m)
    p00 = np.empty(m)
    p01 = np.empty(m)
    p11 = np.empty(m)
    vl = np.empty(m)
    kind = np.empty(m, np.int64)
    n_upd = np.zeros(m, np.int64)
    q_as = np.empty(m)
    q_off = np.empty(m)
    last_dt = np.full(m, -1.0)
    a_c = np.ones(m)
    b_c = np.ones(m)
    for j in range(m):
        c = c0 + j
        s[j] = x[c, 0]
        v1[j] = x[c, 1]
        p00[j] = P[c, 0, 0]
        p01[j] = 0.5 * (P[c, 0, 1] + P[c, 1, 0])
        p11[j] = P[c, 1, 1]
        vl[j] = v_last[c]
        kind[j] = init_kind[c]
        q_as[j] = 1.0 / (3600.0 * capacity_ah[c])
        q_off[j] = q_offset_a2 / (3600.0 * capacity_ah[c] * capacity_ah[c])
    prior_std = math.sqrt(prior_var)
    for k in range(n_t):
        dt = dts[k]
        h = hs[k]
        i = ips[k]
        ik = current_a[k]
        f = r_factor[k]
        ld = loads[k]
        for j in range(m):
            c = c0 + j
            v = volt[k, c]
            skip_update = False
            sj = s[j]
            if kind[j] == KIND_PENDING:
                kd, s0 = init_soc(init_mode, v, ik, r0_ohm[c] * f, threshold_a, prior_soc[c],
                                  table_soc, table_ocv)
                kind[j] = kd
                if kd == KIND_PENDING:
                    out_soc[k, c] = min(1.0, max(0.0, prior_soc[c]))
                    out_std[k, c] = prior_std
                    continue
                sj = s0
                v1[j] = 0.0
                p00[j] = ocv_var if kd == KIND_OCV else prior_var
                p01[j] = 0.0
                p11[j] = rc_var
                # an OCV start used this voltage already; a prior start updates with it
                skip_update = kd == KIND_OCV
                if skip_update:
                    vl[j] = v
            elif dt > 0.0:
                if shared_tau:
                    a = ea[k]
                    b = eb[k]
                else:
                    if dt != last_dt[j]:
                        a_c[j] = math.exp(-dt / tau1_s[c])
                        b_c[j] = 1.0 if h == dt else math.exp(-(dt - h) / tau1_s[c])
                        last_dt[j] = dt
                    a = a_c[j]
                    b = b_c[j]
                i_eff = i * eta[c] if i < 0.0 else i
                sj -= i_eff * h * q_as[j]
                g = r1_ohm[c] * f * i * (b - a)
                v1[j] = a * v1[j] + g
                hq = h * q_as[j]
                p00[j] += hq * hq * (q_noise_a2 + q_cap_rel2 * i * i) + q_off[j] * dt
                p01[j] *= a
                p11[j] = a * a * p11[j] + q_rc_rel2 * g * g
            slope = grid_slope(sj, grid_s0, grid_inv_h, grid_ocv_v)
            r1l = r1_ohm[c] * f * ld
            if not skip_update and v == v and (not update_on_change or v != vl[j]):
                r0k = r0_ohm[c] * f
                pred = grid_ocv(sj, grid_s0, grid_inv_h, grid_ocv_v) - r0k * ik - v1[j]
                rr = r_meas_v2 + r_res_rel2 * ((r0k * ik) * (r0k * ik) + r1l * r1l)
                q00 = p00[j]
                q01 = p01[j]
                q11 = p11[j]
                # P H^T with H = [slope, -1]
                ph0 = q00 * slope - q01
                ph1 = q01 * slope - q11
                sv = slope * ph0 - ph1 + rr
                k0 = ph0 / sv
                k1 = ph1 / sv
                innov = v - pred
                sj += k0 * innov
                v1[j] += k1 * innov
                # Joseph form with A = I - K H = [[1 - k0 slope, k0], [-k1 slope, 1 + k1]]
                a00 = 1.0 - k0 * slope
                a01 = k0
                a10 = -k1 * slope
                a11 = 1.0 + k1
                m00 = a00 * q00 + a01 * q01
                m01 = a00 * q01 + a01 * q11
                m10 = a10 * q00 + a11 * q01
                m11 = a10 * q01 + a11 * q11
                p00[j] = m00 * a00 + m01 * a01 + rr * k0 * k0
                p01[j] = 0.5 * ((m00 * a10 + m01 * a11 + rr * k0 * k1)
                                + (m10 * a00 + m11 * a01 + rr * k1 * k0))
                p11[j] = m10 * a10 + m11 * a11 + rr * k1 * k1
                vl[j] = v
                n_upd[j] += 1
                slope = grid_slope(sj, grid_s0, grid_inv_h, grid_ocv_v)
            s[j] = sj
            out_soc[k, c] = min(1.0, max(0.0, sj))
            # the filter's variance plus the SoC equivalent of the unmodelled polarisation, a
            # correlated error that many updates cannot average away
            out_std[k, c] = math.sqrt(p00[j] + r_res_rel2 * r1l * r1l / (slope * slope))
    for j in range(m):
        c = c0 + j
        x[c, 0] = s[j]
        x[c, 1] = v1[j]
        P[c, 0, 0] = p00[j]
        P[c, 0, 1] = p01[j]
        P[c, 1, 0] = p01[j]
        P[c, 1, 1] = p11[j]
        v_last[c] = vl[j]
        init_kind[c] = kind[j]
        out_updates[c] += n_upd[j]
