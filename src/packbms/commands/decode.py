"""``packbms decode LOG --dbc DBC --out signals.h5``: export decoded signals, nothing else.

The log is read chunk by chunk (:func:`packbms.io.iter_log`), each chunk decoded and appended to
resizable datasets, so memory stays bounded by the chunk size whatever the log's size.

HDF5 layout (``--out *.h5``)
----------------------------
::

    /signals/<Message>/timestamps      float64 [n]   s, one per frame of the message, log order
    /signals/<Message>/<Signal>        float64 [n]   physical value; NaN where the frame does
                                                     not carry the signal (multiplexed out)

Group attrs: ``frame_id``, ``is_extended``, ``j1939`` (matched by PGN), ``isotp`` (decoded from
reassembled ISO-TP messages). Signal attrs: ``unit`` (from the DBC), ``multiplexed`` (True when
NaN can mean "not carried"). Root attrs: ``schema`` = ``"packbms-signals"``,
``schema_version``, ``packbms_version``, ``source``, ``dbc``, the decode counts
(``frames_decoded``, ``frames_unknown_id``, ``frames_too_short``, ``frames_error_or_remote``)
and, with ``--isotp``, ``isotp_*`` counts. Datasets are chunked and compressed (gzip level 1
with shuffle by default); the file is written under a temporary name and renamed at the end,
so a crash never leaves a half file under the final name.

Parquet (``--out *.parquet``, needs pyarrow)
--------------------------------------------
One table, one row per decoded frame: ``timestamp``, ``message`` (dictionary-encoded), then one
float64 column per signal named ``Message.Signal``, null where the row's message does not
carry it. Written row group by row group (one per message per chunk).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SCHEMA = "packbms-signals"
SCHEMA_VERSION = 1
#: elements per HDF5 chunk of a signal dataset (128 KiB of float64)
H5_CHUNK = 16384


def add_subparser(subparsers):
    p = subparsers.add_parser(
        "decode", help="decode a log's signals to HDF5 (or Parquet)",
        description="Decode every frame of a CAN log with a database and write one dataset per "
                    "signal (HDF5) or one column per signal (Parquet, needs pyarrow). Reads the "
                    "log in chunks, so memory stays bounded by --chunk-frames.")
    p.add_argument("log", help="CAN log (.blf, .asc, .log, .trc, .csv, .mf4, optionally .gz)")
    p.add_argument("--dbc", required=True, help="CAN database (DBC, KCD, ARXML, ...)")
    p.add_argument("--out", help="output: .h5/.hdf5 or .parquet (default: LOG's name with .h5 "
                                 "in the current folder)")
    p.add_argument("--messages", nargs="+", metavar="MESSAGE",
                   help="decode only these messages (default: all)")
    p.add_argument("--isotp", action="append", metavar="REQ:RESP",
                   help="reassemble ISO-TP (UDS) messages of this request:response id pair "
                        "(hex, e.g. 7E4:7EC; repeatable) before decoding them; 'auto' finds "
                        "the response ids")
    p.add_argument("--j1939", action=argparse.BooleanOptionalAction, default=None,
                   help="match messages by J1939 PGN, ignoring source (and PDU1 destination) "
                        "address; default: when the DBC declares J1939")
    p.add_argument("--chunk-frames", type=int, default=1_000_000,
                   help="frames per read chunk (bounds memory; default 1000000)")
    p.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="HDF5 compression (default gzip: readable everywhere; lzf: faster, "
                        "h5py/PyTables only)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import PackBMSError

    if args.chunk_frames < 1:
        raise PackBMSError(f"--chunk-frames must be >= 1, got {args.chunk_frames}")
    out = Path(args.out) if args.out else Path(Path(args.log).name).with_suffix(".h5")
    summary = export_signals(args.log, args.dbc, out, messages=args.messages,
                             isotp=args.isotp, j1939=args.j1939, chunk_frames=args.chunk_frames,
                             compression=None if args.compression == "none"
                             else args.compression)
    if not args.quiet:
        c = summary["counts"]
        print(f"{summary['out']}: {summary['signals']} signals of {summary['messages']} "
              f"messages, {c.decoded:,} frames decoded ({c.unknown_id:,} unknown id, "
              f"{c.too_short:,} too short, {c.error_or_remote:,} error/remote) in "
              f"{summary['seconds']:.2f} s")
        iso = summary.get("isotp")
        if iso is not None:
            print(f"ISO-TP: {iso.messages:,} messages reassembled, "
                  f"{summary['isotp_decoded']:,} decoded ({iso.sequence_errors} sequence "
                  f"errors, {iso.aborted} aborted, {iso.incomplete} incomplete, "
                  f"{iso.orphans} orphan frames)")
    return 0


def export_signals(log, dbc, out, *, messages=None, isotp=None, j1939=None,
                   chunk_frames: int = 1_000_000, compression="gzip") -> dict:
    """Decode ``log`` with ``dbc`` and write the signals to ``out`` (HDF5 or Parquet).

    Parameters
    ----------
    log : path
        Any log :func:`packbms.io.iter_log` reads.
    dbc : path, cantools database or CompiledDatabase
    out : path
        ``.h5`` / ``.hdf5`` (HDF5) or ``.parquet`` (needs pyarrow); see the module docstring.
    messages : list of str, optional
        Only these messages.
    isotp : list of "REQ:RESP" or ["auto"], optional
        Reassemble ISO-TP messages on these id pairs (or the auto-detected response ids) and
        decode them from the reassembled payloads (:mod:`packbms.isotp`); frames on those ids
        are not decoded one by one.
    j1939 : bool, optional
        J1939 PGN matching (default: as the database declares, see
        :func:`packbms.dbc.compile_database`).
    chunk_frames : int
        Frames per read chunk.
    compression : "gzip", "lzf" or None
        HDF5 filter.

    Returns
    -------
    dict
        ``out``, ``messages``, ``signals``, ``counts`` (:class:`~packbms.signals.DecodeCounts`
        of the log's frames; with ISO-TP, frames on the ISO-TP ids count as ``unknown_id``),
        ``isotp`` (:class:`~packbms.isotp.IsoTpCounts` or None), ``isotp_decoded`` (reassembled
        messages decoded), ``seconds``.

    Raises
    ------
    PackBMSError
        Unknown output suffix, pyarrow missing for Parquet, unreadable log or database, an
        unknown message name, a bad ISO-TP pair.
    """
    from ..dbc import CompiledDatabase, compile_database, decode, load_database
    from ..errors import PackBMSError
    from ..io import iter_log
    from ..isotp import IsoTpReassembler
    from ..signals import DecodeCounts

    t0 = time.perf_counter()
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        writer_cls = _H5Writer
    elif suffix == ".parquet":
        writer_cls = _ParquetWriter
    else:
        raise PackBMSError(f"{out}: unknown output format {out.suffix!r}; use .h5 (HDF5) or "
                           f".parquet (Parquet)")
    if isinstance(dbc, CompiledDatabase):
        cdb = dbc
    else:
        db = load_database(dbc) if isinstance(dbc, (str, os.PathLike)) else dbc
        cdb = compile_database(db, j1939=j1939)
    wanted = [cdb.names[cdb.message_index(m)] for m in messages] if messages else \
        list(cdb.names)
    reasm = None
    if isotp:
        auto = [p for p in isotp if str(p).strip().lower() == "auto"]
        pairs = [p for p in isotp if str(p).strip().lower() != "auto"]
        if auto and pairs:
            raise PackBMSError("--isotp auto cannot be combined with explicit id pairs")
        reasm = IsoTpReassembler(None if auto else pairs)

    counts = DecodeCounts()
    iso_decoded = 0
    writer = writer_cls(out, cdb, wanted, compression, source=str(log),
                        dbc=str(dbc) if isinstance(dbc, (str, os.PathLike)) else "")
    try:
        for frames in iter_log(log, chunk_frames=chunk_frames):
            raw_wanted = wanted
            if reasm is not None:
                iso = reasm.feed(frames)
                iso_ids = _isotp_ids(reasm)
                iso_msgs = [n for n in wanted
                            if int(cdb.frame_id[cdb.message_index(n)]) in iso_ids]
                raw_wanted = [n for n in wanted if n not in iso_msgs]
                if iso_msgs and len(iso):
                    t_iso = decode(iso, cdb, messages=iso_msgs)
                    writer.append(t_iso, isotp=True)
                    iso_decoded += t_iso.counts.decoded
            table = decode(frames, cdb, messages=raw_wanted)
            counts += table.counts
            writer.append(table, isotp=False)
        iso_counts = reasm.finish() if reasm is not None else None
        writer.finish(counts, iso_counts, iso_decoded)
    except BaseException:
        writer.abort()
        raise
    return {"out": out, "messages": len(wanted),
            "signals": sum(len(cdb.signal_names[cdb.message_index(n)]) for n in wanted),
            "counts": counts, "isotp": iso_counts, "isotp_decoded": iso_decoded,
            "seconds": time.perf_counter() - t0}


def _isotp_ids(reasm) -> set:
    if reasm.auto:
        return {k & 0x1FFFFFFF for k in reasm._auto_keys}
    return set(reasm.ids)


def _signal_info(cdb, name):
    m = cdb.message_index(name)
    msg = cdb.cantools_messages[m]
    first = int(cdb.sig_first[m])
    info = []
    for j, s in enumerate(msg.signals):
        multiplexed = bool(cdb.sig_parent[first + j] >= 0)
        info.append((s.name, s.unit or "", multiplexed))
    return m, info


class _H5Writer:
    def __init__(self, out: Path, cdb, wanted, compression, source: str, dbc: str):
        import h5py

        from ..errors import StorageError

        self.out = out
        self.cdb = cdb
        self.tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.tmp, "w")
        except OSError as e:
            raise StorageError(f"{out}: cannot write: {e}") from e
        kw = {"compression": compression, "shuffle": compression is not None}
        if compression == "gzip":
            kw["compression_opts"] = 1
        self.groups = {}
        top = self.f.create_group("signals")
        for name in wanted:
            m, info = _signal_info(cdb, name)
            g = top.create_group(name)
            g.attrs["frame_id"] = int(cdb.frame_id[m])
            g.attrs["is_extended"] = bool(cdb.is_extended[m])
            g.attrs["j1939"] = bool(cdb.j1939[m])
            g.attrs["isotp"] = False
            ds = {"timestamps": g.create_dataset("timestamps", (0,), np.float64,
                                                 maxshape=(None,), chunks=(H5_CHUNK,), **kw)}
            ds["timestamps"].attrs["unit"] = "s"
            for sig, unit, multiplexed in info:
                d = g.create_dataset(sig, (0,), np.float64, maxshape=(None,),
                                     chunks=(H5_CHUNK,), fillvalue=np.nan, **kw)
                d.attrs["unit"] = unit
                d.attrs["multiplexed"] = multiplexed
                ds[sig] = d
            self.groups[name] = (g, ds)
        from .. import __version__

        a = self.f.attrs
        a["schema"] = SCHEMA
        a["schema_version"] = SCHEMA_VERSION
        a["packbms_version"] = __version__
        a["source"] = source
        a["dbc"] = dbc

    def append(self, table, isotp: bool) -> None:
        for name, ms in table.messages.items():
            n = len(ms)
            if n == 0 or name not in self.groups:
                continue
            g, ds = self.groups[name]
            if isotp:
                g.attrs["isotp"] = True
            at = ds["timestamps"].shape[0]
            ds["timestamps"].resize((at + n,))
            ds["timestamps"][at:] = ms.timestamps
            for sig in ms.signal_names:
                values, _ = ms.dense(sig)
                d = ds[sig]
                d.resize((at + n,))
                d[at:] = values

    def finish(self, counts, iso_counts, iso_decoded) -> None:
        a = self.f.attrs
        for k, v in vars(counts).items():
            a[f"frames_{k}"] = int(v)
        if iso_counts is not None:
            for k, v in vars(iso_counts).items():
                a[f"isotp_{k}"] = int(v)
            a["isotp_decoded"] = int(iso_decoded)
        self.f.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        try:
            self.f.close()
        except Exception:   # noqa: BLE001 - best effort on the way out
            pass
        if self.tmp.exists():
            self.tmp.unlink()


class _ParquetWriter:
    def __init__(self, out: Path, cdb, wanted, compression, source: str, dbc: str):
        from ..errors import PackBMSError, StorageError

        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise PackBMSError(f"{out}: writing Parquet needs pyarrow; install it with "
                               f"pip install pyarrow (or write .h5)") from None
        self.pa, self.pq = pa, pq
        self.out = out
        self.tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        self.columns = {}
        fields = [pa.field("timestamp", pa.float64()),
                  pa.field("message", pa.dictionary(pa.int32(), pa.string()))]
        for name in wanted:
            _, info = _signal_info(cdb, name)
            for sig, unit, _ in info:
                col = f"{name}.{sig}"
                self.columns[col] = len(fields)
                fields.append(pa.field(col, pa.float64(), metadata={"unit": unit}))
        from .. import __version__

        self.schema = pa.schema(fields, metadata={
            "schema": SCHEMA, "schema_version": str(SCHEMA_VERSION),
            "packbms_version": __version__, "source": source, "dbc": dbc})
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.w = pq.ParquetWriter(str(self.tmp), self.schema)
        except OSError as e:
            raise StorageError(f"{out}: cannot write: {e}") from e

    def append(self, table, isotp: bool) -> None:
        pa = self.pa
        for name, ms in table.messages.items():
            n = len(ms)
            if n == 0:
                continue
            arrays = [None] * len(self.schema)
            arrays[0] = pa.array(ms.timestamps)
            arrays[1] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                       pa.array([name]))
            for sig in ms.signal_names:
                values, present = ms.dense(sig)
                arrays[self.columns[f"{name}.{sig}"]] = pa.array(values, mask=~present)
            for i, a in enumerate(arrays):
                if a is None:
                    arrays[i] = pa.nulls(n, pa.float64())
            self.w.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def finish(self, counts, iso_counts, iso_decoded) -> None:
        self.w.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        try:
            self.w.close()
        except Exception:   # noqa: BLE001 - best effort on the way out
            pass
        if self.tmp.exists():
            self.tmp.unlink()
