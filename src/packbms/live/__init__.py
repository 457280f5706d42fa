"""Live monitoring on a CAN interface: per-cell SoC now, estimates published back on the bus.

The same kernels as the offline path (:func:`packbms.dbc.decode`,
:class:`packbms.telemetry.TelemetryAligner`, :func:`packbms.soc.estimate_soc_arrays`) run on
chunks of received frames with their state carried from chunk to chunk.

=====================  ==========================================================================
:class:`PackMonitor`   python-can Listener + update thread; snapshots, callbacks, status
:class:`Snapshot`      one estimate (per-cell SoC and sigma, pack SoC, stale cells, balancing)
:mod:`.publish`        the layout's ``[publish]`` section and the frames it sends
:mod:`.checkpoint`     atomic checkpoints of the estimator state
:class:`Recorder`      HDF5 recording, one row per update, bounded memory
:func:`replay`         play a log onto a bus at its own pace (or faster)
=====================  ==========================================================================

A bridge in a few lines::

    import can
    from packbms.live import PackMonitor

    bus = can.Bus(interface="socketcan", channel="can0")
    with PackMonitor(bus, "pack96.dbc", "pack96_live.toml", publish=True,
                     checkpoint="soc.npz", record="live.h5") as monitor:
        for snap in monitor.updates():
            print(f"pack {snap.pack_soc:6.1%}  weakest cell {snap.weakest_cell + 1}")
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .monitor import FrameBuffer, PackMonitor, Snapshot
from .publish import (PublishMessage, PublishSpec, Publisher, make_publish_dbc_text,
                      make_publish_layout_text, parse_publish)
from .record import Recorder
from .replay import replay

__all__ = ["PackMonitor", "Snapshot", "FrameBuffer", "PublishSpec", "PublishMessage",
           "Publisher", "parse_publish", "make_publish_dbc_text", "make_publish_layout_text",
           "Checkpoint", "save_checkpoint", "load_checkpoint", "Recorder", "replay"]
