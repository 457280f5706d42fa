"""Slow, obviously correct reference implementations (compared to the Numba kernels).

Plain NumPy, one cell at a time, matrices written as matrices: the textbook EKF
(Simon, *Optimal State Estimation*, 2006, eqs. 13.47-13.49, Joseph form eq. 5.19) and a
coulomb counter, following the model documented in :mod:`packbms.kernels.ekf` and
:mod:`packbms.kernels.coulomb`. The OCV is interpolated on the chemistry's own table (not the
kernel's uniform grid), so the tests also check the grid.
"""

from __future__ import annotations

import math

import numpy as np


def table_ocv(s, ts, tv):
    """Piecewise-linear OCV with linear extrapolation by the end segments."""
    j = int(np.clip(np.searchsorted(ts, s, side="right") - 1, 0, len(ts) - 2))
    return tv[j] + (tv[j + 1] - tv[j]) / (ts[j + 1] - ts[j]) * (s - ts[j])


def table_slope(s, ts, tv):
    """Slope of the segment holding ``s`` (segment to the right at a knot)."""
    j = int(np.clip(np.searchsorted(ts, s, side="right") - 1, 0, len(ts) - 2))
    return (tv[j + 1] - tv[j]) / (ts[j + 1] - ts[j])


def table_soc_from_ocv(v, ts, tv):
    """Inverse table (OCV strictly increasing), linear extrapolation."""
    return table_ocv(v, tv, ts)


def ekf_noise(cfg, threshold_a: float, n_cells: int) -> dict:
    """The kernel's numbers from an :class:`packbms.soc.EKFConfig` (their definition)."""
    return dict(init=cfg.init, threshold_a=threshold_a,
                prior=np.broadcast_to(np.asarray(cfg.initial_soc, float), (n_cells,)),
                prior_var=cfg.initial_soc_std ** 2, ocv_var=cfg.ocv_init_soc_std ** 2,
                rc_var=cfg.initial_rc_voltage_std_v ** 2, q_noise_a2=cfg.current_noise_a ** 2,
                q_offset_a2=cfg.current_offset_a ** 2,
                q_cap_rel2=cfg.capacity_error ** 2, q_rc_rel2=cfg.resistance_error ** 2,
                r_meas_v2=cfg.voltage_noise_v ** 2 + cfg.voltage_resolution_v ** 2 / 12.0,
                r_res_rel2=cfg.resistance_error ** 2, load_tau_s=cfg.polarisation_memory_s,
                max_hold_s=cfg.max_hold_s, update_on_change=cfg.update_on_change,
                ocv_err_v2=cfg.ocv_error_v ** 2, ocv_err_time_s=cfg.ocv_error_time_s)


