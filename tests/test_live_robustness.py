"""packbms.live keeps running through what a real bus does: receive errors, bus-off, error
frames, bursts of unknown identifiers, a cell that stops reporting, time jumps, a full buffer,
failing callbacks and internal failures. Everything is counted in ``status()``.

Buses are python-can's in-process virtual interface (a subclass of it fails on demand)."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import can
import numpy as np
import pytest
from can.interfaces.virtual import VirtualBus

from packbms.io import read_log, write_log
from packbms.io.frames import FrameTable
from packbms.live import PackMonitor, replay
from packbms.simulate import SimConfig, simulate_pack

CELLS = 12


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """Two minutes of a 12-cell pack (drive then rest), as read back from BLF."""
    d = tmp_path_factory.mktemp("robust")
    sim = simulate_pack(SimConfig(cells=CELLS, segments=(("rest", 20.0), ("urban", 60.0),
                                                         ("rest", 40.0))), seed=5)
    write_log(d / "drive.blf", sim.frames)
    (d / "pack.dbc").write_text(sim.dbc_text)
    (d / "pack.toml").write_text(sim.layout_text)
    return {"frames": read_log(d / "drive.blf"), "dbc": d / "pack.dbc",
            "layout": d / "pack.toml"}


def _chunks(frames, seconds: float):
    ts = frames.timestamp
    edges = np.append(np.searchsorted(ts, np.arange(ts[0], ts[-1] + seconds, seconds)), len(ts))
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            yield frames.take(slice(int(a), int(b)))


def _monitor(drive, **kw) -> PackMonitor:
    return PackMonitor(None, drive["dbc"], drive["layout"], **kw)


@pytest.fixture(scope="module")
def clean(drive):
    mon = _monitor(drive)
    for c in _chunks(drive["frames"], 0.5):
        mon.process(c)
    return mon.snapshot


def test_error_remote_unknown_and_short_frames_are_counted(drive, clean):
    """Fed frame by frame through the Listener interface, with junk mixed in: the estimate
    is the clean run's, and each kind of junk is counted."""
    rng = np.random.default_rng(3)
    mon = _monitor(drive)
    msgs = drive["frames"].to_messages()
    junk = {"error": 0, "remote": 0, "unknown": 0, "short": 0}
    t_last = None
    for k, m in enumerate(msgs):
        mon.on_message_received(m)
        if k % 50 == 0:
            mon.on_message_received(can.Message(timestamp=m.timestamp, is_error_frame=True,
                                                arbitration_id=0x20000080, dlc=8))
            junk["error"] += 1
        if k % 77 == 0:
            mon.on_message_received(can.Message(timestamp=m.timestamp, arbitration_id=0x100,
                                                is_remote_frame=True, is_extended_id=False,
                                                dlc=8))
            junk["remote"] += 1
        if k == len(msgs) // 2:                       # a burst of 20000 unknown identifiers
            ids = rng.integers(0x600, 0x7FF, 20000)
            for i in ids:
                mon.on_message_received(can.Message(timestamp=m.timestamp,
                                                    arbitration_id=int(i),
                                                    is_extended_id=False, data=b"\x01\x02"))
            junk["unknown"] += len(ids)
        if k % 400 == 0:                               # a cell-voltage frame cut short
            mon.on_message_received(can.Message(timestamp=m.timestamp, arbitration_id=0x200,
                                                is_extended_id=False, data=b"\x00\x01"))
            junk["short"] += 1
        if t_last is None or m.timestamp - t_last >= 0.5:
            mon.step()
            t_last = m.timestamp
    mon.step()
    st = mon.status()
    assert st["error_frames"] == junk["error"]
    assert st["remote_frames"] == junk["remote"]
    assert st["unknown_id"] == junk["unknown"]
    assert st["telemetry"]["decode"]["too_short"] == junk["short"]
    assert st["update_errors"] == 0 and st["frames_dropped_overflow"] == 0
    assert st["frames_received"] == len(msgs) + sum(junk.values())
    np.testing.assert_allclose(mon.snapshot.soc, clean.soc, atol=1e-6)


