"""Extended Kalman filter over a series string, batched over cells (one RC pair per cell), and
its Rauch-Tung-Striebel smoother.

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
              x+ = x- + K (v - h(x-)),  P+ = (I - K H) P- (I - K H)^T + K R K^T
              (then symmetrised)

Noise (the public :class:`packbms.soc.EKFConfig` turns meaningful quantities into these)::

    Q_ss = (h / 3600 C)^2 (q_noise_a2 + q_cap_rel2 i^2) + q_offset_a2 dt / (3600 C^2)
    Q_vv = q_rc_rel2 (f R1 i (b - a))^2
    R    = r_meas_v2 + r_res_rel2 ((f R0 i_k)^2 + (f R1 L_k)^2)

with ``f`` the row's resistance factor (temperature) and ``L_k`` the recent load: |current|
averaged exponentially over ``load_tau_s`` (pack level). The last term stands for the slow
polarisation a one-RC model lacks; it also enters the reported standard deviation::

    std = sqrt(P00 + r_res_rel2 (f R1 L_k)^2 / (dOCV/dsoc)^2)

because that error is correlated over minutes and many updates cannot average it away.

Correlated OCV error: the OCV table's own error (variance ``ocv_err_v2``) sits in every
measurement for about ``ocv_err_time_s``; treating each update as independent would let
thousands of samples on a flat OCV (LFP) make the filter over-confident. Each update adds::

    R += ocv_err_v2 * max(1, ocv_err_time_s / dt_u)

with ``dt_u`` the time since the cell's previous update (per-cell state ``t_update``), so the
updates within one correlation time together carry the information of one measurement with
that error (the standard treatment of a correlated error as white noise of the same
information rate).

Offline smoothing (:func:`rts_smooth`): the forward run can record the filtered state of each
cell at its start and after every update (``rec_*`` arrays, 48 bytes per update); the backward
Rauch-Tung-Striebel pass replays the predictions between two records from the earlier one (the
same arithmetic as the filter, :func:`_predict`), so nothing is stored per row.

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
            x, P, v_last, init_kind, pack_state, out_at, out_soc, out_std, out_updates, width,
            ocv_err_v2=0.0, ocv_err_time_s=600.0, t_update=None,
            rec_off=None, rec_row=None, rec_x=None, rec_p=None, rec_n=None):
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
    out_at : int64 [T]
        Output row of each input row, -1 where none: the filter runs on every row but writes
        only the rows a caller keeps (a 100 Hz drive stored at 10 Hz
        writes a tenth of the outputs and skips their OCV slopes).
    out_soc, out_std : float64 [R, S]
        Written at the rows ``out_at`` names: SoC clipped to 0..1 (the state itself is not
        clipped) and its 1-sigma.
    out_updates : int64 [S]
        Incremented by the number of measurement updates made per cell.
    width : int
        Cells per parallel block (:func:`block_width`); does not change the results.
    ocv_err_v2, ocv_err_time_s
        Variance (V^2) of the OCV model's error and the time (s) over which it stays correlated
        (module docstring, "Correlated OCV error"); 0 disables the term.
    t_update : float64 [S] or None
        Time of each cell's last update (NaN: none), updated in place (part of the state when
        ``ocv_err_v2 > 0``).
    rec_off, rec_row, rec_x, rec_p, rec_n
        Optional record of the filtered state for :func:`rts_smooth`: cell ``c`` writes its
        ``j``-th record at ``rec_off[c] + j`` (row ``rec_row``, ``x`` [2] in ``rec_x``, ``P``
        as ``(P00, P01, P11)`` in ``rec_p``) on its starting row and after every measurement
        update; ``rec_n[c]`` counts them. Capacity per cell: :func:`record_capacity`.
    """
    n_t = time_s.shape[0]
    n_s = capacity_ah.shape[0]
    if n_t == 0:
        return
    if t_update is None:
        t_upd = np.full(n_s, np.nan)
    else:
        t_upd = t_update
    if rec_off is None:
        r_off = np.zeros(n_s + 1, np.int64)
        r_row = np.zeros(0, np.int64)
        r_x = np.zeros((0, 2))
        r_p = np.zeros((0, 3))
        r_n = np.zeros(n_s, np.int64)
        record = False
    else:
        r_off = rec_off
        r_row = rec_row
        r_x = rec_x
        r_p = rec_p
        r_n = rec_n
        record = True
    dts = np.empty(n_t)
    hs = np.empty(n_t)
    ips = np.empty(n_t)
    loads = np.empty(n_t)
    pack_rows(time_s, current_a, pack_state, max_hold_s, load_tau_s, dts, hs, ips, loads)
    shared_tau, ea, eb = _shared_decay(tau1_s, dts, hs)
    n_blocks = (n_s + width - 1) // width
    for blk in numba.prange(n_blocks):
        _ekf_block(blk * width, min(n_s, (blk + 1) * width), n_t, time_s, dts, hs,
                   ips, loads, shared_tau, ea, eb, current_a, volt, capacity_ah, r0_ohm, r1_ohm,
                   tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v, table_soc, table_ocv,
                   q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_meas_v2, r_res_rel2,
                   update_on_change, r_factor, init_mode, threshold_a, prior_soc, prior_var,
                   ocv_var, rc_var, ocv_err_v2, ocv_err_time_s, x, P, v_last, init_kind,
                   t_upd, out_at, out_soc, out_std, out_updates, record, r_off, r_row, r_x,
                   r_p, r_n)


