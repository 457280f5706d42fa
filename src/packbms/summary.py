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
