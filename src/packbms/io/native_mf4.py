"""Native MF4 reader: asammdf's record arrays of the CAN bus-logging groups, converted whole.

python-can's ``MF4Reader`` asks asammdf for 1000 records at a time and builds one ``Message`` per
record; here each CAN channel group (``CAN_DataFrame``, ``CAN_ErrorFrame``, ``CAN_RemoteFrame``,
picked by the same rules) is read in blocks of :data:`BLOCK_RECORDS` records with the same
``MDF.get(..., raw=False)`` call and its fields are turned into FrameTable columns with NumPy.
Groups are merged in python-can's order (``heapq.merge`` on the timestamp, the earlier group first
on ties) by :func:`packbms.kernels.mf4_merge.merge_order`. The result equals python-can's frame for
frame, in the same order (with packbms' channel mapping: BusChannel - 1).

asammdf reads the whole file's block structure when it opens it; memory beyond that is bounded by
the block size per group and the chunk size.
"""

from __future__ import annotations

import gc
import io
import shutil
import sys
import tempfile
import traceback

import numpy as np

from ..errors import LogFormatError
from ..kernels.mf4_merge import merge_order
from .frames import FrameTable

__all__ = ["iter_mf4_tables", "BLOCK_RECORDS"]

#: Records asked from asammdf per call and group.
BLOCK_RECORDS = 1 << 18

_DATA, _ERROR, _REMOTE = "CAN_DataFrame", "CAN_ErrorFrame", "CAN_RemoteFrame"


def _asammdf():
    """The asammdf modules needed, or None when asammdf is not installed."""
    try:
        from asammdf import MDF, Source
        from asammdf.blocks.v4_constants import FLAG_CG_BUS_EVENT
    except ImportError:
        return None
    return MDF, Source, FLAG_CG_BUS_EVENT


def _can_groups(mdf, Source, flag_bus_event) -> list[tuple[int, str, int]]:
    """(group index, kind, records) of the groups python-can's MF4Reader reads, in its order."""
    out = []
    for index, group in enumerate(mdf.groups):
        cg = group.channel_group
        if not cg.flags & flag_bus_event or cg.cycles_nr == 0:
            continue
        src = cg.acq_source
        if src is None or not src.source_type & Source.SOURCE_BUS:
            continue
        if src.bus_type != Source.BUS_TYPE_CAN:
            continue
        names = [ch.name for ch in group.channels]
        for kind in (_DATA, _ERROR, _REMOTE):
            if kind in names:
                out.append((index, kind, int(cg.cycles_nr)))
                break
    return out


def _field(samples, kind: str, name: str):
    key = f"{kind}.{name}"
    return samples[key] if key in samples.dtype.names else None


def _ints(col) -> np.ndarray:
    """``int(x)`` of each value (float fields truncate toward zero, as int() does)."""
    col = np.asarray(col)
    if col.dtype.kind == "f":
        bad = ~np.isfinite(col)
        if bad.any():
            col = np.where(bad, 0, col)
    return col.astype(np.int64)


def _bytes2d(col, n: int) -> np.ndarray:
    col = np.asarray(col)
    if col.dtype.kind == "V":
        col = col.view(np.uint8).reshape(n, -1)
    if col.dtype != np.uint8 or col.ndim != 2:
        col = np.asarray(col, np.uint8).reshape(n, -1)
    return col


def _payload(samples, kind: str, n: int):
    """(lens, data rows) as python-can's ``DataBytes[i][:DataLength]``."""
    length = _field(samples, kind, "DataLength")
    raw = _field(samples, kind, "DataBytes")
    if length is None or raw is None:
        return np.zeros(n, np.int64), np.zeros((n, 0), np.uint8)
    data = _bytes2d(raw, n)
    w = data.shape[1]
    want = _ints(length)
    lens = np.where(want >= 0, np.minimum(want, w), np.maximum(w + want, 0))
    return lens, data