@kernel
def _shared_decay(tau1_s, dts, hs):
    """``exp(-dt/tau)`` (and the hold factor) once per row when every cell shares tau."""
    n_s = tau1_s.shape[0]
    n_t = dts.shape[0]
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
    return shared_tau, ea, eb


@kernel
def _predict(sj, v1j, p00, p01, p11, i, h, dt, a, b, eta_c, q_as, q_off, r1f, q_noise_a2,
             q_cap_rel2, q_rc_rel2):
    """One prediction step of one cell (state and covariance); ``r1f`` = R1 times the row's
    resistance factor. Shared by the filter and the smoother's replay (identical numbers)."""
    i_eff = i * eta_c if i < 0.0 else i
    sj -= i_eff * h * q_as
    g = r1f * i * (b - a)
    v1j = a * v1j + g
    hq = h * q_as
    p00 += hq * hq * (q_noise_a2 + q_cap_rel2 * i * i) + q_off * dt
    p01 *= a
    p11 = a * a * p11 + q_rc_rel2 * g * g
    return sj, v1j, p00, p01, p11


@kernel
def _ekf_block(c0, c1, n_t, time_s, dts, hs, ips, loads, shared_tau, ea, eb, current_a, volt,
               capacity_ah, r0_ohm, r1_ohm, tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v,
               table_soc, table_ocv, q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_meas_v2,
               r_res_rel2, update_on_change, r_factor, init_mode, threshold_a, prior_soc,
               prior_var, ocv_var, rc_var, ocv_err_v2, ocv_err_time_s, x, P, v_last, init_kind,
               t_update, out_at, out_soc, out_std, out_updates, record, rec_off, rec_row, rec_x,
               rec_p, rec_n):
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
    tu = np.empty(m)
    kind = np.empty(m, np.int64)
    n_upd = np.zeros(m, np.int64)
    q_as = np.empty(m)
    q_off = np.empty(m)
    last_dt = np.full(m, -1.0)
    a_c = np.ones(m)
    b_c = np.ones(m)
    n_rec = np.zeros(m, np.int64)
    for j in range(m):
        c = c0 + j
        s[j] = x[c, 0]
        v1[j] = x[c, 1]
        p00[j] = P[c, 0, 0]
        p01[j] = 0.5 * (P[c, 0, 1] + P[c, 1, 0])
        p11[j] = P[c, 1, 1]
        vl[j] = v_last[c]
        tu[j] = t_update[c]
        kind[j] = init_kind[c]
        q_as[j] = 1.0 / (3600.0 * capacity_ah[c])
        q_off[j] = q_offset_a2 / (3600.0 * capacity_ah[c] * capacity_ah[c])
        if record:
            n_rec[j] = rec_n[c]
    prior_std = math.sqrt(prior_var)
    for k in range(n_t):
        dt = dts[k]
        h = hs[k]
        i = ips[k]
        ik = current_a[k]
        f = r_factor[k]
        ld = loads[k]
        tk = time_s[k]
        o = out_at[k]
        for j in range(m):
            c = c0 + j
            v = volt[k, c]
            skip_update = False
            started = False
            sj = s[j]
            if kind[j] == KIND_PENDING:
                kd, s0 = init_soc(init_mode, v, ik, r0_ohm[c] * f, threshold_a, prior_soc[c],
                                  table_soc, table_ocv)
                kind[j] = kd
                if kd == KIND_PENDING:
                    if o >= 0:
                        out_soc[o, c] = min(1.0, max(0.0, prior_soc[c]))
                        out_std[o, c] = prior_std
                    continue
                started = True
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
                sj, v1[j], p00[j], p01[j], p11[j] = _predict(
                    sj, v1[j], p00[j], p01[j], p11[j], i, h, dt, a, b, eta[c], q_as[j],
                    q_off[j], r1_ohm[c] * f, q_noise_a2, q_cap_rel2, q_rc_rel2)
            r1l = r1_ohm[c] * f * ld
            updated = False
            if not skip_update and v == v and (not update_on_change or v != vl[j]):
                slope = grid_slope(sj, grid_s0, grid_inv_h, grid_ocv_v)
                r0k = r0_ohm[c] * f
                pred = grid_ocv(sj, grid_s0, grid_inv_h, grid_ocv_v) - r0k * ik - v1[j]
                rr = r_meas_v2 + r_res_rel2 * ((r0k * ik) * (r0k * ik) + r1l * r1l)
                if ocv_err_v2 > 0.0:
                    # correlated OCV error: the updates within its correlation time share it
                    since = tk - tu[j]
                    if since == since and since < ocv_err_time_s:
                        rr += ocv_err_v2 * ocv_err_time_s / max(since, 1e-3)
                    else:
                        rr += ocv_err_v2
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
                tu[j] = tk
                n_upd[j] += 1
                updated = True
            s[j] = sj
            if record and (updated or started):
                pos = rec_off[c] + n_rec[j]
                rec_row[pos] = k
                rec_x[pos, 0] = sj
                rec_x[pos, 1] = v1[j]
                rec_p[pos, 0] = p00[j]
                rec_p[pos, 1] = p01[j]
                rec_p[pos, 2] = p11[j]
                n_rec[j] += 1
            if o >= 0:
                slope = grid_slope(sj, grid_s0, grid_inv_h, grid_ocv_v)
                out_soc[o, c] = min(1.0, max(0.0, sj))
                # the filter's variance plus the SoC equivalent of the unmodelled polarisation,
                # a correlated error that many updates cannot average away
                out_std[o, c] = math.sqrt(p00[j] + r_res_rel2 * r1l * r1l / (slope * slope))
    for j in range(m):
        c = c0 + j
        x[c, 0] = s[j]
        x[c, 1] = v1[j]
        P[c, 0, 0] = p00[j]
        P[c, 0, 1] = p01[j]
        P[c, 1, 0] = p01[j]
        P[c, 1, 1] = p11[j]
        v_last[c] = vl[j]
        t_update[c] = tu[j]
        init_kind[c] = kind[j]
        out_updates[c] += n_upd[j]
        if record:
            rec_n[c] = n_rec[j]


