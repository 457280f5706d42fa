"""``packbms fleet LOGS_OR_DIR... --dbc DBC --layout LAYOUT --out DIR [--scheduler ADDRESS]``."""

from __future__ import annotations


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "fleet", help="analyse many logs on Dask and write a fleet summary",
        description="Analyse every log (files, or folders searched recursively) on a Dask "
                    "cluster: one HDF5 result per log in DIR plus fleet_summary.h5/.csv "
                    "(one row per log) and fleet_trends.csv (per pack over time). Logs whose "
                    "result is current are skipped; a bad log is recorded with its error and "
                    "the run goes on. Needs the 'fleet' extra: pip install 'packbms[fleet]'.")
    p.add_argument("logs", nargs="+", metavar="LOG_OR_DIR", help="log files and/or folders")
    p.add_argument("--dbc", required=True, help="CAN database shared by every log")
    p.add_argument("--layout", required=True, help="pack layout TOML shared by every log")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="connect to this Dask scheduler (tcp://host:8786) instead of starting "
                        "a local cluster; its workers must see the same paths")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: one per core; 0 = serial, in this "
                        "process)")
    p.add_argument("--method", choices=["ekf", "coulomb", "none"], default="ekf",
                   help="SoC estimator (default ekf)")
    p.add_argument("--output-dt", type=float, default=0.1, metavar="SECONDS",
                   help="row spacing of the stored time series (default 0.1 s)")
    p.add_argument("--pack-id-regex", metavar="REGEX",
                   help="pack id rule, searched in each log's absolute path: group 'pack', "
                        "else group 1, else the match (default: the layout's [fleet] "
                        "pack_id_regex, else the file name without a trailing date or number)")
    p.add_argument("--force", action="store_true", help="analyse every log again")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(run=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from ..errors import PackBMSError

    if args.workers is not None and args.workers < 0:
        raise PackBMSError(f"--workers must be >= 0, got {args.workers}")
    if args.output_dt < 0:
        raise PackBMSError(f"--output-dt must be >= 0, got {args.output_dt}")
    if args.workers != 0 or args.scheduler:
        try:
            import dask.distributed  # noqa: F401
        except ImportError as e:
            raise PackBMSError(f"'packbms fleet' needs dask.distributed ({e.name} is missing); "
                               f"install it with pip install 'packbms[fleet]' (or run serially "
                               f"with --workers 0)") from e
    from ..fleet import run_fleet

    res = run_fleet(args.logs, args.dbc, args.layout, args.out, workers=args.workers,
                    scheduler=args.scheduler, method=args.method, output_dt_s=args.output_dt,
                    pack_id_regex=args.pack_id_regex, force=args.force,
                    progress=False if args.quiet else None)
    if not args.quiet:
        n = len(res.rows)
        print(f"{n} logs in {res.elapsed_s:.1f} s: {res.count('analysed')} analysed, "
              f"{res.count('reused')} reused (result current), {res.count('failed')} failed")
        for r in [r for r in res.rows if r["status"] == "failed"][:10]:
            print(f"failed     {Path(r['log']).name}: {r['error']}")
        if res.count("failed") > 10:
            print(f"failed     ... and {res.count('failed') - 10} more (see the summary)")
        flagged = [t for t in res.trends if t["self_discharge_flagged"]]
        for t in flagged[:10]:
            print(f"parked     {t['pack_id']}: cells {t['self_discharge_flagged']} lost charge "
                  f"faster than the pack over {t['parked_h']:.1f} h before "
                  f"{Path(t['log']).name} (worst {1000 * t['self_discharge_rel_max_a']:.0f} mA)")
        for key in ("csv", "trends_csv", "h5", "parquet"):
            if key in res.paths:
                print(f"written    {res.paths[key]}")
        sys.stdout.flush()
    return 0
