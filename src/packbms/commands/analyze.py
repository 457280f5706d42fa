"""``packbms analyze LOG --dbc DBC --layout LAYOUT [--out OUT.h5]``."""

from __future__ import annotations

from pathlib import Path


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "analyze", help="analyse a logged drive and write an HDF5 result",
        description="Read a CAN log, decode it with the DBC, align the signals the layout names "
                    "and write the HDF5 result; prints a summary.")
    p.add_argument("log", help="CAN log (.blf, .asc, .log, .trc, .csv, .mf4, optionally .gz)")
    p.add_argument("--dbc", required=True, help="CAN database (DBC, KCD, ARXML, ...)")
    p.add_argument("--layout", required=True, help="pack layout TOML")
    p.add_argument("--out", help="result file (default: LOG's name with .h5 in the current folder)")
    p.add_argument("--method", choices=["auto", "smoother", "ekf", "coulomb", "none"],
                   default="auto",
                   help="SoC estimator: auto (default) smooths the whole drive (RTS) when it "
                        "fits in memory, else streams the EKF; smoother, ekf, coulomb, or none "
                        "(telemetry only)")
    p.add_argument("--fit", action="store_true",
                   help="identify per-cell capacity, R0, RC and self-discharge from the log, "
                        "estimate with them and grade the cells (stored under /quality)")
    p.add_argument("--output-dt", type=float, default=0.1, metavar="SECONDS",
                   help="row spacing of the stored time series (default 0.1 s; 0 keeps every "
                        "sample of the current; estimation always uses every sample)")
    p.add_argument("--chunk-frames", type=int, default=100_000,
                   help="frames per read chunk: peak memory is about one chunk plus the stored "
                        "result (default 100000)")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="HDF5 compression (default gzip, readable everywhere; lzf is faster but "
                        "h5py-only)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..analysis import analyze
    from ..errors import PackBMSError
    from ..summary import quality_summary, soc_summary, telemetry_summary

    if args.chunk_frames < 1:
        raise PackBMSError(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    out = Path(args.out) if args.out else Path(Path(args.log).name).with_suffix(".h5")
    if args.output_dt < 0:
        raise PackBMSError(f"--output-dt must be >= 0, got {args.output_dt}")
    a = analyze(args.log, args.dbc, args.layout, out=out, method=args.method, fit=args.fit,
                output_dt_s=args.output_dt, chunk_frames=args.chunk_frames,
                compression=None if args.compression == "none" else args.compression)
    if not args.quiet:
        print(telemetry_summary(a))
        for text in (soc_summary(a), quality_summary(a)):
            if text:
                print(text)
    return 0