@kernel(parallel=True)
def record_capacity(time_s, volt, init_kind, update_on_change, v_last, out_count, width):
    """Upper bound of the records a cell writes in :func:`ekf_run` over these rows.

    One per row with a finite voltage that differs from the previous finite one (all finite
    rows without ``update_on_change``), plus one for the start when the cell has not started
    (``init_kind`` 0). Written to ``out_count`` [S]; ``width`` cells per parallel block (rows
    are read once per block, in order).
    """
    n_t = volt.shape[0]
    n_s = volt.shape[1]
    n_blocks = (n_s + width - 1) // width
    for blk in numba.prange(n_blocks):
        c0 = blk * width
        c1 = min(n_s, c0 + width)
        m = c1 - c0
        n = np.zeros(m, np.int64)
        last = np.empty(m)
        for j in range(m):
            n[j] = 1 if init_kind[c0 + j] == KIND_PENDING else 0
            last[j] = v_last[c0 + j]
        for k in range(n_t):
            for j in range(m):
                v = volt[k, c0 + j]
                if v == v and (not update_on_change or v != last[j]):
                    n[j] += 1
                    last[j] = v
        for j in range(m):
            out_count[c0 + j] = n[j]


@kernel
def merge_records(src_off, src_n, src_row, src_x, src_p, row_offset, dst_next, dst_row, dst_x,
                  dst_p):
    """Append one chunk's records (laid out by cell as :func:`ekf_run` writes them: cell ``c``
    at ``src_off[c]``, ``src_n[c]`` of them) to the whole drive's, cell ``c`` continuing at
    ``dst_next[c]`` (advanced in place); rows are shifted by ``row_offset``."""
    n_s = src_n.shape[0]
    for c in range(n_s):
        a = src_off[c]
        d = dst_next[c]
        for j in range(src_n[c]):
            dst_row[d + j] = src_row[a + j] + row_offset
            dst_x[d + j, 0] = src_x[a + j, 0]
            dst_x[d + j, 1] = src_x[a + j, 1]
            dst_p[d + j, 0] = src_p[a + j, 0]
            dst_p[d + j, 1] = src_p[a + j, 1]
            dst_p[d + j, 2] = src_p[a + j, 2]
        dst_next[c] = d + src_n[c]


