"""Plots and a self-contained HTML page of a result or of a fleet run (optional extra ``plot``).

:func:`render_report` draws, from one HDF5 result:

- ``pack.png``: pack current (A, positive = discharge), pack voltage (V) and SoC (usable pack
  SoC with the band of the lowest to the highest cell, %) against time;
- ``soc_heatmap.png``: every cell's SoC over time (cells vs time, %), and below it each cell's
  deviation from the mean cell (percentage points), where imbalance shows;
- ``imbalance.png``: SoC offset of each cell above the lowest one and the passive balancing plan
  (charge to bleed per cell, Ah) at the end of the log;
- ``capacity_resistance.png``: cell capacity against R0 with outlier cells marked (identified
  values from ``/quality`` when present; else the nominal values, which the plot says);
- ``report.html``: the key figures and every plot embedded (base64), one file to send around.

:func:`render_fleet_report` does the same for a fleet summary (:mod:`packbms.fleet`):
distributions of SoC spread, recoverable capacity and cell capacity over the logs, grade counts,
per-pack trends (capacity fade, resistance growth, parked self-discharge) and the failed logs.

Only ``matplotlib.figure.Figure`` with the Agg canvas is used (no pyplot, no global backend
change), so rendering works headless and inside notebooks alike.
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import store
from .errors import PackBMSError, StorageError

__all__ = ["render_report", "render_fleet_report", "Report", "REPORT_PLOTS", "FLEET_PLOTS"]

#: File names of the plots of :func:`render_report`, in page order, with their captions.
REPORT_PLOTS = {
    "pack.png": "Pack current, voltage and state of charge",
    "soc_heatmap.png": "Cell state of charge over time, and each cell's deviation from the mean",
    "imbalance.png": "Imbalance at the end of the log and the passive balancing plan",
    "capacity_resistance.png": "Cell capacity against ohmic resistance",
}
FLEET_PLOTS = {
    "fleet_distributions.png": "Distributions over the logs",
    "fleet_grades.png": "Pack grades",
    "fleet_trends.png": "Trends per pack",
}

_DPI = 110
_BLUE, _RED, _GREY, _GREEN = "#1f77b4", "#d62728", "#7f7f7f", "#2ca02c"


def _mpl():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PackBMSError("reports need matplotlib; install it with pip install "
                           "'packbms[plot]'") from e
    return Figure, FigureCanvasAgg


def _figure(width: float, height: float, **kw):
    Figure, Canvas = _mpl()
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained", **kw)
    Canvas(fig)
    return fig


def _save(fig, path: Path) -> Path:
    tmp = path.parent / f".{path.name}.tmp"
    try:
        fig.savefig(tmp, format="png", dpi=_DPI)
        tmp.replace(path)
    except OSError as e:
        raise StorageError(f"{path}: cannot write ({e})") from e
    return path


@dataclass
class Report:
    """Files written by :func:`render_report` / :func:`render_fleet_report`.

    Attributes
    ----------
    html : pathlib.Path
        The self-contained page.
    plots : dict[str, pathlib.Path]
        PNG files by name (keys of :data:`REPORT_PLOTS` / :data:`FLEET_PLOTS`).
    notes : list[str]
        What the page says about missing inputs (no /quality group, no SoC, ...).
    """

    html: Path
    plots: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _time_axis(t_s: np.ndarray) -> tuple[np.ndarray, str]:
    span = float(t_s[-1] - t_s[0]) if len(t_s) > 1 else 0.0
    if span > 5 * 3600:
        return t_s / 3600.0, "time since log start (h)"
    if span > 600:
        return t_s / 60.0, "time since log start (min)"
    return t_s, "time since log start (s)"


def _bins(n: int, max_bins: int) -> np.ndarray | None:
    """Bin edges (row indices) when ``n`` rows are too many to draw one by one."""
    if n <= max_bins:
        return None
    return np.linspace(0, n, max_bins + 1).astype(np.int64)


def _envelope(x: np.ndarray, y: np.ndarray, max_points: int = 4000):
    """``(x, mean, low, high)`` per bin for long series (low/high None when not binned)."""
    edges = _bins(len(y), max_points)
    if edges is None:
        return x, y, None, None
    starts = edges[:-1]
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(y, starts)
        hi = np.fmax.reduceat(y, starts)
        cnt = np.add.reduceat(np.isfinite(y).astype(float), starts)
        mean = np.add.reduceat(np.nan_to_num(y), starts) / np.where(cnt > 0, cnt, np.nan)
    return x[starts], mean, lo, hi


def _binned_rows(a: np.ndarray, max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of [T, S] over row bins: (row index of each bin start, [B, S])."""
    edges = _bins(a.shape[0], max_rows)
    if edges is None:
        return np.arange(a.shape[0]), a
    starts = edges[:-1]
    cnt = np.add.reduceat(np.isfinite(a).astype(float), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.add.reduceat(np.nan_to_num(a), starts, axis=0) / cnt
    return starts, m


def _note(ax, text: str, loc: str = "upper left") -> None:
    y, va = (0.97, "top") if loc.startswith("upper") else (0.03, "bottom")
    ax.text(0.01 if loc.endswith("left") else 0.99, y, text, transform=ax.transAxes, va=va,
            ha="left" if loc.endswith("left") else "right", fontsize=8.5,
            bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.9))


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color=_GREY, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _cell_ticks(ax, n: int, axis: str = "y") -> None:
    from matplotlib.ticker import MaxNLocator
    loc = MaxNLocator(nbins=min(n, 12), integer=True, min_n_ticks=1)
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_locator(loc)


