"""ISO-TP (ISO 15765-2) reassembly kernel: single, first, consecutive and flow-control frames.

Frames arrive in log order with a stream number each (one stream per channel, id kind and
arbitration id; -1 for frames that belong to no stream). Each stream runs the receiver state
machine of ISO 15765-2:

* single frame (PCI ``0x0L``; CAN FD escape ``0x00 LL`` when the frame is longer than 8 bytes):
  a complete message of ``L`` bytes;
* first frame (``0x1L LL``, 12-bit length; escape ``0x10 0x00`` + 32-bit length): starts a
  message, carrying its first bytes;
* consecutive frame (``0x2N``): the next bytes; ``N`` must be the expected sequence number
  (1 after the first frame, then +1 modulo 16), else the message is abandoned (a *sequence
  error*) and the stream waits for the next single or first frame;
* flow control (``0x3S``): ignored (counted).

A single or first frame that arrives while a message is in progress abandons that message
(*aborted*). A consecutive frame with no message in progress is an *orphan*. A message longer
than ``max_length`` is skipped (*too long*; its consecutive frames are not orphans).

The per-stream receiver state (``expect``, ``got``, ``seq``, ``skipping``, ``first_ts`` and the
assembly buffer ``buf``) lives in arrays owned by the caller, so a log read chunk by chunk
reassembles messages that straddle chunks. The kernel runs twice per chunk: to count
(``write`` False, on copies of the state), then to copy bytes (``write`` True) into outputs
sized by the first run. Every payload read is bounded by the frame's length
``min(dlc, width)``; a protocol byte that promises more bytes than the frame has is *bad*.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

#: slots of the ``counts`` array
MESSAGES = 0
SINGLE = 1
SEQUENCE_ERRORS = 2
ABORTED = 3
ORPHANS = 4
TOO_LONG = 5
INCOMPLETE = 6
BAD = 7
FLOW_CONTROL = 8
MAX_LENGTH = 9        # longest completed message (bytes)
MAX_STARTED = 10      # longest message started (sizes the per-stream buffer)
N_COUNTS = 11


@kernel
def reassemble(data, dlc, timestamp, stream, max_length, prefix, write,
               expect, got, seq, skipping, first_ts, buf,
               out_data, out_length, out_stream, out_first_ts, out_ts, counts):
    """Reassemble ISO-TP messages per stream.

    Parameters
    ----------
    data : uint8 [N, W]
        Frame payloads.
    dlc : uint8 [N]
        Payload lengths (bytes); only ``min(dlc, W)`` bytes are read.
    timestamp : float64 [N]
    stream : int64 [N]
        Stream of each frame, 0 .. S - 1, or -1 to skip it.
    max_length : int
        Longest message kept (bytes).
    prefix : bool
        Write the message length's low byte before the message (``out_data[j, 0]``).
    write : bool
        False: count only (outputs and ``buf`` untouched). True: also fill the outputs.
    expect, got, seq : int64 [S]
        Per-stream state (in/out): length of the message in progress (0: idle), bytes
        received, next sequence number.
    skipping : bool [S]
        In/out: inside a message that is too long.
    first_ts : float64 [S]
        In/out: time of the first frame of the message in progress.
    buf : uint8 [S, B]
        Per-stream assembly buffer (write only), ``B >= max(expect)`` and ``>=
        counts[MAX_STARTED]`` of the counting run.
    out_data : uint8 [M, W_out]
        Completed messages in completion order (write only; zeroed by the caller), with
        ``W_out >= counts[MAX_LENGTH] + prefix``.
    out_length : int64 [M]
        Message length (bytes, without the prefix).
    out_stream : int64 [M]
    out_first_ts, out_ts : float64 [M]
        Times of the first (or single) frame and of the completing frame.
    counts : int64 [N_COUNTS] (zeroed)
        See the slot constants of this module (``INCOMPLETE`` is left to the caller: a
        message in progress may complete in the next chunk).
    """
    n = stream.shape[0]
    width = data.shape[1]
    pre = 1 if prefix else 0
    j = 0
    for i in range(n):
        k = stream[i]
        if k < 0:
            continue
        avail = min(np.int64(dlc[i]), width)
        if avail < 1:
            counts[BAD] += 1
            continue
        b0 = np.int64(data[i, 0])
        kind = b0 >> 4
        if kind == 2:                           # -- consecutive frame
            if expect[k] == 0:
                if not skipping[k]:
                    counts[ORPHANS] += 1
                continue
            if (b0 & 15) != seq[k]:
                counts[SEQUENCE_ERRORS] += 1
                expect[k] = 0
                continue
            take = min(avail - 1, expect[k] - got[k])
            if write:
                for b in range(take):
                    buf[k, got[k] + b] = data[i, 1 + b]
            got[k] += take
            seq[k] = (seq[k] + 1) & 15
            if got[k] < expect[k]:
                continue
            length = expect[k]
            expect[k] = 0
            if write:
                out_data[j, 0] = np.uint8(length & 0xFF)
                for b in range(length):
                    out_data[j, pre + b] = buf[k, b]
                out_length[j] = length
                out_stream[j] = k
                out_first_ts[j] = first_ts[k]
                out_ts[j] = timestamp[i]
            j += 1
            counts[MAX_LENGTH] = max(counts[MAX_LENGTH], length)
            continue
        if kind == 3:                           # -- flow control
            counts[FLOW_CONTROL] += 1
            continue
        if kind > 3:
            counts[BAD] += 1
            continue
        # -- single or first frame: both start over
        if kind == 0:
            if avail > 8 and b0 == 0:           # CAN FD single frame with escape
                length = np.int64(data[i, 1])
                off = 2
            else:
                length = b0 & 15
                off = 1
            if length == 0 or off + length > avail:
                counts[BAD] += 1
                continue
        else:
            if avail < 8:
                counts[BAD] += 1
                continue
            length = ((b0 & 15) << 8) | np.int64(data[i, 1])
            off = 2
            if length == 0:                     # escape: 32-bit length (ISO 15765-2:2016)
                length = ((np.int64(data[i, 2]) << 24) | (np.int64(data[i, 3]) << 16) |
                          (np.int64(data[i, 4]) << 8) | np.int64(data[i, 5]))
                off = 6
            if length <= avail - off:           # fits in one frame: not a first frame
                counts[BAD] += 1
                continue
        if expect[k] > 0:
            counts[ABORTED] += 1
            expect[k] = 0
        skipping[k] = False
        if length > max_length:
            counts[TOO_LONG] += 1
            skipping[k] = kind == 1
            continue
        if kind == 0:
            if write:
                out_data[j, 0] = np.uint8(length & 0xFF)
                for b in range(length):
                    out_data[j, pre + b] = data[i, off + b]
                out_length[j] = length
                out_stream[j] = k
                out_first_ts[j] = timestamp[i]
                out_ts[j] = timestamp[i]
            j += 1
            counts[SINGLE] += 1
            counts[MAX_LENGTH] = max(counts[MAX_LENGTH], length)
            continue
        take = avail - off
        if write:
            for b in range(take):
                buf[k, b] = data[i, off + b]
        expect[k] = length
        got[k] = take
        seq[k] = 1
        first_ts[k] = timestamp[i]
        counts[MAX_STARTED] = max(counts[MAX_STARTED], length)
    counts[MESSAGES] = j