@kernel
def _fill_ends(c, n_t, n_r, o, dts, hs, ips, loads, shared_tau, ea, eb, capacity_ah, r1_ohm,
               tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v, q_noise_a2, q_offset_a2,
               q_cap_rel2, q_rc_rel2, r_res_rel2, r_factor, rec_row, rec_x, rec_p, out_at,
               out_soc, out_std, prior_soc, prior_std):
    """The filter's output of cell ``c`` on the kept rows outside its records' span: the prior
    before its first record, the prediction replayed from its last record after it (the
    record's own row included)."""
    first = rec_row[o] if n_r > 0 else n_t
    p0 = min(1.0, max(0.0, prior_soc[c]))
    for k in range(first):
        w = out_at[k]
        if w >= 0:
            out_soc[w, c] = p0
            out_std[w, c] = prior_std
    if n_r == 0:
        return
    e = o + n_r - 1
    sj = rec_x[e, 0]
    v1 = rec_x[e, 1]
    c00 = rec_p[e, 0]
    c01 = rec_p[e, 1]
    c11 = rec_p[e, 2]
    q_as = 1.0 / (3600.0 * capacity_ah[c])
    q_off = q_offset_a2 / (3600.0 * capacity_ah[c] * capacity_ah[c])
    last_dt = -1.0
    a_c = 1.0
    b_c = 1.0
    for k in range(rec_row[e], n_t):
        if k > rec_row[e]:
            dt = dts[k]
            if dt > 0.0:
                h = hs[k]
                if shared_tau:
                    a = ea[k]
                    b = eb[k]
                else:
                    if dt != last_dt:
                        a_c = math.exp(-dt / tau1_s[c])
                        b_c = 1.0 if h == dt else math.exp(-(dt - h) / tau1_s[c])
                        last_dt = dt
                    a = a_c
                    b = b_c
                sj, v1, c00, c01, c11 = _predict(sj, v1, c00, c01, c11, ips[k], h, dt, a, b,
                                                 eta[c], q_as, q_off, r1_ohm[c] * r_factor[k],
                                                 q_noise_a2, q_cap_rel2, q_rc_rel2)
        w = out_at[k]
        if w >= 0:
            slope = grid_slope(sj, grid_s0, grid_inv_h, grid_ocv_v)
            r1l = r1_ohm[c] * r_factor[k] * loads[k]
            out_soc[w, c] = min(1.0, max(0.0, sj))
            out_std[w, c] = math.sqrt(c00 + r_res_rel2 * r1l * r1l / (slope * slope))


