"""``packbms monitor --interface IF --channel CH --dbc DBC --layout LAYOUT [--publish]
[--record OUT.h5] [--checkpoint FILE]``: live per-cell SoC from a CAN interface."""

from __future__ import annotations

import math
import sys
import time


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "monitor", help="live per-cell SoC from a CAN interface; publish it back on the bus",
        description="Listen on a CAN interface (any python-can interface), estimate every "
                    "cell's SoC at a fixed cadence and show a live per-cell view. Optionally "
                    "publish the estimates as CAN frames (the layout's [publish] section), "
                    "record them to HDF5 and checkpoint the estimator so a restart resumes. "
                    "Ends on Ctrl-C, --duration, --max-updates or --exit-when-idle.")
    bus = p.add_argument_group("bus")
    bus.add_argument("--interface", required=True,
                     help="python-can interface: socketcan, pcan, vector, kvaser, virtual, ...")
    bus.add_argument("--channel", required=True, help="channel of the interface (e.g. can0)")
    bus.add_argument("--bitrate", type=int, help="bitrate in bit/s (when the interface sets it)")
    bus.add_argument("--bus-option", action="append", default=[], metavar="KEY=VALUE",
                     help="extra can.Bus keyword argument (repeatable), e.g. fd=true")
    bus.add_argument("--time-source", choices=["message", "arrival"], default="message",
                     help="frame timestamps (default) or the arrival wall clock (for "
                          "interfaces that do not stamp frames)")
    p.add_argument("--dbc", required=True, help="the pack's CAN database")
    p.add_argument("--layout", required=True, help="pack layout TOML (with [publish] to publish)")
    p.add_argument("--method", choices=["ekf", "coulomb"], default="ekf",
                   help="SoC estimator (default ekf)")
    p.add_argument("--cadence", type=float, default=10.0, metavar="HZ",
                   help="estimator updates per second (default 10)")
    pub = p.add_argument_group("publishing")
    pub.add_argument("--publish", action="store_true",
                     help="send the estimates as the layout's [publish] section says")
    pub.add_argument("--publish-dbc", help="database of the published messages (default: the "
                                           "[publish] section's dbc, else --dbc)")
    pub.add_argument("--publish-interface", help="publish on a second bus (default: the "
                                                 "[publish] section's interface, else the "
                                                 "monitored bus)")
    pub.add_argument("--publish-channel", help="channel of the second bus")
    keep = p.add_argument_group("persistence")
    keep.add_argument("--record", metavar="OUT.h5",
                      help="append one row per update to this HDF5 file")
    keep.add_argument("--record-every", type=float, default=0.0, metavar="SECONDS",
                      help="seconds of bus time between recorded rows (default 0: every update)")
    keep.add_argument("--checkpoint", metavar="FILE",
                      help="resume from and keep writing this checkpoint (.npz)")
    keep.add_argument("--checkpoint-every", type=float, default=10.0, metavar="SECONDS",
                      help="seconds of bus time between checkpoints (default 10)")
    keep.add_argument("--checkpoint-max-age", type=float, default=3600.0, metavar="SECONDS",
                      help="older checkpoints are not resumed: cells start from their OCV "
                           "(default 3600)")
    out = p.add_argument_group("display and end")
    out.add_argument("--refresh", type=float, default=0.5, metavar="SECONDS",
                     help="display period (default 0.5 s)")
    out.add_argument("--columns", type=int,
                     help="cells per row of the table (default: fit the terminal, else 8)")
    out.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    out.add_argument("--max-updates", type=int, metavar="N", help="stop after N updates")
    out.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                     help="stop once no frame has arrived for this long (after the first)")
    out.add_argument("--quiet", action="store_true", help="print only the final summary")
    p.set_defaults(run=run)


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
def _pct(x) -> str:
    return "  n/a" if x is None or not math.isfinite(x) else f"{100 * x:5.1f}"