def _block_table(sig, kind: str, start_ts: float,
                 source: str) -> tuple[FrameTable, np.ndarray, np.ndarray]:
    """One block of a group as columns; also (lens, dlc) before packbms' checks."""
    s = sig.samples
    n = len(s)
    ts = np.asarray(sig.timestamps, np.float64) + start_ts
    ext_col = _field(s, kind, "IDE")
    ext = np.ones(n, bool) if ext_col is None else _ints(ext_col) != 0
    if kind == _DATA or kind == _ERROR:
        fd_col = _field(s, kind, "EDL")
        fd = np.zeros(n, bool) if fd_col is None else _ints(fd_col) != 0
        lens, raw = _payload(s, kind, n)
        dlc = lens
    else:
        fd = np.zeros(n, bool)
        lens, raw = np.zeros(n, np.int64), np.zeros((n, 0), np.uint8)
        dlc = _ints(s[f"{kind}.DLC"])
    id_col = _field(s, kind, "ID")
    aid = np.zeros(n, np.int64) if id_col is None else _ints(id_col) & 0x1FFFFFFF
    chan_col = _field(s, kind, "BusChannel")
    chan = np.zeros(n, np.int64) if chan_col is None else np.maximum(_ints(chan_col) - 1, 0)
    rtr_col = _field(s, kind, "RTR") if kind == _ERROR else None
    rtr = np.full(n, kind == _REMOTE) if rtr_col is None else _ints(rtr_col) != 0
    if kind == _ERROR and rtr_col is not None:
        # python-can's Message drops the data of a remote frame (and its dlc is len(data))
        lens = np.where(rtr, 0, lens)
        dlc = lens
    width = 64 if n and int(lens.max(initial=0)) > 8 else 8
    data = np.zeros((n, width), np.uint8)
    w = min(raw.shape[1], width)
    if w:
        keep = np.arange(w) < np.minimum(lens, w)[:, None]
        data[:, :w] = np.where(keep, raw[:, :w], 0)
    table = FrameTable(timestamp=ts, arbitration_id=aid.astype(np.uint32), is_extended=ext,
                       is_fd=fd, is_error=np.full(n, kind == _ERROR), is_remote=rtr,
                       dlc=np.clip(dlc, 0, 255).astype(np.uint8), channel=(chan & 0xFF)
                       .astype(np.uint8), data=data, source=source)
    return table, lens, dlc


def _checked(table: FrameTable, lens, dlc, src) -> FrameTable:
    """packbms' record checks (as the python engine's): finite time, DLC and payload <= 64."""
    bad = ~np.isfinite(table.timestamp) | (dlc < 0) | (dlc > 64) | (lens > 64)
    if not bad.any():
        return table
    for i in np.flatnonzero(bad)[: src.report.MAX_PROBLEMS + 1]:
        if not np.isfinite(table.timestamp[i]):
            what = f"timestamp {table.timestamp[i]} is not a finite number"
        elif not 0 <= dlc[i] <= 64:
            what = f"DLC {dlc[i]} is not between 0 and 64"
        else:
            what = f"payload has {lens[i]} bytes, over 64"
        src.problem(what)
    src.report.skipped += max(int(bad.sum()) - src.report.MAX_PROBLEMS - 1, 0)
    return table.take(~bad)


class _Group:
    """One CAN channel group read block by block."""

    def __init__(self, mdf, index: int, kind: str, records: int, start_ts: float, src):
        self.mdf, self.index, self.kind, self.records = mdf, index, kind, records
        self.start_ts, self.src = start_ts, src
        self.offset = 0
        self.table = None
        self.pos = 0

    def load(self) -> bool:
        """Read the next block; False at the end of the group."""
        if self.offset >= self.records:
            self.table = None
            return False
        sig = self.mdf.get(self.kind, self.index, record_offset=self.offset,
                           record_count=BLOCK_RECORDS, raw=False)
        got = len(sig.samples)
        self.offset = self.offset + got if got else self.records
        table, lens, dlc = _block_table(sig, self.kind, self.start_ts, self.src.path)
        self.table = _checked(table, lens, dlc, self.src)
        self.pos = 0
        return True

    @property
    def more(self) -> bool:
        return self.offset < self.records


