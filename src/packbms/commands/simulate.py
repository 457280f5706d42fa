"""``packbms simulate --out LOG [--truth TRUTH.h5] [options]``: write a simulated drive."""

from __future__ import annotations

import argparse
import datetime as _dt


def _cells(text: str) -> tuple:
    """1-based cell numbers "3,17" -> 0-based tuple (checked against --cells in :func:`run`)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"cell list {text!r}: {part!r} is not a cell number (1-based)") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"cell list {text!r}: cell numbers start at 1, "
                                             f"got {n}")
        out.append(n - 1)
    return tuple(out)


def _t0(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected Unix seconds or an ISO time "
                                         f"such as 2026-01-01T08:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def add_subparser(subparsers):
    from ..simulate import SimConfig

    d = SimConfig()
    p = subparsers.add_parser(
        "simulate", help="simulate a pack drive and write its CAN log and ground truth",
        description="Simulate a series string of equivalent-circuit cells (seeded cell spread, "
                    "rest / urban / highway / charge profile, sensor noise) and write the CAN "
                    "log its BMS would send, encoded with the reference database (see "
                    "data/pack96.dbc), plus the HDF5 ground truth. Cell numbers are 1-based.")
    p.add_argument("--out", required=True,
                   help="CAN log to write; the suffix picks the format (.blf, .asc, .log, .trc, "
                        ".csv, .mf4)")
    p.add_argument("--truth", help="HDF5 ground-truth file to write")
    p.add_argument("--dbc-out", help="also write the matching database (DBC) here")
    p.add_argument("--layout-out", help="also write the matching layout (TOML) here")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--cells", type=int, default=d.cells, help=f"series cells (default {d.cells})")
    p.add_argument("--chemistry", default=d.chemistry,
                   help="nmc, lfp or an OCV CSV (columns soc, ocv_v) (default nmc)")
    p.add_argument("--capacity-ah", type=float, default=d.capacity_ah,
                   help=f"nominal cell capacity (default {d.capacity_ah})")
    p.add_argument("--r0-ohm", type=float, default=d.r0_ohm,
                   help=f"nominal ohmic resistance (default {d.r0_ohm})")
    p.add_argument("--n-rc", type=int, choices=(1, 2), default=d.n_rc,
                   help=f"RC pairs of the true cell model (default {d.n_rc})")
    p.add_argument("--duration-s", type=float, default=d.duration_s,
                   help=f"length of the default profile (default {d.duration_s:g})")
    p.add_argument("--rest-s", type=float, default=d.rest_s,
                   help=f"the long rest after the first drive (default {d.rest_s:g})")
    p.add_argument("--initial-rest-s", type=float, default=d.initial_rest_s,
                   help=f"rest at the start (default {d.initial_rest_s:g})")
    p.add_argument("--profile",
                   help="explicit segments instead of the default plan, e.g. "
                        "'rest:60,urban:300,highway:300,rest:600,charge:180' (overrides "
                        "--duration-s, --rest-s, --initial-rest-s)")
    p.add_argument("--initial-soc", type=float, default=d.initial_soc,
                   help=f"mean initial SoC, fraction (default {d.initial_soc})")
    p.add_argument("--initial-soc-sigma", type=float, default=d.initial_soc_sigma,
                   help=f"initial SoC spread, fraction (default {d.initial_soc_sigma})")
    p.add_argument("--capacity-sigma", type=float, default=d.capacity_sigma,
                   help=f"relative capacity spread (default {d.capacity_sigma})")
    p.add_argument("--r0-sigma", type=float, default=d.r0_sigma,
                   help=f"relative R0 spread (default {d.r0_sigma})")
    p.add_argument("--outlier-cells", type=_cells, default=(),
                   help="cells (1-based, comma-separated) with abnormal self-discharge")
    p.add_argument("--outlier-self-discharge-a", type=float, default=d.outlier_self_discharge_a,
                   help=f"their self-discharge current (default {d.outlier_self_discharge_a})")
    p.add_argument("--high-r-cells", type=_cells, default=(),
                   help="cells (1-based) with high resistance")
    p.add_argument("--high-r-factor", type=float, default=d.high_resistance_factor,
                   help=f"their resistance factor (default {d.high_resistance_factor})")
    p.add_argument("--weak-cells", type=_cells, default=(),
                   help="cells (1-based) with low capacity")
    p.add_argument("--weak-capacity-factor", type=float, default=d.weak_capacity_factor,
                   help=f"their capacity factor (default {d.weak_capacity_factor})")
    p.add_argument("--current-offset-a", type=float, default=d.current_offset_a,
                   help="current sensor offset, discharge-positive "
                        f"(default {d.current_offset_a})")
    p.add_argument("--current-noise-a", type=float, default=d.current_noise_a,
                   help=f"current sensor noise sigma (default {d.current_noise_a})")
    p.add_argument("--voltage-noise-v", type=float, default=d.voltage_noise_v,
                   help=f"cell voltage noise sigma (default {d.voltage_noise_v})")
    p.add_argument("--ambient-c", type=float, default=d.ambient_c,
                   help=f"ambient temperature (default {d.ambient_c})")
    p.add_argument("--no-thermal", action="store_true",
                   help="hold every cell at its ambient temperature")
    p.add_argument("--truth-rate-hz", type=float, default=d.truth_rate_hz,
                   help=f"rate of the stored truth (default {d.truth_rate_hz:g})")
    p.add_argument("--t0", type=_t0, default=d.t0_unix,
                   help="absolute start time, Unix seconds or ISO (default "
                        "2026-01-01T08:00:00Z)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def config_from_args(args):
    """The :class:`~packbms.simulate.SimConfig` the command-line options describe."""
    from ..errors import PackBMSError
    from ..simulate import SimConfig, parse_segments

    for opt, cells in (("--outlier-cells", args.outlier_cells), ("--high-r-cells",
                       args.high_r_cells), ("--weak-cells", args.weak_cells)):
        for c in cells:
            if c >= args.cells:
                raise PackBMSError(f"{opt}: cell {c + 1} is beyond --cells {args.cells} "
                                   f"(cell numbers are 1-based)")
    return SimConfig(
        cells=args.cells, chemistry=args.chemistry, capacity_ah=args.capacity_ah,
        r0_ohm=args.r0_ohm, n_rc=args.n_rc, duration_s=args.duration_s, rest_s=args.rest_s,
        initial_rest_s=args.initial_rest_s,
        segments=parse_segments(args.profile) if args.profile else None,
        initial_soc=args.initial_soc, initial_soc_sigma=args.initial_soc_sigma,
        capacity_sigma=args.capacity_sigma, r0_sigma=args.r0_sigma,
        self_discharge_cells=args.outlier_cells,
        outlier_self_discharge_a=args.outlier_self_discharge_a,
        high_resistance_cells=args.high_r_cells, high_resistance_factor=args.high_r_factor,
        weak_cells=args.weak_cells, weak_capacity_factor=args.weak_capacity_factor,
        current_offset_a=args.current_offset_a, current_noise_a=args.current_noise_a,
        voltage_noise_v=args.voltage_noise_v, ambient_c=args.ambient_c,
        thermal=not args.no_thermal, truth_rate_hz=args.truth_rate_hz, t0_unix=args.t0)


def run(args) -> int:
    import time

    from ..simulate import check_output_paths, simulate_pack, write_simulation

    t = time.perf_counter()
    check_output_paths(args.out, args.truth, args.dbc_out, args.layout_out)
    cfg = config_from_args(args)
    result = simulate_pack(cfg, seed=args.seed)
    paths = write_simulation(result, args.out, args.truth, dbc_path=args.dbc_out,
                             layout_path=args.layout_out)
    if not args.quiet:
        tr = result.truth
        dur = result.profile.duration_s
        plan = ", ".join(f"{k} {b - a:g} s" for k, a, b in tr.segments)
        print(f"simulated {cfg.cells} cells ({tr.params.chemistry.name}, "
              f"{cfg.capacity_ah:g} Ah), {dur:g} s: {plan}")
        print(f"SoC {100 * tr.soc[0].mean():.1f} % -> {100 * tr.soc[-1].mean():.1f} % "
              f"(cells {100 * tr.soc[-1].min():.1f}..{100 * tr.soc[-1].max():.1f} %)")
        for key in ("log", "truth", "dbc", "layout"):
            if paths[key] is not None:
                extra = f" ({len(result.frames)} frames)" if key == "log" else ""
                print(f"wrote {key}: {paths[key]}{extra}")
        print(f"done in {time.perf_counter() - t:.1f} s")
    return 0