def render(snap, status: dict, *, columns: int = 8, elapsed_s: float | None = None) -> list[str]:
    """The live view as lines of text (no ANSI codes): header, pack line, per-cell table
    (``SoC±sigma`` in percent, ``*`` = stale), status line.

    Examples
    --------
    >>> render(None, {"frames_received": 0, "bus": "virtual", "bus_state": "active"})[0]
    'packbms monitor | virtual | bus active | waiting for frames (0 received)'
    """
    head = f"packbms monitor | {status.get('bus')} | bus {status.get('bus_state')}"
    if snap is None:
        return [f"{head} | waiting for frames ({status.get('frames_received', 0)} received)"]
    when = f" | {elapsed_s:7.1f} s" if elapsed_s is not None else ""
    lines = [f"{head}{when} | update {snap.update} | frames {status.get('frames_received', 0)}"]
    pv = "" if snap.pack_voltage_v is None else f"  voltage {snap.pack_voltage_v:7.2f} V"
    lines.append(
        f"pack SoC {_pct(snap.pack_soc)} %  min {_pct(snap.pack_soc_min)} % "
        f"(cell {snap.weakest_cell + 1})  max {_pct(snap.pack_soc_max)} % "
        f"(cell {snap.strongest_cell + 1})  mean {_pct(snap.pack_soc_mean)} %  "
        f"current {snap.current_a:7.1f} A{pv}")
    cells = []
    for i in range(snap.n_cells):
        mark = "*" if snap.stale[i] else " "
        cells.append(f"{i + 1:4d}{mark}{_pct(snap.soc[i])}±{100 * snap.soc_std[i]:3.1f}")
    cols = max(1, int(columns))
    for a in range(0, len(cells), cols):
        lines.append(" ".join(cells[a:a + cols]))
    stale = status.get("stale_cells") or []
    errs = (f"bus errors {status.get('bus_errors', 0)}, error frames "
            f"{status.get('error_frames', 0)}, unknown ids {status.get('unknown_id', 0)}, "
            f"dropped {status.get('frames_dropped_overflow', 0)}")
    extra = ""
    if status.get("publish"):
        extra += f" | published {status['publish']['frames_sent']}"
    if status.get("record"):
        extra += f" | recorded {status['record']['rows']}"
    ck = status.get("checkpoint") or {}
    if ck.get("path"):
        extra += f" | checkpoint {ck.get('mode')}, written {ck.get('written', 0)}"
    lat = status.get("latency_s")
    if lat:
        extra += f" | latency p50 {1e3 * lat['p50']:.0f} ms p95 {1e3 * lat['p95']:.0f} ms"
    stale_txt = ("stale cells " + ",".join(str(c) for c in stale[:12])
                 + ("..." if len(stale) > 12 else "")) if stale else "no stale cells"
    lines.append(f"{stale_txt} | {errs}{extra}")
    return lines


def _line(snap, status: dict, elapsed_s: float) -> str:
    """One plain line per refresh when stdout is not a terminal."""
    if snap is None:
        return (f"t={elapsed_s:.1f}s waiting for frames "
                f"({status.get('frames_received', 0)} received)")
    return (f"t={elapsed_s:.1f}s update={snap.update} pack_soc={_pct(snap.pack_soc).strip()}% "
            f"min={_pct(snap.pack_soc_min).strip()}% (cell {snap.weakest_cell + 1}) "
            f"max={_pct(snap.pack_soc_max).strip()}% (cell {snap.strongest_cell + 1}) "
            f"current={snap.current_a:.1f}A frames={status.get('frames_received', 0)} "
            f"stale={len(status.get('stale_cells') or [])} "
            f"errors={status.get('bus_errors', 0) + status.get('error_frames', 0)}")