def _source_name(result) -> str:
    src = result.attrs.get("source") or result.path or "result"
    return Path(str(src)).name


# ------------------------------------------------------------------------------------------------
# the plots of one result
# ------------------------------------------------------------------------------------------------
def _from_fresh(result, a: np.ndarray) -> np.ndarray:
    """``a`` with the rows before every cell had a voltage set to NaN (the estimator's prior)."""
    from .fleet import _fresh_row
    a = np.array(a, dtype=float)
    a[:_fresh_row(result)] = np.nan
    return a


def plot_pack(result, path: Path) -> Path:
    """``pack.png``: current, voltage and SoC against time."""
    t = np.asarray(result["/time"], float)
    x, xlabel = _time_axis(t)
    has_v = "/pack/voltage" in result
    has_soc = "/pack/soc" in result
    n = 1 + has_v + has_soc
    fig = _figure(10, 2.3 * n + 0.6)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    xx, m, lo, hi = _envelope(x, np.asarray(result["/pack/current"], float))
    if lo is not None:
        ax.fill_between(xx, lo, hi, color=_BLUE, alpha=0.25, lw=0, label="min-max per bin")
    ax.plot(xx, m, color=_BLUE, lw=0.8)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel("current (A)\n+ = discharge")
    ax.set_title(f"Pack: {_source_name(result)}", loc="left", fontsize=11)
    k = 1
    if has_v:
        ax = axes[k]
        k += 1
        xx, m, lo, hi = _envelope(x, np.asarray(result["/pack/voltage"], float))
        if lo is not None:
            ax.fill_between(xx, lo, hi, color="#ff7f0e", alpha=0.25, lw=0)
        ax.plot(xx, m, color="#ff7f0e", lw=0.8)
        ax.set_ylabel("pack voltage (V)")
    if has_soc:
        ax = axes[k]
        if "/pack/soc_min" in result and "/pack/soc_max" in result:
            smin = 100 * _from_fresh(result, result["/pack/soc_min"])
            smax = 100 * _from_fresh(result, result["/pack/soc_max"])
            xx, _, lo, _ = _envelope(x, smin)
            _, _, _, hi = _envelope(x, smax)
            if lo is None:
                lo, hi = smin, smax
            ax.fill_between(xx, lo, hi, color=_GREEN, alpha=0.25, lw=0,
                            label="lowest to highest cell")
        xx, m, _, _ = _envelope(x, 100 * _from_fresh(result, result["/pack/soc"]))
        ax.plot(xx, m, color=_GREEN, lw=1.2, label="usable pack SoC")
        ax.set_ylabel("SoC (%)")
        ax.legend(loc="best", fontsize=8.5, frameon=True)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(xlabel)
    axes[-1].set_xlim(x[0], x[-1])
    return _save(fig, path)


