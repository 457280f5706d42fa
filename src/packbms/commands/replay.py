"""``packbms replay LOG --interface IF --channel CH [--speed X]``: play a log onto a bus."""

from __future__ import annotations

import sys


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "replay", help="play a CAN log onto a bus at its own pace (or faster)",
        description="Send the frames of a log on a CAN interface (any python-can interface), "
                    "paced by the log's timestamps divided by --speed (0 = as fast as the bus "
                    "accepts). On the virtual interface the frames keep the log's timestamps "
                    "(so a monitor sees the log's time even when replayed faster); hardware "
                    "stamps frames on reception.")
    p.add_argument("log", help="CAN log (.blf, .asc, .log, .trc, .csv, .mf4, optionally .gz)")
    p.add_argument("--interface", required=True,
                   help="python-can interface: socketcan, pcan, vector, kvaser, virtual, ...")
    p.add_argument("--channel", required=True, help="channel of the interface (e.g. vcan0)")
    p.add_argument("--bitrate", type=int, help="bitrate in bit/s (when the interface sets it)")
    p.add_argument("--bus-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra can.Bus keyword argument (repeatable)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="playback speed: 1 = real time (default), 10 = ten times faster, "
                        "0 = as fast as possible")
    p.add_argument("--wall-timestamps", action="store_true",
                   help="virtual interface: stamp frames with the wall clock instead of the "
                        "log's timestamps")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import LogFormatError, PackBMSError
    from ..live.bus import open_bus
    from ..live.replay import replay

    if not args.speed >= 0:
        raise PackBMSError(f"--speed must be >= 0 (0 = as fast as possible), got {args.speed}")
    if not Path(args.log).exists():
        raise LogFormatError("log file not found", path=args.log)
    extra = {}
    if args.interface == "virtual" and not args.wall_timestamps:
        extra["preserve_timestamps"] = True
    bus = open_bus(args.interface, args.channel, bitrate=args.bitrate, options=args.bus_option,
                   **extra)
    try:
        rep = replay(args.log, bus, speed=args.speed)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bus.shutdown()
    if not args.quiet:
        speed = "as fast as possible" if args.speed == 0 else f"speed {args.speed:g}"
        print(f"replayed {rep.frames_sent} frames ({rep.log_span_s:.1f} s of log) in "
              f"{rep.wall_s:.1f} s, {rep.rate_fps:.0f} frames/s, {speed}"
              + (f"; {rep.frames_failed} not sent ({rep.last_error})" if rep.frames_failed
                 else ""))
    return 0 if rep.frames_failed == 0 else 1