class _Screen:
    """Redraws a block of lines in place with ANSI cursor movement."""

    def __init__(self, stream):
        self.stream = stream
        self.height = 0

    def draw(self, lines: list[str]) -> None:
        out = []
        if self.height:
            out.append(f"\x1b[{self.height}F")
        out.extend(f"{line}\x1b[K\n" for line in lines)
        out.append("\x1b[J")
        self.stream.write("".join(out))
        self.stream.flush()
        self.height = len(lines)


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def run(args) -> int:
    from ..errors import PackBMSError
    from ..live import PackMonitor, parse_publish
    from ..live.bus import open_bus

    for name in ("cadence", "refresh"):
        if not getattr(args, name) > 0:
            raise PackBMSError(f"--{name} must be > 0, got {getattr(args, name)}")
    if args.duration is not None and not args.duration > 0:
        raise PackBMSError(f"--duration must be > 0, got {args.duration}")
    if args.max_updates is not None and args.max_updates < 1:
        raise PackBMSError(f"--max-updates must be >= 1, got {args.max_updates}")
    if args.exit_when_idle is not None and not args.exit_when_idle > 0:
        raise PackBMSError(f"--exit-when-idle must be > 0, got {args.exit_when_idle}")

    bus = open_bus(args.interface, args.channel, bitrate=args.bitrate, options=args.bus_option)
    buses = [bus]
    try:
        publish_bus = None
        if args.publish:
            from ..layout import load_layout
            spec = parse_publish(load_layout(args.layout))
            iface = args.publish_interface or (spec.interface if spec else None)
            chan = args.publish_channel or (spec.channel if spec else None)
            if iface or chan:
                publish_bus = open_bus(iface or args.interface, chan or args.channel,
                                       bitrate=args.bitrate, options=args.bus_option)
                buses.append(publish_bus)
        monitor = PackMonitor(
            bus, args.dbc, args.layout, method=args.method, cadence_hz=args.cadence,
            publish=args.publish, publish_bus=publish_bus, publish_database=args.publish_dbc,
            checkpoint=args.checkpoint, checkpoint_every_s=args.checkpoint_every,
            checkpoint_max_age_s=args.checkpoint_max_age, record=args.record,
            record_every_s=args.record_every, time_source=args.time_source)
        ck = monitor.status()["checkpoint"]
        if ck["mode"] in ("stale", "unreadable", "mismatch"):
            print(f"warning: {ck['message']}", file=sys.stderr)
        _loop(monitor, args)
    finally:
        for b in buses:
            try:
                b.shutdown()
            except Exception:  # noqa: BLE001
                pass
    return 0


def _loop(monitor, args) -> None:
    tty = sys.stdout.isatty()
    screen = _Screen(sys.stdout) if tty and not args.quiet else None
    columns = args.columns
    if columns is None:
        import shutil
        columns = max(1, (shutil.get_terminal_size((120, 24)).columns + 1) // 15) if tty else 8
    t0 = time.monotonic()
    last_frames, last_change = 0, t0
    shown = -math.inf
    monitor.start()
    try:
        while True:
            time.sleep(min(args.refresh, 0.1))
            now = time.monotonic()
            snap = monitor.snapshot
            frames = monitor.frames_received
            if frames != last_frames:
                last_frames, last_change = frames, now
            if not args.quiet and now - shown >= args.refresh - 1e-3:
                shown = now
                status = monitor.status()
                if screen is not None:
                    screen.draw(render(snap, status, columns=columns, elapsed_s=now - t0))
                else:
                    print(_line(snap, status, now - t0), flush=True)
            if args.duration is not None and now - t0 >= args.duration:
                break
            if args.max_updates is not None and snap is not None \
                    and snap.update >= args.max_updates:
                break
            if args.exit_when_idle is not None and last_frames and \
                    now - last_change >= args.exit_when_idle:
                break
    except KeyboardInterrupt:
        pass
    finally:
        monitor.stop()
    _summary(monitor, time.monotonic() - t0)


def _summary(monitor, elapsed_s: float) -> None:
    status = monitor.status()
    snap = monitor.snapshot
    print("final:")
    for line in render(snap, status, elapsed_s=elapsed_s):
        print(line)
    if snap is None:
        print("warning: no estimate was made (no frame with the current signal received)",
              file=sys.stderr)
    ck = status["checkpoint"]
    if ck.get("path"):
        print(f"checkpoint: {ck['path']} ({ck['mode']}; written {ck['written']} times)")
    if status.get("record"):
        print(f"recording: {status['record']['path']} ({status['record']['rows']} rows)")
    if status["last_errors"]:
        for k, v in status["last_errors"].items():
            print(f"last {k} error: {v}")