def naive_ekf(time_s, current_a, volt, capacity_ah, r0_ohm, r1_ohm, tau1_s, eta, ts, tv,
              noise: dict, *, r_factor=None, record=None):
    """Run the EKF cell by cell from a fresh start.

    Returns ``(soc [T,S], std [T,S], x [S,2], P [S,2,2])``. With ``record`` (a dict), also
    stores per cell ``record[c] = (rows, x_prior, P_prior, F, x_post, P_post, pol)`` for every
    row from the cell's start on (lists; ``pol`` the unmodelled-polarisation variance term of
    the std), for :func:`naive_rts`.
    """
    n_t, n_s = volt.shape
    f = np.ones(n_t) if r_factor is None else np.asarray(r_factor, float)
    soc_out = np.empty((n_t, n_s))
    std_out = np.empty((n_t, n_s))
    x_out = np.empty((n_s, 2))
    p_out = np.empty((n_s, 2, 2))
    q_as_all = 1.0 / (3600.0 * np.asarray(capacity_ah, float))
    for c in range(n_s):
        x = P = None                                 # not started: no voltage seen yet
        rec = ([], [], [], [], [], [], []) if record is not None else None
        vl = np.nan
        t_upd = np.nan                               # time of the last update
        tp, ip = np.nan, np.nan
        load = abs(current_a[0])
        cap = capacity_ah[c]
        q_as = q_as_all[c]
        for k in range(n_t):
            # -- time step from the previous row, its current held for at most max_hold_s
            if tp == tp:
                dt = max(time_s[k] - tp, 0.0)
            else:
                dt, ip = 0.0, 0.0
            h = min(dt, noise["max_hold_s"])
            w = math.exp(-dt / noise["load_tau_s"])
            load = w * load + (1 - w) * abs(ip)
            v = volt[k, c]
            just_from_ocv = False
            if x is None:
                # start on the first row with a voltage (or at once from the prior)
                ik = current_a[k]
                if noise["init"] == "given":
                    soc0, var0 = noise["prior"][c], noise["prior_var"]
                elif not np.isfinite(v):
                    soc_out[k, c] = min(1.0, max(0.0, noise["prior"][c]))
                    std_out[k, c] = math.sqrt(noise["prior_var"])
                    tp, ip = time_s[k], current_a[k]
                    continue
                elif noise["init"] == "ocv" or abs(ik) < noise["threshold_a"]:
                    soc0 = table_soc_from_ocv(v + r0_ohm[c] * f[k] * ik, ts, tv)
                    var0 = noise["ocv_var"]
                    just_from_ocv = True
                    vl = v
                else:
                    soc0, var0 = noise["prior"][c], noise["prior_var"]
                x = np.array([soc0, 0.0])
                P = np.diag([var0, noise["rc_var"]])
                F = np.eye(2)
            elif dt > 0:
                a = math.exp(-dt / tau1_s[c])
                b = math.exp(-(dt - h) / tau1_s[c])
                i = ip
                i_eff = i * eta[c] if i < 0 else i
                g = r1_ohm[c] * f[k] * i * (b - a)
                x = np.array([x[0] - i_eff * h * q_as, a * x[1] + g])
                F = np.array([[1.0, 0.0], [0.0, a]])
                Q = np.diag([(h * q_as) ** 2 * (noise["q_noise_a2"] + noise["q_cap_rel2"] * i * i)
                             + noise["q_offset_a2"] * dt / (3600.0 * cap * cap),
                             noise["q_rc_rel2"] * g * g])
                P = F @ P @ F.T + Q
            else:
                F = np.eye(2)
            if rec is not None:
                rec[0].append(k)
                rec[1].append(x.copy())
                rec[2].append(P.copy())
                rec[3].append(F.copy())
            # -- measurement update (not with the voltage an OCV start just used)
            if (not just_from_ocv and np.isfinite(v)
                    and (not noise["update_on_change"] or v != vl)):
                ik = current_a[k]
                r0k = r0_ohm[c] * f[k]
                slope = table_slope(x[0], ts, tv)
                H = np.array([[slope, -1.0]])
                R = noise["r_meas_v2"] + noise["r_res_rel2"] * ((r0k * ik) ** 2
                                                                + (r1_ohm[c] * f[k] * load) ** 2)
                # correlated OCV error: spread over the updates within its correlation time
                since = time_s[k] - t_upd
                if np.isfinite(since) and since < noise["ocv_err_time_s"]:
                    R += noise["ocv_err_v2"] * noise["ocv_err_time_s"] / max(since, 1e-3)
                else:
                    R += noise["ocv_err_v2"]
                S = (H @ P @ H.T)[0, 0] + R
                K = (P @ H.T) / S
                innov = v - (table_ocv(x[0], ts, tv) - r0k * ik - x[1])
                x = x + K[:, 0] * innov
                A = np.eye(2) - K @ H
                P = A @ P @ A.T + R * (K @ K.T)
                P = 0.5 * (P + P.T)
                vl = v
                t_upd = time_s[k]
            soc_out[k, c] = min(1.0, max(0.0, x[0]))
            pol = noise["r_res_rel2"] * (r1_ohm[c] * f[k] * load) ** 2
            std_out[k, c] = math.sqrt(P[0, 0] + pol / table_slope(x[0], ts, tv) ** 2)
            if rec is not None:
                rec[4].append(x.copy())
                rec[5].append(P.copy())
                rec[6].append(pol)
            tp, ip = time_s[k], current_a[k]
        x_out[c] = x if x is not None else np.nan
        p_out[c] = P if P is not None else np.nan
        if record is not None:
            record[c] = rec
    return soc_out, std_out, x_out, p_out


def naive_rts(soc, std, record: dict, ts, tv):
    """Textbook Rauch-Tung-Striebel pass, row by row (Simon 2006, eq. 9.107), over the EKF run
    recorded by :func:`naive_ekf`; returns the smoothed ``(soc [T,S], std [T,S])`` (rows before
    a cell's start keep the filter's output).

    ``G = P+(k) F(k+1)^T P-(k+1)^-1``, ``xs(k) = x+(k) + G (xs(k+1) - x-(k+1))``,
    ``Ps(k) = P+(k) + G (Ps(k+1) - P-(k+1)) G^T``, starting from the last row.
    """
    soc = soc.copy()
    std = std.copy()
    for c, (rows, xp, pp, f, xf, pf, pol) in record.items():
        n = len(rows)
        if n == 0:
            continue
        xs, ps = xf[-1], pf[-1]
        for j in range(n - 2, -1, -1):
            g = pf[j] @ f[j + 1].T @ np.linalg.inv(pp[j + 1])
            xs = xf[j] + g @ (xs - xp[j + 1])
            ps = pf[j] + g @ (ps - pp[j + 1]) @ g.T
            k = rows[j]
            soc[k, c] = min(1.0, max(0.0, xs[0]))
            std[k, c] = math.sqrt(max(ps[0, 0], 0.0) + pol[j] / table_slope(xs[0], ts, tv) ** 2)
    return soc, std


def naive_coulomb(time_s, current_a, capacity_ah, eta, soc0, max_hold_s=1.0):
    """Plain coulomb counting (no rests): SoC [T, S] before clipping."""
    n_t = len(time_s)
    soc = np.empty((n_t, len(capacity_ah)))
    s = np.array(soc0, dtype=float)
    for k in range(n_t):
        if k > 0:
            dt = time_s[k] - time_s[k - 1]
            h = min(dt, max_hold_s)
            i = current_a[k - 1]
            i_eff = i * np.asarray(eta) if i < 0 else i * np.ones(len(capacity_ah))
            s = s - i_eff * h / (3600.0 * np.asarray(capacity_ah))
        soc[k] = s
    return soc