@kernel(parallel=True)
def rts_smooth(time_s, current_a, pack_state0, max_hold_s, load_tau_s, capacity_ah, r1_ohm,
               tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v, q_noise_a2, q_offset_a2,
               q_cap_rel2, q_rc_rel2, r_res_rel2, r_factor, rec_off, rec_n, rec_row, rec_x,
               rec_p, out_at, out_soc, out_std, fill, prior_soc, prior_std):
    """Rauch-Tung-Striebel backward pass over the records of :func:`ekf_run`.

    For each cell, between consecutive records ``j`` (row ``k_j``, filtered ``x_j, P_j``) and
    ``j + 1`` (row ``m``), the filter only predicted; the prediction is replayed from the record
    (the same arithmetic, :func:`_predict`) to get ``x(k), P(k)`` on every row in between and
    the prior ``x-, P-`` at ``m``. With ``Phi = diag(1, prod a)`` the transition from ``k`` to
    ``m`` (the product of the one-row RTS gains telescopes, since no update happens in
    between), the smoothed state is (Rauch, Tung and Striebel, AIAA J. 3(8), 1965; Simon 2006,
    eq. 9.107)::

        G(k)  = P(k) Phi^T (P-)^-1
        xs(k) = x(k) + G(k) (xs(m) - x-)
        Ps(k) = P(k) + G(k) (Ps(m) - P-) G(k)^T

    starting from the last record (smoothed = filtered). ``out_soc``/``out_std`` [R, S] (the
    filter's output, at the rows ``out_at`` names as in :func:`ekf_run`) are overwritten on the
    kept rows from a cell's first record to its last (the smoothed state of the other rows is
    not formed: only the gain's decay product runs through them); the std adds the same
    unmodelled-polarisation term as the filter. With ``fill`` the other kept rows get what the
    filter wrote there, recomputed (for :class:`packbms.soc.SmootherStream`, which keeps no
    filter output): ``prior_soc`` [S] clipped and ``prior_std`` before a cell's first record,
    and from its last record on the prediction replayed from that record. ``pack_state0`` is the pack
    state *before* the forward run (the per-row steps are recomputed from it).
    """
    n_t = time_s.shape[0]
    n_s = capacity_ah.shape[0]
    if n_t == 0:
        return
    dts = np.empty(n_t)
    hs = np.empty(n_t)
    ips = np.empty(n_t)
    loads = np.empty(n_t)
    ps = pack_state0.copy()
    pack_rows(time_s, current_a, ps, max_hold_s, load_tau_s, dts, hs, ips, loads)
    shared_tau, ea, eb = _shared_decay(tau1_s, dts, hs)
    for c in numba.prange(n_s):
        n_r = rec_n[c]
        if fill:
            _fill_ends(c, n_t, n_r, rec_off[c], dts, hs, ips, loads, shared_tau, ea, eb,
                       capacity_ah, r1_ohm, tau1_s, eta, grid_s0, grid_inv_h, grid_ocv_v,
                       q_noise_a2, q_offset_a2, q_cap_rel2, q_rc_rel2, r_res_rel2, r_factor,
                       rec_row, rec_x, rec_p, out_at, out_soc, out_std, prior_soc, prior_std)
        if n_r < 2:
            continue
        o = rec_off[c]
        span = 0
        for j in range(n_r - 1):
            d = rec_row[o + j + 1] - rec_row[o + j]
            if d > span:
                span = d
        # scratch for one span: state, covariance and the decay into each row
        xs0 = np.empty(span + 1)
        xs1 = np.empty(span + 1)
        q00 = np.empty(span + 1)
        q01 = np.empty(span + 1)
        q11 = np.empty(span + 1)
        aa = np.empty(span + 1)
        q_as = 1.0 / (3600.0 * capacity_ah[c])
        q_off = q_offset_a2 / (3600.0 * capacity_ah[c] * capacity_ah[c])
        # smoothed at the last record = filtered
        e = o + n_r - 1
        sm0 = rec_x[e, 0]
        sm1 = rec_x[e, 1]
        s00 = rec_p[e, 0]
        s01 = rec_p[e, 1]
        s11 = rec_p[e, 2]
        last_dt = -1.0
        a_c = 1.0
        b_c = 1.0
        for j in range(n_r - 2, -1, -1):
            r = o + j
            k0 = rec_row[r]
            km = rec_row[r + 1]
            n = km - k0
            xs0[0] = rec_x[r, 0]
            xs1[0] = rec_x[r, 1]
            q00[0] = rec_p[r, 0]
            q01[0] = rec_p[r, 1]
            q11[0] = rec_p[r, 2]
            aa[0] = 1.0
            # replay the predictions k0+1 .. km
            for u in range(1, n + 1):
                k = k0 + u
                dt = dts[k]
                sj = xs0[u - 1]
                v1 = xs1[u - 1]
                c00 = q00[u - 1]
                c01 = q01[u - 1]
                c11 = q11[u - 1]
                a = 1.0
                if dt > 0.0:
                    h = hs[k]
                    if shared_tau:
                        a = ea[k]
                        b = eb[k]
                    else:
                        if dt != last_dt:
                            a_c = math.exp(-dt / tau1_s[c])
                            b_c = 1.0 if h == dt else math.exp(-(dt - h) / tau1_s[c])
                            last_dt = dt
                        a = a_c
                        b = b_c
                    sj, v1, c00, c01, c11 = _predict(sj, v1, c00, c01, c11, ips[k], h, dt, a,
                                                     b, eta[c], q_as, q_off,
                                                     r1_ohm[c] * r_factor[k], q_noise_a2,
                                                     q_cap_rel2, q_rc_rel2)
                xs0[u] = sj
                xs1[u] = v1
                q00[u] = c00
                q01[u] = c01
                q11[u] = c11
                aa[u] = a
            # prior at km and its inverse
            p00 = q00[n]
            p01 = q01[n]
            p11 = q11[n]
            det = p00 * p11 - p01 * p01
            i00 = p11 / det
            i01 = -p01 / det
            i11 = p00 / det
            d0 = sm0 - xs0[n]
            d1 = sm1 - xs1[n]
            e00 = s00 - p00
            e01 = s01 - p01
            e11 = s11 - p11
            phi = 1.0
            for u in range(n - 1, -1, -1):
                phi *= aa[u + 1]
                k = k0 + u
                w = out_at[k]
                if u > 0 and w < 0:
                    continue
                # P(k) Phi^T with Phi = diag(1, phi)
                m00 = q00[u]
                m01 = q01[u] * phi
                m10 = q01[u]
                m11 = q11[u] * phi
                g00 = m00 * i00 + m01 * i01
                g01 = m00 * i01 + m01 * i11
                g10 = m10 * i00 + m11 * i01
                g11 = m10 * i01 + m11 * i11
                x0 = xs0[u] + g00 * d0 + g01 * d1
                x1 = xs1[u] + g10 * d0 + g11 * d1
                # G E G^T
                t00 = g00 * e00 + g01 * e01
                t01 = g00 * e01 + g01 * e11
                t10 = g10 * e00 + g11 * e01
                t11 = g10 * e01 + g11 * e11
                c00 = q00[u] + t00 * g00 + t01 * g01
                c01 = q01[u] + 0.5 * ((t00 * g10 + t01 * g11) + (t10 * g00 + t11 * g01))
                c11 = q11[u] + t10 * g10 + t11 * g11
                if w >= 0:
                    slope = grid_slope(x0, grid_s0, grid_inv_h, grid_ocv_v)
                    r1l = r1_ohm[c] * r_factor[k] * loads[k]
                    out_soc[w, c] = min(1.0, max(0.0, x0))
                    out_std[w, c] = math.sqrt(max(c00, 0.0)
                                              + r_res_rel2 * r1l * r1l / (slope * slope))
                if u == 0:
                    sm0 = x0
                    sm1 = x1
                    s00 = c00
                    s01 = c01
                    s11 = c11