def _merged(groups: list[_Group], out_rows: int):
    """Tables in python-can's merge order (k-way merge of the groups' blocks)."""
    for g in groups:
        g.load()
        while g.table is not None and len(g.table) == 0 and g.more:
            g.load()
    order = np.empty(out_rows, np.int64)
    while True:
        live = [g for g in groups if g.table is not None]
        if not live:
            return
        if len(live) == 1:
            g = live[0]
            rest = g.table.take(slice(g.pos, None))
            if len(rest):
                yield rest
            while g.more:
                g.load()
                if len(g.table):
                    yield g.table
            g.table = None
            return
        tables = [g.table for g in live]
        width = max(t.width for t in tables)
        both = FrameTable.concat([t.widened(width) for t in tables])
        starts = np.cumsum([0] + [len(t) for t in tables[:-1]]).astype(np.int64)
        pos = starts + np.array([g.pos for g in live], np.int64)
        end = starts + np.array([len(t) for t in tables], np.int64)
        more = np.array([g.more for g in live])
        n = merge_order(both.timestamp, pos, end, more, order)
        if n:
            yield both.take(order[:n].copy())
        for g, p, s in zip(live, pos, starts):
            g.pos = int(p - s)
            if g.pos >= len(g.table):
                if not g.more:
                    g.table = None
                else:
                    g.load()
                    while len(g.table) == 0 and g.more:
                        g.load()


def _collect_broken_mdf() -> None:
    """Finalize now the half-built MDF object asammdf leaves behind when it fails to open a file.

    Its ``__del__`` raises (no file attribute); run later by the cyclic garbage collector in the
    middle of some unrelated ``compile()``, it trips CPython 3.11's "AST constructor recursion
    depth mismatch" SystemError. Its exception is of no interest: the unraisable hook is muted
    meanwhile.
    """
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def iter_mf4_tables(src, chunk_frames: int):
    """Yield FrameTables from the MF4 file of ``src`` (a :class:`packbms.io.readers._Source`);
    the caller cuts them into chunks."""
    mods = _asammdf()
    if mods is None:
        raise LogFormatError("reading MF4 needs the optional package asammdf: "
                             "pip install asammdf", path=src.path)
    MDF, Source, flag_bus_event = mods
    # asammdf copies an unfinalised file (CANedge loggers write them) into its temporary folder
    # and leaves the copy behind when the file then fails to parse: a folder of our own, removed
    # whatever happens, keeps a fleet of bad logs from filling /tmp
    scratch = tempfile.mkdtemp(prefix="packbms-mf4-")
    try:
        try:
            if src.gz:
                mdf = MDF(io.BytesIO(src._open_binary().read()), temporary_folder=scratch)
            else:
                mdf = MDF(src.path, temporary_folder=scratch)
            start_ts = mdf.header.start_time.timestamp()
        except Exception as e:  # noqa: BLE001 - asammdf raises anything on a bad file
            # the traceback's frames hold the half-built MDF object: drop their locals so it
            # is finalized now, before its temporary folder goes
            traceback.clear_frames(e.__traceback__)
            _collect_broken_mdf()
            raise LogFormatError(f"cannot read MF4: {type(e).__name__}: {e}",
                                 path=src.path) from e
        try:
            groups = [_Group(mdf, i, kind, rec, start_ts, src)
                      for i, kind, rec in _can_groups(mdf, Source, flag_bus_event)]
            try:
                yield from _merged(groups, int(min(chunk_frames, BLOCK_RECORDS)))
            except LogFormatError:
                raise
            except Exception as e:  # noqa: BLE001
                src.problem(f"cannot read MF4 records: {type(e).__name__}: {e}", cause=e,
                            truncated=True)
        finally:
            try:
                mdf.close()
            except Exception:  # noqa: BLE001
                pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
