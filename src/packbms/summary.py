"""Plain-text summaries printed by the command line."""

from __future__ import annotations

import numpy as np

from .analysis import Analysis


def _fmt_cells(idx, values, unit_fmt):
    return ", ".join(f"#{i + 1} {unit_fmt(values[i])}" for i in idx)


def telemetry_summary(a: Analysis) -> str:
    """Readable overview of an analysed log: what was decoded, current, voltages, spread."""
    tel = a.telemetry
    notes = tel.notes
    lines = []
    dec = notes.get("decode", {})
    duration = float(tel.time[-1]) if len(tel.time) else 0.0
    lines.append(f"log        {tel.source}")
    lines.append(f"duration   {duration / 60:.1f} min, {len(tel.time)} samples on the current's "
                 f"time base, {tel.n_cells} cells")
    lines.append(f"frames     {dec.get('decoded', 0)} decoded, {dec.get('unknown_id', 0)} with IDs "
                 f"unknown or unused by the layout, {dec.get('too_short', 0)} too short, "
                 f"{dec.get('error_or_remote', 0)} error/remote")
    dt = np.diff(tel.time)
    ah_out = float(np.sum(np.clip(tel.current[:-1], 0, None) * dt)) / 3600.0
    ah_in = float(np.sum(np.clip(-tel.current[:-1], 0, None) * dt)) / 3600.0
    lines.append(f"current    {tel.current.min():.1f} .. {tel.current.max():.1f} A "
                 f"(+ = discharge); {ah_out:.2f} Ah out, {ah_in:.2f} Ah in")
    if tel.pack_voltage is not None and np.isfinite(tel.pack_voltage).any():
        lines.append(f"pack       {np.nanmin(tel.pack_voltage):.1f} .. "
                     f"{np.nanmax(tel.pack_voltage):.1f} V")
    v = tel.cell_voltage
    with np.errstate(invalid="ignore"):
        vmin, vmax = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
        last = v[np.isfinite(v).all(axis=1)]
    lines.append(f"cells      {np.nanmin(vmin):.3f} .. {np.nanmax(vmax):.3f} V over the log; "
                 f"{100 * notes.get('cell_voltage_stale_fraction', 0):.2f} % of samples stale")
    if len(last):
        end = last[-1]
        order = np.argsort(end)
        lines.append(f"at end     spread {1000 * (end.max() - end.min()):.1f} mV; lowest "
                     f"{_fmt_cells(order[:3], end, lambda x: f'{x:.3f} V')}; highest "
                     f"{_fmt_cells(order[::-1][:3], end, lambda x: f'{x:.3f} V')}")
    if tel.cell_temperature is not None:
        lines.append(f"temps      {np.nanmin(tel.cell_temperature):.1f} .. "
                     f"{np.nanmax(tel.cell_temperature):.1f} degC "
                     f"({tel.cell_temperature.shape[1]} sensors)")
    back = sum(notes.get("time_backwards", {}).values())
    gaps = notes.get("current_gaps", {}).get("count", 0)
    if back or gaps:
        lines.append(f"warnings   {back} backward time steps (sorted), {gaps} gaps in the current")
    if a.out is not None:
        lines.append(f"written    {a.out}")
    return "\n".join(lines)


def soc_summary(a: Analysis) -> str:
    """Per-cell SoC, pack SoC, imbalance and the balancing plan, as the CLI prints them."""
    if a.soc is None:
        return ""
    res, plan = a.soc, a.balancing
    lines = []
    p = res.pack
    # start at the first row where every cell has had a voltage (before that, cells show the prior)
    seen = np.flatnonzero(~a.telemetry.cell_voltage_stale.any(axis=1))
    i0 = int(seen[0]) if len(seen) else 0
    lines.append(f"method     {res.method} (per-cell SoC with 1-sigma; "
                 f"{len(res.info.get('rest_periods', []))} rest period(s) found)")
    lines.append(f"pack SoC   start {100 * p.usable[i0]:.1f} %, end {100 * p.usable[-1]:.1f} % "
                 f"(usable: charge left before the first cell is empty over the charge between "
                 f"first-empty and first-full)")
    end = res.soc[-1]
    std = res.soc_std[-1]
    order = np.argsort(end)
    lines.append(f"cells end  mean {100 * np.mean(end):.1f} %, lowest "
                 f"{_fmt_cells(order[:3], end, lambda x: f'{100 * x:.1f} %')}; highest "
                 f"{_fmt_cells(order[::-1][:3], end, lambda x: f'{100 * x:.1f} %')}; "
                 f"median sigma {100 * np.median(std):.2f} %")
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