class FlakyBus(VirtualBus):
    """A virtual bus that can be switched into bus-off: receiving raises python-can's
    CanOperationError and ``state`` reports ``BusState.ERROR``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.off = threading.Event()
        self.raised = 0

    def _recv_internal(self, timeout):
        if self.off.is_set():
            self.raised += 1
            time.sleep(0.001)
            raise can.CanOperationError("bus-off: the controller left the bus")
        return super()._recv_internal(timeout)

    @property
    def state(self):
        return can.BusState.ERROR if self.off.is_set() else can.BusState.ACTIVE


def test_receive_errors_and_bus_off_are_survived(drive, clean, caplog):
    ch = f"packbms-flaky-{uuid.uuid4().hex[:8]}"
    rx = FlakyBus(channel=ch)
    tx = can.Bus(interface="virtual", channel=ch, preserve_timestamps=True)
    frames = drive["frames"]
    half = len(frames) // 2
    before = set(threading.enumerate())
    try:
        with caplog.at_level(logging.WARNING, logger="packbms.live"):
            with PackMonitor(rx, drive["dbc"], drive["layout"], cadence_hz=20) as mon:
                replay(frames.take(slice(0, half)), tx, speed=0)
                rx.off.set()                             # bus-off for 1.5 s
                replay(frames.take(slice(half, None)), tx, speed=0)   # queued meanwhile
                time.sleep(1.5)
                st = mon.status()
                assert st["bus_state"] == "bus-off"
                rx.off.clear()
                t = time.monotonic()
                while (mon.status()["frames_received"] < len(frames)
                       or mon.status()["bus_state"] != "active") and time.monotonic() - t < 10:
                    time.sleep(0.05)
    finally:
        rx.shutdown()
        tx.shutdown()
    st = mon.status()
    assert rx.raised > 0 and 0 < st["bus_errors"] <= rx.raised
    assert st["bus_off_events"] == 1 and st["bus_state"] == "active"
    assert "bus-off" in st["last_errors"]["bus"]
    assert st["frames_received"] == len(frames) and st["update_errors"] == 0
    # backing off: a bus failing for 1.5 s is not polled thousands of times
    assert rx.raised < 200
    np.testing.assert_allclose(mon.snapshot.soc, clean.soc, atol=1e-6)
    assert any("bus-off" in r.getMessage() for r in caplog.records)
    time.sleep(0.05)
    assert set(threading.enumerate()) <= before


def test_a_cell_that_stops_reporting_is_marked_stale(drive, clean):
    frames = drive["frames"]
    t0 = frames.timestamp[0]
    # CellGroup 1 carries cells 4..6 (1-based); it stops after 40 s
    gone = (frames.arbitration_id == 0x200) & (frames.data[:, 0] == 1) & \
        (frames.timestamp > t0 + 40)
    mon = _monitor(drive)
    for c in _chunks(frames.take(~gone), 0.5):
        mon.process(c)
    snap = mon.snapshot
    assert snap.stale_cells == [4, 5, 6]
    assert mon.status()["stale_cells"] == [4, 5, 6]
    assert np.all(np.isnan(snap.cell_voltage[3:6]))
    assert np.all(np.isfinite(snap.soc))
    # the others are untouched (one filter per cell); the stale ones only predict: sigma grows
    others = np.r_[0:3, 6:CELLS]
    np.testing.assert_array_equal(snap.soc[others], clean.soc[others])
    assert np.all(snap.soc_std[3:6] > 1.5 * clean.soc_std[3:6])
    assert np.abs(snap.soc[3:6] - clean.soc[3:6]).max() < 0.02


@pytest.mark.parametrize("shift_s", [-1000.0, 600.0])
def test_time_jumps(drive, clean, shift_s):
    frames = drive["frames"]
    jumped = frames.take(slice(None))
    k = int(np.searchsorted(frames.timestamp, frames.timestamp[0] + 70))
    jumped.timestamp = jumped.timestamp.copy()
    jumped.timestamp[k:] += shift_s
    mon = _monitor(drive)
    updates = []
    for c in _chunks(frames.take(slice(0, k)), 0.5):
        mon.process(c)
    n_before = mon.snapshot.update
    for c in _chunks(jumped.take(slice(k, None)), 0.5):
        if (s := mon.process(c)) is not None:
            updates.append(s)
    st = mon.status()
    assert updates and updates[-1].update > n_before + 50      # it keeps estimating
    if shift_s < 0:
        assert st["time_jumps_backward"] == 1 and st["time_gaps"] == 0
        assert updates[0].time_s < 1.0                           # a new time base
    else:
        assert st["time_jumps_backward"] == 0 and st["time_gaps"] == 1
        assert st["longest_gap_s"] == pytest.approx(shift_s, abs=0.1)
    assert st["update_errors"] == 0
    # the SoC carries on across the jump (no current is counted across a gap)
    assert np.abs(mon.snapshot.soc - clean.soc).max() < 0.005


def test_small_backward_steps_are_dropped_and_counted(drive, clean):
    frames = drive["frames"]
    mon = _monitor(drive)
    chunks = list(_chunks(frames, 0.5))
    for i, c in enumerate(chunks):
        if i == 40:           # a late chunk from 0.5 s ago, replayed (below time_jump_s)
            mon.process(chunks[38])
        mon.process(c)
    st = mon.status()
    assert st["time_jumps_backward"] == 0
    assert st["telemetry"]["current_dropped_backwards"] > 0
    np.testing.assert_allclose(mon.snapshot.soc, clean.soc, atol=5e-3)


def test_full_buffer_drops_and_counts(drive):
    mon = _monitor(drive, max_buffer_frames=100)
    msgs = [m for m in drive["frames"].take(slice(0, 3000)).to_messages()
            if m.arbitration_id in (0x100, 0x200)][:1000]
    for m in msgs:
        mon.on_message_received(m)
    mon.step()
    st = mon.status()
    assert st["frames_dropped_overflow"] == 900 and st["frames_buffered"] == 100
    for m in msgs[:50]:                                # room again after the swap
        mon.on_message_received(m)
    assert mon.status()["frames_dropped_overflow"] == 900


def test_fd_frames_too_long_and_malformed_messages(drive):
    mon = _monitor(drive)
    mon.on_message_received(can.Message(arbitration_id=0x100, is_extended_id=False,
                                        is_fd=True, data=bytes(64)))
    assert mon.status()["too_long"] == 1
    broken = can.Message(arbitration_id=0x100, is_extended_id=False, data=bytes(8))
    broken.timestamp = "yesterday"                 # what a buggy driver might hand over
    mon.on_message_received(broken)
    st = mon.status()
    assert st["bad_messages"] == 1 and "malformed" in st["last_errors"]["bus"]
    assert st["frames_buffered"] == 0


def test_failing_callbacks_and_internal_errors_do_not_stop_it(drive, clean, monkeypatch,
                                                              caplog):
    good = []

    def bad(snap):
        raise RuntimeError("dashboard is down")

    mon = _monitor(drive, on_update=[bad, good.append])
    import packbms.soc as soc_module
    real = soc_module.estimate_soc_arrays
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 20:
            raise FloatingPointError("simulated kernel failure")
        return real(*a, **k)

    monkeypatch.setattr(soc_module, "estimate_soc_arrays", flaky)
    with caplog.at_level(logging.WARNING, logger="packbms.live"):
        for c in _chunks(drive["frames"], 0.5):
            mon.process(c)
    st = mon.status()
    assert st["update_errors"] == 1 and "simulated kernel failure" in st["last_errors"]["update"]
    assert st["callback_errors"] == len(good) == st["updates"] > 200
    assert "dashboard is down" in st["last_errors"]["callback"]
    assert sum("failed" in r.getMessage() for r in caplog.records) <= 4   # no log flood
    # one lost chunk of 0.5 s: the estimate is still the clean one within noise
    assert np.abs(mon.snapshot.soc - clean.soc).max() < 0.005


def test_arrival_time_source_for_unstamped_frames(drive):
    mon = _monitor(drive, time_source="arrival")
    frames = drive["frames"].take(slice(0, 3000))
    for m in frames.to_messages():
        m.timestamp = 0.0                                 # an interface that stamps nothing
        mon.on_message_received(m)
    snap = mon.step()
    assert snap is not None and abs(snap.timestamp - time.time()) < 5


def test_threads_end_and_stop_is_idempotent(drive):
    ch = f"packbms-threads-{uuid.uuid4().hex[:8]}"
    before = set(threading.enumerate())
    bus = can.Bus(interface="virtual", channel=ch)
    try:
        for _ in range(3):
            mon = PackMonitor(bus, drive["dbc"], drive["layout"], cadence_hz=50).start()
            assert mon.status()["running"]
            assert mon.wait(timeout=0.05) is None           # nothing received yet
            mon.stop()
            mon.stop()
            assert not mon.status()["running"]
            assert mon.wait(timeout=1.0) is None
            assert list(mon.updates(timeout=0.1)) == []
            # python-can's Notifier.stop calls Listener.stop: also fine
            mon2 = PackMonitor(None, drive["dbc"], drive["layout"], cadence_hz=50)
            notifier = can.Notifier(bus, [mon2], timeout=0.05)
            mon2.start()
            notifier.stop()
            assert not mon2.status()["running"]
    finally:
        bus.shutdown()
    time.sleep(0.05)
    assert set(threading.enumerate()) <= before
    with pytest.raises(Exception, match="stopped"):
        mon.start()


def test_stop_from_a_callback(drive):
    """A script may stop the monitor from its own callback (after N updates, say)."""
    ch = f"packbms-cb-{uuid.uuid4().hex[:8]}"
    before = set(threading.enumerate())
    rx = can.Bus(interface="virtual", channel=ch)
    tx = can.Bus(interface="virtual", channel=ch, preserve_timestamps=True)
    try:
        mon = PackMonitor(rx, drive["dbc"], drive["layout"], cadence_hz=50)
        mon.add_callback(lambda s: mon.stop() if s.update >= 3 else None)
        mon.start()
        replay(drive["frames"].take(slice(0, 3000)), tx, speed=20)
        t = time.monotonic()
        while mon.status()["running"] and time.monotonic() - t < 10:
            time.sleep(0.02)
        assert not mon.status()["running"] and mon.snapshot.update >= 3
        assert mon.status()["callback_errors"] == 0
    finally:
        rx.shutdown()
        tx.shutdown()
    time.sleep(0.05)
    assert set(threading.enumerate()) <= before


def test_empty_and_wrong_input(drive):
    mon = _monitor(drive)
    assert mon.process(FrameTable.empty(0)) is None
    assert mon.step() is None
    with pytest.raises(TypeError, match="FrameTable"):
        mon.process([1, 2, 3])
    from packbms.errors import PackBMSError
    with pytest.raises(PackBMSError, match="cadence_hz must be a finite number > 0"):
        _monitor(drive, cadence_hz=0)
    from packbms.soc import CoulombConfig, EKFConfig
    with pytest.raises(PackBMSError, match="takes a EKFConfig, got CoulombConfig"):
        _monitor(drive, config=CoulombConfig())
    with pytest.raises(PackBMSError, match="voltage_noise_v"):
        _monitor(drive, config=EKFConfig(voltage_noise_v=-1.0))
    with pytest.raises(PackBMSError, match="unknown method"):
        _monitor(drive, method="ukf")
