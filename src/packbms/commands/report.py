"""``packbms report RESULT.h5 [--out DIR]`` and ``packbms report --fleet SUMMARY [--out DIR]``."""

from __future__ import annotations


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "report", help="plots and a self-contained HTML page of a result or a fleet run",
        description="Render PNG plots (pack current and voltage, cell SoC heat map, imbalance "
                    "and balancing plan, capacity vs resistance) and one HTML page with every "
                    "plot embedded. With --fleet, the fleet view of a 'packbms fleet' output. "
                    "Needs the 'plot' extra: pip install 'packbms[plot]'.")
    p.add_argument("result", nargs="?", metavar="RESULT.h5", help="a result of packbms analyze")
    p.add_argument("--fleet", metavar="SUMMARY",
                   help="fleet_summary.h5 of 'packbms fleet' (or its folder)")
    p.add_argument("--out", metavar="DIR",
                   help="report folder (default: RESULT's name + '_report', or "
                        "'fleet_report', in the current folder)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import PackBMSError

    if (args.result is None) == (args.fleet is None):
        raise PackBMSError("give either a RESULT.h5 or --fleet SUMMARY (one of the two)")
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise PackBMSError("'packbms report' needs matplotlib; install it with "
                           "pip install 'packbms[plot]'") from e
    from ..report import render_fleet_report, render_report

    if args.fleet is not None:
        out = Path(args.out) if args.out else Path("fleet_report")
        rep = render_fleet_report(args.fleet, out)
    else:
        out = Path(args.out) if args.out else Path(Path(args.result).stem + "_report")
        rep = render_report(args.result, out)
    if not args.quiet:
        for note in rep.notes:
            print(f"note       {note}")
        print(f"written    {rep.html} ({len(rep.plots)} plots embedded; PNGs in {out})")
    return 0