def plot_soc_heatmap(result, path: Path) -> Path:
    """``soc_heatmap.png``: cell SoC (%) over time and each cell's deviation from the mean."""
    fig = _figure(10, 6.2)
    if "/cells/soc" not in result:
        _empty(fig.subplots(), "no cell SoC in this result (analysed with method='none')")
        return _save(fig, path)
    t = np.asarray(result["/time"], float)
    soc = _from_fresh(result, result["/cells/soc"])
    x, xlabel = _time_axis(t)
    rows, binned = _binned_rows(soc, 1500)
    n_s = soc.shape[1]
    extent = [x[0], x[-1], n_s + 0.5, 0.5]
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    im = ax1.imshow(100 * binned.T, aspect="auto", interpolation="nearest", extent=extent,
                    cmap="viridis")
    cb = fig.colorbar(im, ax=ax1, pad=0.01)
    cb.set_label("cell SoC (%)")
    ax1.set_ylabel("cell")
    ax1.set_title(f"Cell state of charge over time: {_source_name(result)}", loc="left",
                  fontsize=11)
    with warnings.catch_warnings():               # rows before the first voltage are all NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        dev = 100 * (binned - np.nanmean(binned, axis=1, keepdims=True))
    lim = float(np.nanmax(np.abs(dev))) if np.isfinite(dev).any() else 1.0
    lim = max(lim, 0.05)
    im2 = ax2.imshow(dev.T, aspect="auto", interpolation="nearest", extent=extent,
                     cmap="RdBu_r", vmin=-lim, vmax=lim)
    cb2 = fig.colorbar(im2, ax=ax2, pad=0.01)
    cb2.set_label("SoC - mean cell\n(percentage points)")
    ax2.set_ylabel("cell")
    ax2.set_xlabel(xlabel)
    ax2.set_title("Deviation from the mean cell (red: above, blue: below)", loc="left",
                  fontsize=10)
    for ax in (ax1, ax2):
        _cell_ticks(ax, n_s)
    return _save(fig, path)


def plot_imbalance(result, path: Path) -> Path:
    """``imbalance.png``: per-cell SoC offset and the passive bleed plan."""
    fig = _figure(10, 5.6)
    if "/balancing/soc_offset" not in result:
        _empty(fig.subplots(), "no balancing plan in this result (no SoC estimate)")
        return _save(fig, path)
    off = 100 * np.asarray(result["/balancing/soc_offset"], float)
    bleed = np.asarray(result.get("/balancing/passive_bleed_ah", np.zeros_like(off)), float)
    attrs = result.group_attrs.get("/balancing", {})
    n = off.size
    cells = np.arange(1, n + 1)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.bar(cells, off, color=_BLUE, width=0.8)
    worst = np.argsort(-off, kind="stable")[:3]
    for i in worst:
        ax1.annotate(f"#{i + 1}", (cells[i], off[i]), textcoords="offset points",
                     xytext=(0, 2), ha="center", fontsize=8)
    ax1.set_ylabel("SoC above the\nlowest cell (points)")
    ax1.set_ylim(0, max(off.max() * 1.15, 0.1))
    ax1.set_title(f"Imbalance at the end of the log: spread "
                  f"{100 * attrs.get('soc_spread', off.max() / 100):.1f} points (lowest cell "
                  f"#{int(np.argmin(off)) + 1}, highest #{int(np.argmax(off)) + 1})", loc="left",
                  fontsize=11)
    ax2.bar(cells, bleed, color=np.where(bleed > 0, _RED, _GREY), width=0.8)
    ax2.set_ylabel("passive plan:\nbleed (Ah)")
    ax2.set_xlabel("cell")
    ax2.set_ylim(0, max(bleed.max() * 1.15, 0.01))
    if attrs:
        ax2.set_title(
            f"Passive plan: bleed {attrs.get('passive_bleed_total_ah', math.nan):.2f} Ah in "
            f"total at {attrs.get('bleed_current_a', math.nan):g} A per cell, "
            f"{attrs.get('passive_duration_h', math.nan):.1f} h; usable capacity "
            f"{attrs.get('usable_capacity_ah', math.nan):.2f} Ah now, "
            f"{attrs.get('balanced_capacity_ah', math.nan):.2f} Ah balanced "
            f"({attrs.get('recoverable_capacity_ah', math.nan):.2f} Ah recoverable); "
            f"active balancing would move {attrs.get('active_moved_ah', math.nan):.2f} Ah",
            loc="left", fontsize=9, wrap=True)
    for ax in (ax1, ax2):
        ax.grid(True, axis="y", alpha=0.3)
    ax2.set_xlim(0.4, n + 0.6)
    _cell_ticks(ax2, n, "x")
    return _save(fig, path)


