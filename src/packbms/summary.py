"""Plain-text summaries printed by the command line (from an :class:`Analysis`)."""

from __future__ import annotations

import numpy as np

from .analysis import Analysis


def _fmt_cells(idx, values, unit_fmt):
    return ", ".join(f"#{i + 1} {unit_fmt(values[i])}" for i in idx)


def telemetry_summary(a: Analysis) -> str:
    """Readable overview of an analysed log: what was decoded, current, voltages, spread."""
    st = a.stats
    run, notes = st["running"], st["notes"]
    lines = []
    dec = notes.get("decode", {})
    duration = run.prev[0] if run.prev is not None else 0.0
    n_cells = len(run.v_min)
    lines.append(f"log        {st['source']}")
    lines.append(f"duration   {duration / 60:.1f} min, {run.rows} samples on the current's time "
                 f"base, {n_cells} cells")
    lines.append(f"frames     {dec.get('decoded', 0)} decoded, {dec.get('unknown_id', 0)} with IDs "
                 f"unknown or unused by the layout, {dec.get('too_short', 0)} too short, "
                 f"{dec.get('error_or_remote', 0)} error/remote")
    lines.append(f"current    {run.i_min:.1f} .. {run.i_max:.1f} A (+ = discharge); "
                 f"{run.ah_out:.2f} Ah out, {run.ah_in:.2f} Ah in")
    if np.isfinite(run.pv_min):
        lines.append(f"pack       {run.pv_min:.1f} .. {run.pv_max:.1f} V")
    lines.append(f"cells      {np.nanmin(run.v_min):.3f} .. {np.nanmax(run.v_max):.3f} V over the log; "
                 f"{100 * notes.get('cell_voltage_stale_fraction', 0):.2f} % of samples stale")
    end = run.end_voltage
    if end is not None:
        order = np.argsort(end)
        lines.append(f"at end     spread {1000 * (end.max() - end.min()):.1f} mV; lowest "
                     f"{_fmt_cells(order[:3], end, lambda x: f'{x:.3f} V')}; highest "
                     f"{_fmt_cells(order[::-1][:3], end, lambda x: f'{x:.3f} V')}")
    if np.isfinite(run.temp_min):
        lines.append(f"temps      {run.temp_min:.1f} .. {run.temp_max:.1f} degC "
                     f"({run.temp_sensors} sensors)")
    back = sum(notes.get("time_backwards", {}).values())
    gaps = notes.get("current_gaps", {}).get("count", 0)
    if back or gaps:
        lines.append(f"warnings   {back} backward time steps (sorted), {gaps} gaps in the current")
    if a.out is not None:
        lines.append(f"written    {a.out}")
    return "\n".join(lines)


def soc_summary(a: Analysis) -> str:
    """Per-cell SoC, pack SoC, imbalance and the balancing plan, as the CLI prints them."""
    plan, run = a.balancing, a.stats["running"]
    if run.soc_end is None:
        return ""
    lines = []
    how = a.method
    if a.stats.get("requested_method") == "auto":
        how += (" (auto: smoothed over the whole drive)" if a.method == "smoother"
                else " (auto: log too long for the smoother, the streaming EKF went on)")
    lines.append(f"method     {how}; per-cell SoC with 1-sigma; "
                 f"{len(a.stats.get('rest_periods', []))} rest period(s) found")
    # start at the first sample where every cell has had a voltage (before, cells show the prior)
    start = run.soc_start if run.soc_start is not None else np.nan
    lines.append(f"pack SoC   start {100 * start:.1f} %, end {100 * run.usable_end:.1f} % "
                 f"(usable: charge left before the first cell is empty over the charge between "
                 f"first-empty and first-full)")
    end = run.soc_end
    order = np.argsort(end)
    lines.append(f"cells end  mean {100 * np.mean(end):.1f} %, lowest "
                 f"{_fmt_cells(order[:3], end, lambda x: f'{100 * x:.1f} %')}; highest "
                 f"{_fmt_cells(order[::-1][:3], end, lambda x: f'{100 * x:.1f} %')}; "
                 f"median sigma {100 * np.median(run.soc_std_end):.2f} %")
    if plan is not None:
        worst = plan.most_imbalanced(5)
        dev = plan.soc - np.median(plan.soc)
        lines.append(f"imbalance  spread {100 * plan.soc_spread:.1f} points; most imbalanced "
                     f"{_fmt_cells(worst, dev, lambda x: f'{100 * x:+.1f}')} "
                     f"(points from the median cell)")
        lines.append(f"capacity   usable {plan.usable_capacity_ah:.2f} Ah now vs "
                     f"{plan.balanced_capacity_ah:.2f} Ah balanced: "
                     f"{plan.recoverable_capacity_ah:.2f} Ah "
                     f"({100 * plan.recoverable_capacity_fraction:.1f} %) recoverable")
        lines.append(f"bleed plan {plan.passive_bleed_total_ah:.2f} Ah in total at "
                     f"{plan.bleed_current_a:g} A per cell: {plan.passive_duration_h:.1f} h, "
                     f"{plan.passive_energy_total_wh:.0f} Wh dissipated; active balancing would "
                     f"move {plan.active_moved_ah:.2f} Ah")
        if plan.duty is not None:
            lines.append(f"observed   balancing flags on {100 * np.mean(plan.duty):.1f} % of the "
                         f"time on average (max cell {100 * np.max(plan.duty):.1f} %)")
    return "\n".join(lines)


def quality_summary(a: Analysis) -> str:
    """Identified parameters and the weak-cell list (``analyze --fit``)."""
    ident, q = a.stats.get("identification"), a.stats.get("quality")
    if ident is None or q is None:
        return ""
    lines = ["identified (stored in /cells/capacity_ah, /cells/resistance_ohm and /quality):",
             ident.summary()]
    cap, r0 = ident.params.capacity_ah, ident.params.r0_ohm
    cells = [f"#{i + 1:<3d}{cap[i]:6.2f} Ah {1000 * r0[i]:5.3f} mOhm" for i in range(len(cap))]
    per_line = 4
    lines.append("per cell   capacity and R0 (25 degC):")
    for k in range(0, len(cells), per_line):
        lines.append("           " + "   ".join(cells[k:k + per_line]))
    lines.append(q.summary())
    return "\n".join(line for line in lines if line)
