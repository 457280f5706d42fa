"""Equivalent-circuit cell kernels: temperature scaling of resistances and the pack simulation.

The cell model (per cell): terminal voltage ``v = OCV(soc, T) - R0(T) i - sum_p v_p`` with RC
pairs ``dv_p/dt = -v_p / tau_p + R_p(T) i / tau_p``; ``i`` positive = discharge.
"""

import math

import numpy as np

from ._jit import kernel
from .ocv import interp_scalar, segment_index


@kernel
def resistance_factor_scalar(temperature_k, activation_k, t_ref_k):
    """Arrhenius-like resistance scaling ``exp(activation_k * (1/T - 1/t_ref_k))`` (T in K).

    ``activation_k`` is the activation energy over the gas constant (K); 0 disables the scaling.
    """
    if activation_k == 0.0:
        return 1.0
    return math.exp(activation_k * (1.0 / temperature_k - 1.0 / t_ref_k))


@kernel
def rc_step_scalar(v_rc, current_a, r_ohm, decay):
    """One exact zero-order-hold step of an RC pair: ``decay = exp(-dt / tau)``."""
    return v_rc * decay + r_ohm * (1.0 - decay) * current_a


@kernel
def simulate_ecm(current_a, dt_s, block_steps, decim,
                 soc0, capacity_ah, r0_ohm, rc_r_ohm, rc_decay, eta, self_discharge_a,
                 table_soc, table_ocv, table_entropic, use_entropic, t_ref_k, activation_k,
                 temp0_c, ambient_c, thermal_r_k_per_w, thermal_c_j_per_k, thermal_on,
                 bleed_a, bal_threshold_v, bal_allowed,
                 req_step, req_cell0, req_n,
                 out_pack_v, out_soc, out_v, out_temp_c, out_bal, out_req, out_charge_ah):
    """Simulate S series cells driven by one pack current (zero-order hold on a fixed step).

    Parameters
    ----------
    current_a : float64 [T]
        Pack current on each step (A, positive = discharge), held over ``[k dt, (k+1) dt)``.
    dt_s : float
        Step (s).
    block_steps : int
        Steps per balancing decision (the balancing flags are decided at the start of each
        block from the terminal voltages at the end of the previous one).
    decim : int
        Truth decimation: ``out_soc``/``out_v``/``out_temp_c`` rows are steps ``0, decim, ...``.
    soc0, capacity_ah, r0_ohm, eta, self_discharge_a : float64 [S]
    rc_r_ohm, rc_decay : float64 [S, P]
        RC resistances and ``exp(-dt / tau)``.
    table_soc, table_ocv, table_entropic : float64 [n]
        OCV table and dOCV/dT (V/K); ``use_entropic`` skips the latter when False.
    t_ref_k, activation_k : float
        Reference temperature and Arrhenius constant of the resistances (K).
    temp0_c, ambient_c : float64 [S]
        Initial and ambient temperature of each cell (°C).
    thermal_r_k_per_w, thermal_c_j_per_k : float
        Lumped thermal resistance to ambient and heat capacity per cell; ``thermal_on`` False
        keeps every cell at its initial temperature.
    bleed_a, bal_threshold_v : float
        Passive balancing: in a block where ``bal_allowed`` is non-zero (the pack is parked or
        charging), a cell whose voltage at the end of the previous block exceeds the lowest by
        more than ``bal_threshold_v`` bleeds ``bleed_a`` (A). ``bleed_a <= 0`` disables it.
    bal_allowed : uint8 [n_blocks]
    req_step, req_cell0, req_n : int64 [R]
        Voltage sample requests (sorted by step): cells ``req_cell0 .. req_cell0 + req_n - 1``
        at step ``req_step``.
    out_pack_v : float64 [T]
        Written: sum of the terminal voltages at each step.
    out_soc, out_v, out_temp_c : float64 [Td, S]
        Written: SoC, terminal voltage and temperature at the decimated steps.
    out_bal : uint8 [n_blocks, S]
        Written: balancing flags of each block.
    out_req : float64 [R, max(req_n)]
        Written: the requested voltages.
    out_charge_ah : float64 [T]
        Written: pack charge discharged before step k (Ah), the exact integral of the current.

    Notes
    -----
    Serial on purpose: a ``prange`` over cells inside each 1 s block measured 0.26 s against
    0.41 s for an hour of 96 cells on an idle 2-core machine, but 3-12 s when other processes
    kept the cores busy (every block ends in a barrier), against 0.6-0.8 s serial.

    Per cell and step, with ``i = current + bleed`` and ``f = exp(activation_k (1/T - 1/T_ref))``
    (``f`` and the entropic term are evaluated once per block from the temperature at its start):
    ``v_k = OCV(soc_k, T_k) - f R0 i - sum_p v_p,k``;
    ``v_p,k+1 = decay_p v_p,k + f R_p (1 - decay_p) i`` (exact for constant ``i`` over the step);
    ``soc_k+1 = soc_k - (eta(i) i + i_sd) dt / (3600 C)``; ``eta(i) = eta`` if ``i < 0`` else 1;
    ``T_k+1 = T_k + dt / C_th (i^2 f R0 + sum_p v_p^2 / (f R_p) - (T_k - T_amb) / R_th)``.
    """
    n_t = current_a.shape[0]
    n_s = soc0.shape[0]
    n_p = rc_r_ohm.shape[1]
    n_req = req_step.shape[0]
    soc = soc0.copy()
    vrc = np.zeros((n_s, n_p))
    temp = temp0_c.copy()
    flags = np.zeros(n_s, np.uint8)
    last_v = np.zeros(n_s)
    blk_v = np.empty((block_steps, n_s))
    n_blocks = (n_t + block_steps - 1) // block_steps
    q_dt = dt_s / 3600.0
    r = 0
    charge = 0.0
    # OCV segment slopes, and each cell's current segment: SoC moves slowly, so a short walk
    # from the last segment replaces the binary search (same result as interp_scalar)
    n_tab = table_soc.shape[0]
    slope = np.empty(n_tab - 1)
    for j in range(n_tab - 1):
        slope[j] = (table_ocv[j + 1] - table_ocv[j]) / (table_soc[j + 1] - table_soc[j])
    seg = np.zeros(n_s, np.int64)
    for c in range(n_s):
        seg[c] = segment_index(soc[c], table_soc)
    for b in range(n_blocks):
        k0 = b * block_steps
        k1 = min(n_t, k0 + block_steps)
        if b > 0 and bleed_a > 0.0:
            vmin = last_v[0]
            for c in range(1, n_s):
                if last_v[c] < vmin:
                    vmin = last_v[c]
            allowed = bal_allowed[b] != 0
            for c in range(n_s):
                flags[c] = 1 if (allowed and last_v[c] - vmin > bal_threshold_v) else 0
        for c in range(n_s):
            out_bal[b, c] = flags[c]
        for c in range(n_s):
            bleed = bleed_a * flags[c]
            # Temperature and the entropic term move on a scale of minutes: evaluate them once
            # per block (1 s by default) rather than on every 10 ms step.
            t_k = temp[c] + 273.15
            f = resistance_factor_scalar(t_k, activation_k, t_ref_k)
            ent = 0.0
            if use_entropic:
                ent = interp_scalar(soc[c], table_soc, table_entropic) * (t_k - t_ref_k)
            j = seg[c]
            for k in range(k0, k1):
                i = current_a[k] + bleed
                x = soc[c]
                while j > 0 and not x >= table_soc[j]:
                    j -= 1
                while j < n_tab - 2 and x >= table_soc[j + 1]:
                    j += 1
                ocv = table_ocv[j] + slope[j] * (x - table_soc[j]) + ent
                v = ocv - f * r0_ohm[c] * i
                heat = i * i * f * r0_ohm[c]
                for p in range(n_p):
                    vp = vrc[c, p]
                    v -= vp
                    heat += vp * vp / (f * rc_r_ohm[c, p])
                    vrc[c, p] = vp * rc_decay[c, p] + f * rc_r_ohm[c, p] * (1.0 - rc_decay[c, p]) * i
                blk_v[k - k0, c] = v
                if k % decim == 0:
                    kd = k // decim
                    out_soc[kd, c] = soc[c]
                    out_v[kd, c] = v
                    out_temp_c[kd, c] = temp[c]
                i_eff = i * eta[c] if i < 0.0 else i
                soc[c] -= (i_eff + self_discharge_a[c]) * q_dt / capacity_ah[c]
                if thermal_on:
                    temp[c] += dt_s / thermal_c_j_per_k * (
                        heat - (temp[c] - ambient_c[c]) / thermal_r_k_per_w)
            seg[c] = j
            last_v[c] = blk_v[k1 - 1 - k0, c]
        for k in range(k0, k1):
            acc = 0.0
            for c in range(n_s):
                acc += blk_v[k - k0, c]
            out_pack_v[k] = acc
            out_charge_ah[k] = charge
            charge += current_a[k] * q_dt
        while r < n_req and req_step[r] < k1:
            k = req_step[r]
            if k >= k0:
                for j in range(req_n[r]):
                    out_req[r, j] = blk_v[k - k0, req_cell0[r] + j]
            r += 1