def plot_capacity_resistance(result, path: Path) -> Path:
    """``capacity_resistance.png``: capacity vs R0 per cell, outliers marked."""
    from .fleet import QUALITY_NAMES, _first, cell_parameters

    fig = _figure(7.5, 5.4)
    ax = fig.subplots()
    cap, r0, source = cell_parameters(result)
    if cap is None or r0 is None:
        _empty(ax, "no per-cell capacity and resistance in this result")
        return _save(fig, path)
    cap, r0m = np.asarray(cap, float), 1000 * np.asarray(r0, float)
    flags = _first(result, QUALITY_NAMES["outlier"])
    out = np.zeros(cap.size, bool) if flags is None or flags.shape != cap.shape else \
        flags.astype(bool)
    ax.scatter(cap[~out], r0m[~out], s=28, color=_BLUE, alpha=0.8, label="cell",
               edgecolor="white", linewidth=0.5)
    if out.any():
        ax.scatter(cap[out], r0m[out], s=70, color=_RED, marker="X", label="outlier")
        for i in np.flatnonzero(out):
            ax.annotate(f"#{i + 1}", (cap[i], r0m[i]), textcoords="offset points",
                        xytext=(5, 4), fontsize=9, color=_RED)
    ax.set_xlabel("cell capacity (Ah)")
    ax.set_ylabel("cell R0 (mΩ)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5)
    ax.set_title("Capacity and resistance per cell", loc="left", fontsize=11)
    if source == "nominal":
        _note(ax, "nominal values: this result has no /quality group\n(no identification "
                  "was run), so every cell shows the same point")
        ax.ticklabel_format(useOffset=False)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;
margin:1.5em auto;padding:0 1em;color:#222}h1{font-size:1.5em;margin-bottom:.2em}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:1em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.note{background:#fff8e1;border-left:4px solid #f0c040;
padding:.4em .8em;margin:.6em 0}"""


def _img_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="{html.escape(path.stem)}"><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)} '
            f'(<code>{html.escape(path.name)}</code>)</figcaption></figure>')


def _fmt(v, fmt: str = "{:.3g}") -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else fmt.format(v)
    return html.escape(str(v)) if str(v) != "" else "—"


def _page(title: str, subtitle: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(subtitle)}</p>"
            f"{body}</body></html>\n")


def _table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                               for k, v in rows) + "</table>"


def _write_text(path: Path, text: str) -> Path:
    tmp = path.parent / f".{path.name}.tmp"
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise StorageError(f"{path}: cannot write ({e})") from e
    return path


def _out_dir(out_dir) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{out}: cannot create the report folder ({e})") from e
    return out


def render_report(result, out_dir) -> Report:
    """Render the plots and the HTML page of one result.

    Parameters
    ----------
    result : packbms.store.Result or path
        A result (or its ``.h5`` file).
    out_dir
        Folder for ``report.html`` and the PNG files (created if needed).

    Returns
    -------
    Report

    Raises
    ------
    PackBMSError
        matplotlib missing, a file that is not a packbms result, or an unwritable folder.

    Examples
    --------
    >>> rep = render_report("drive.h5", "drive_report")                 # doctest: +SKIP
    >>> rep.html, sorted(rep.plots)                                      # doctest: +SKIP
    """
    from .fleet import summary_row

    _mpl()
    if not isinstance(result, store.Result):
        result = store.load(result)
    out = _out_dir(out_dir)
    plots = {
        "pack.png": plot_pack(result, out / "pack.png"),
        "soc_heatmap.png": plot_soc_heatmap(result, out / "soc_heatmap.png"),
        "imbalance.png": plot_imbalance(result, out / "imbalance.png"),
        "capacity_resistance.png": plot_capacity_resistance(result,
                                                            out / "capacity_resistance.png"),
    }
    row = summary_row(result)
    notes = []
    if row["capacity_source"] == "nominal":
        notes.append("Capacity and resistance are the layout's nominal values: the result has "
                     "no /quality group (cell identification was not run).")
    if "/cells/soc" not in result:
        notes.append("No SoC estimate in this result (analysed with method 'none').")
    pct = "{:.1f} %"
    facts = [
        ("log", _fmt(result.attrs.get("source", ""))),
        ("start (UTC)", _fmt(row["start"])),
        ("duration", _fmt(row["duration_s"] / 60, "{:.1f} min")),
        ("cells in series", _fmt(row["n_cells"])),
        ("SoC method", _fmt(row["method"])),
        ("usable pack SoC, start → end",
         f"{_fmt(100 * row['pack_soc_start'], pct)} → {_fmt(100 * row['pack_soc_end'], pct)}"),
        ("cell SoC range over the log",
         f"{_fmt(100 * row['soc_min'], pct)} … {_fmt(100 * row['soc_max'], pct)}"),
        ("SoC spread at the end", _fmt(100 * row["soc_spread"], "{:.2f} points")),
        ("usable / recoverable capacity",
         f"{_fmt(row['usable_capacity_ah'], '{:.2f} Ah')} / "
         f"{_fmt(row['recoverable_capacity_ah'], '{:.2f} Ah')}"),
        ("capacity (mean, min, CV)",
         f"{_fmt(row['capacity_ah_mean'], '{:.2f} Ah')}, "
         f"{_fmt(row['capacity_ah_min'], '{:.2f} Ah')}, {_fmt(100 * row['capacity_cv'], pct)}"
         f" ({row['capacity_source']})"),
        ("R0 (mean, CV)", f"{_fmt(1000 * row['r0_mean_ohm'], '{:.3f} mΩ')}, "
                          f"{_fmt(100 * row['r0_cv'], pct)}"),
        ("weak cells", _fmt(row["weak_cells"])),
        *([("why", "<br>".join(html.escape(ln) for ln in str(why).splitlines()))]
          if (why := result.group_attrs.get("/quality", {}).get("weak_cells"))
          and isinstance(why, str) and "cell" in why else []),
        ("grade", _fmt(row["grade"])),
        ("packbms", _fmt(result.attrs.get("packbms_version", ""))),
    ]
    body = _table(facts) + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    body += "".join(_img_tag(plots[k], cap) for k, cap in REPORT_PLOTS.items())
    page = _page(f"packbms report: {_source_name(result)}",
                 f"result file {result.path or ''}", body)
    return Report(html=_write_text(out / "report.html", page), plots=plots, notes=notes)


# ------------------------------------------------------------------------------------------------
# fleet
# ------------------------------------------------------------------------------------------------
def _hist(ax, values: np.ndarray, xlabel: str, title: str, color: str = _BLUE) -> None:
    v = values[np.isfinite(values)]
    if not v.size:
        _empty(ax, "no values")
        ax.set_title(title, loc="left", fontsize=10)
        return
    bins = min(30, max(5, int(np.sqrt(v.size)) * 2))
    from matplotlib.ticker import MaxNLocator
    if np.ptp(v) == 0:
        half = max(abs(v[0]) * 0.05, 0.5)
        ax.bar([v[0]], [v.size], width=half / 10, color=color)
        ax.set_xlim(v[0] - half, v[0] + half)
    else:
        ax.hist(v, bins=bins, color=color, edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axvline(np.median(v), color="k", lw=1, ls="--", label=f"median {np.median(v):.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("logs")
    ax.set_title(title, loc="left", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def plot_fleet_distributions(logs: dict, path: Path) -> Path:
    ok = logs["status"] != "failed"
    fig = _figure(11, 3.8)
    axes = fig.subplots(1, 3)
    _hist(axes[0], 100 * logs["soc_spread"][ok].astype(float), "SoC spread at the end (points)",
          "Cell SoC spread")
    _hist(axes[1], logs["recoverable_capacity_ah"][ok].astype(float),
          "recoverable by balancing (Ah)", "Capacity lost to imbalance", "#9467bd")
    nominal = np.all(logs["capacity_source"][ok] == "nominal") if ok.any() else True
    _hist(axes[2], logs["capacity_ah_min"][ok].astype(float), "smallest cell capacity (Ah)",
          "Weakest cell per log" + (" (nominal: no /quality)" if nominal else ""), "#8c564b")
    fig.suptitle(f"{int(ok.sum())} logs analysed, {int((~ok).sum())} failed", x=0.01,
                 ha="left", fontsize=11)
    return _save(fig, path)


def plot_fleet_grades(logs: dict, path: Path) -> Path:
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    status, grade = logs["status"], logs["grade"]
    labels, counts, colors = [], [], []
    graded = sorted({g for g, s in zip(grade, status) if s != "failed" and g})
    for g in graded:
        labels.append(str(g))
        counts.append(int(np.sum((grade == g) & (status != "failed"))))
        colors.append(_BLUE)
    ungraded = int(np.sum((grade == "") & (status != "failed")))
    if ungraded:
        labels.append("not graded")
        counts.append(ungraded)
        colors.append(_GREY)
    failed = int(np.sum(status == "failed"))
    if failed:
        labels.append("failed")
        counts.append(failed)
        colors.append(_RED)
    from matplotlib.ticker import MaxNLocator
    bars = ax.bar(labels, counts, color=colors)
    ax.bar_label(bars, fontsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("logs")
    ax.set_ylim(0, max(counts + [1]) * 1.18)
    ax.set_title("Pack grade per log", loc="left", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    if not graded:
        _note(ax, "no grades: the results have no /quality group", loc="upper right")
    return _save(fig, path)


def plot_fleet_trends(trends: dict, path: Path, max_packs: int = 10) -> Path:
    fig = _figure(11, 7.2)
    axes = fig.subplots(3, 1, sharex=True)
    n = len(trends.get("pack_id", []))
    if not n:
        for ax in axes:
            _empty(ax, "no trends (no successful logs)")
        return _save(fig, path)
    packs, counts = np.unique(trends["pack_id"], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    shown = set(packs[order[:max_packs]])
    days = trends["days_since_first"].astype(float)
    span = float(np.nanmax(days)) if np.isfinite(days).any() else 0.0
    scale, unit = (1.0, "days") if span >= 2 else (24.0, "hours")
    days = days * scale
    for p in packs:
        m = trends["pack_id"] == p
        d = days[m]
        kw = dict(marker="o", ms=4, lw=1.2, label=str(p)) if p in shown else \
            dict(color="0.75", lw=0.7, marker=".", ms=3)
        axes[0].plot(d, 100 * trends["capacity_fade_fraction"][m].astype(float), **kw)
        axes[1].plot(d, 100 * trends["resistance_growth_fraction"][m].astype(float), **kw)
        sd = trends["self_discharge_rel_max_a"][m].astype(float)
        axes[2].plot(d, 1000 * sd, **kw)
        flagged = np.array([bool(s) for s in trends["self_discharge_flagged"][m]])
        if flagged.any():
            axes[2].scatter(d[flagged], 1000 * sd[flagged], s=90, facecolor="none",
                            edgecolor=_RED, lw=1.5, zorder=5)
    axes[0].set_ylabel("capacity fade\nvs first log (%)")
    axes[1].set_ylabel("R0 growth\nvs first log (%)")
    axes[2].set_ylabel("parked self-discharge,\nworst cell vs mean (mA)")
    axes[2].set_xlabel(f"{unit} since the pack's first log")
    axes[0].set_title("Trends per pack" + (f" ({len(shown)} packs with the most logs "
                                           f"coloured, {len(packs) - len(shown)} in grey)"
                                           if len(packs) > len(shown) else ""),
                      loc="left", fontsize=11)
    if np.all(trends["capacity_source"] == "nominal"):
        _note(axes[0], "nominal capacity and R0 (no /quality in the results): flat by "
                       "construction")
    if np.any([bool(s) for s in trends["self_discharge_flagged"]]):
        _note(axes[2], "red circle: a park with a flagged cell", loc="upper right")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8, ncol=min(5, len(shown)), loc="lower left")
    return _save(fig, path)


def render_fleet_report(summary, out_dir, *, max_rows: int = 200) -> Report:
    """Render the fleet view of a fleet summary (``fleet_summary.h5`` or its folder).

    Parameters
    ----------
    summary : path or packbms.fleet.FleetSummary
    out_dir
        Folder for ``fleet_report.html`` and the PNG files (created if needed).
    max_rows
        Longest table of failed logs / flagged parks shown on the page.

    Returns
    -------
    Report

    Raises
    ------
    PackBMSError
        matplotlib missing, not a fleet summary, or an unwritable folder.

    Examples
    --------
    >>> render_fleet_report("fleet_out/", "fleet_report")               # doctest: +SKIP
    """
    from .fleet import FleetSummary, read_summary

    _mpl()
    s = summary if isinstance(summary, FleetSummary) else read_summary(summary)
    out = _out_dir(out_dir)
    logs, trends = s.logs, s.trends
    plots = {
        "fleet_distributions.png": plot_fleet_distributions(logs, out / "fleet_distributions.png"),
        "fleet_grades.png": plot_fleet_grades(logs, out / "fleet_grades.png"),
        "fleet_trends.png": plot_fleet_trends(trends, out / "fleet_trends.png"),
    }
    status = logs["status"]
    n = len(status)
    counts = {k: int(np.sum(status == k)) for k in ("analysed", "reused", "failed")}
    facts = [("logs", str(n)), ("analysed / reused / failed",
                                f"{counts['analysed']} / {counts['reused']} / {counts['failed']}"),
             ("packs", str(len(set(logs["pack_id"])))),
             ("method", _fmt(s.attrs.get("method", ""))),
             ("database", _fmt(s.attrs.get("dbc", ""))),
             ("summary file", _fmt(s.path))]
    body = _table(facts)
    body += "".join(_img_tag(plots[k], cap) for k, cap in FLEET_PLOTS.items())
    failed = np.flatnonzero(status == "failed")
    if failed.size:
        body += f"<h2>Failed logs ({failed.size})</h2><table><tr><th>log</th><th>error</th></tr>"
        body += "".join(f"<tr><td>{html.escape(str(logs['log'][i]))}</td><td>"
                        f"{html.escape(str(logs['error'][i]))}</td></tr>"
                        for i in failed[:max_rows]) + "</table>"
        if failed.size > max_rows:
            body += f"<p>… and {failed.size - max_rows} more (see the summary CSV).</p>"
    if len(trends.get("pack_id", [])):
        fl = [i for i, f in enumerate(trends["self_discharge_flagged"]) if f]
        if fl:
            body += ("<h2>Cells flagged for self-discharge while parked</h2><table><tr><th>pack"
                     "</th><th>log after the park</th><th>parked (h)</th><th>cells</th>"
                     "<th>worst cell vs mean (mA)</th></tr>")
            body += "".join(
                f"<tr><td>{html.escape(str(trends['pack_id'][i]))}</td><td>"
                f"{html.escape(Path(str(trends['log'][i])).name)}</td><td class=num>"
                f"{float(trends['parked_h'][i]):.1f}</td><td>"
                f"{html.escape(str(trends['self_discharge_flagged'][i]))}</td><td class=num>"
                f"{1000 * float(trends['self_discharge_rel_max_a'][i]):.0f}</td></tr>"
                for i in fl[:max_rows]) + "</table>"
    page = _page("packbms fleet report", f"{n} logs", body)
    return Report(html=_write_text(out / "fleet_report.html", page), plots=plots)
