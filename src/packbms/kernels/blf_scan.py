"""Scan the inflated bytes of BLF log containers for CAN frame objects.

One kernel, :func:`scan_blf`, walks the object stream of one container (with the unparsed tail of
the previous container in front, as python-can's ``BLFReader`` joins them) and writes the frames
straight into FrameTable columns. It mirrors ``can.io.blf.BLFReader._parse_data`` object by
object: the ``LOBJ`` search window of 8 bytes after each object (padding), header versions 1 and
2, the 10 us / 1 ns timestamp flag, and the fields python-can takes from each object type:

=========================== ==== ==============================================================
object                      type body fields used (offsets from the end of the object header)
=========================== ==== ==============================================================
CAN_MESSAGE, CAN_MESSAGE2   1,86 channel u16 @0, flags u8 @2, dlc u8 @3, id u32 @4, data @8
CAN_ERROR_EXT               73   channel u16 @0, dlc u8 @10, id u32 @16, data @24
CAN_FD_MESSAGE              100  channel u16 @0, flags @2, dlc @3, id @4, fd flags @13,
                                 valid bytes @14, data @20
CAN_FD_MESSAGE_64           101  channel u8 @0, dlc @1, valid bytes @2, id u32 @4, flags u32 @12,
                                 ext data offset u8 @35, data @40
=========================== ==== ==============================================================

Every read is checked against the end of the buffer and of the object first (Numba does not check
bounds); positions are never negative, so bytes are read with unsigned indexes (no wraparound
code in the loop). Kernels trust their arguments: the caller allocates the outputs and checks
their shapes.

Joining a tail without copying the container (:mod:`packbms.io.native_blf`): ``state[S_STOP]``
(when > 0) makes the kernel stop before the first object found at or after that position and
report where it was found in ``state[S_FOUND]``; the caller parses the previous container's tail
joined to the head of this one up to its first ``LOBJ``, and when the walk stops exactly there,
parses the container in place from that object on.

Status codes returned (``state`` holds the position to resume from, the frame count, the event
count and the count of skipped non-frame objects):

- ``DONE``: every complete object was read (or the stop position was reached); ``state[S_POS]``
  is where the unparsed tail starts.
- ``FULL``: the output arrays are full; resume at ``state[S_POS]``.
- ``WIDE``: a payload needs 64 columns; widen ``data`` and resume at ``state[S_POS]``.
- ``EVENTS_FULL``: the event table is full; drain it and resume.
- ``CORRUPT``: the object stream cannot be parsed at ``state[S_POS]`` (reason in ``state[S_ERR]``).

Events (one row each, ``[code, position in buf, a, b]``): ``EV_BAD_DLC`` (a = dlc),
``EV_BAD_LENGTH`` (a = payload length), ``EV_SLOW_TIME`` (a = frame index, b = raw timestamp
bits: the offset is over 2**53 units and the caller recomputes it exactly).
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

DONE = 0
FULL = 1
WIDE = 2
EVENTS_FULL = 3
CORRUPT = 4

S_POS = 0
S_K = 1
S_EVENTS = 2
S_IGNORED = 3
S_ERR = 4
S_ERRVAL = 5
S_STOP = 6
S_FOUND = 7
STATE_SIZE = 8

# CORRUPT reasons
ERR_NO_SIGNATURE = 1
ERR_OBJECT_SIZE = 2
ERR_OBJECT_TOO_SMALL = 3

EV_BAD_DLC = 1
EV_BAD_LENGTH = 2
EV_SLOW_TIME = 3

CAN_MESSAGE = 1
CAN_ERROR_EXT = 73
CAN_MESSAGE2 = 86
CAN_FD_MESSAGE = 100
CAN_FD_MESSAGE_64 = 101

_DLC2LEN = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64], dtype=np.int64)
_EXACT = 9007199254740992  # 2**53


@kernel
def _b(buf, p):
    # unsigned index: no negative-index wraparound code (positions here are never negative)
    return np.int64(buf[np.uint64(p)])


@kernel
def _u16(buf, p):
    return _b(buf, p) | (_b(buf, p + 1) << 8)


@kernel
def _u32(buf, p):
    return _b(buf, p) | (_b(buf, p + 1) << 8) | (_b(buf, p + 2) << 16) | (_b(buf, p + 3) << 24)


@kernel
def _u64(buf, p):
    lo = np.uint64(_u32(buf, p))
    hi = np.uint64(_u32(buf, p + 4))
    return lo | (hi << np.uint64(32))


_SIG = 0x4A424F4C  # b"LOBJ" as a little-endian u32


@kernel
def scan_blf(buf, start_ts, ts, aid, flags, dc, data, data64, events, state):
    """Parse frame objects of ``buf`` from ``state[S_POS]`` into the outputs from row
    ``state[S_K]``.

    Parameters
    ----------
    buf : uint8 [n]
        Tail of the previous container followed by this container's inflated bytes (or the
        container alone, parsed from its first ``LOBJ``, once the tail is taken care of).
    start_ts : float64
        The file header's start time in Unix seconds (0 when the header has none).
    ts, aid : float64 [cap], uint32 [cap]
    flags : bool [4, cap]
        is_extended, is_fd, is_error, is_remote.
    dc : uint8 [2, cap]
        dlc (payload length in bytes, python-can's ``Message.dlc``) and 0-based channel.
    data : uint8 [cap, W]
        Payload rows, zero beyond the payload (W = 8 or 64).
    data64 : uint64 [cap, W // 8]
        ``data.view(np.uint64)``: a payload of up to 8 bytes is stored as one word.
    events : int64 [M, 4]
    state : int64 [STATE_SIZE]

    Returns
    -------
    int
        A status code (see the module docstring).
    """
    n = buf.shape[0]
    cap = ts.shape[0]
    width = data.shape[1]
    max_events = events.shape[0]
    pos = state[S_POS]
    k = state[S_K]
    ne = state[S_EVENTS]
    ignored = state[S_IGNORED]
    stop = state[S_STOP]
    status = DONE
    while True:
        start = pos
        if ne + 2 > max_events:
            status = EVENTS_FULL
            break
        # python-can: data.index(b"LOBJ", pos, pos + 8)
        found = -1
        if pos + 16 <= n and _u32(buf, pos) == _SIG:
            found = pos                     # the usual case: the next object starts right here
        else:
            lim = min(pos + 8, n) - 4
            j = pos
            while j <= lim:
                if _u32(buf, j) == _SIG:
                    found = j
                    break
                j += 1
        if found < 0:
            if pos + 8 > n:
                break                       # the rest continues in the next container
            state[S_ERR] = ERR_NO_SIGNATURE
            status = CORRUPT
            break
        p = found
        if stop > 0 and p >= stop:
            state[S_FOUND] = p              # reached the caller's stop: the object at p is next
            break
        if p + 16 > n:
            break                           # object header cut by the container end
        hsize = _u16(buf, p + 4)
        hver = _u16(buf, p + 6)
        osize = _u32(buf, p + 8)
        otype = _u32(buf, p + 12)
        nxt = p + osize
        if nxt > n:
            break                           # the object continues in the next container
        if osize < 16:
            pos = p
            state[S_ERR] = ERR_OBJECT_SIZE
            state[S_ERRVAL] = osize
            status = CORRUPT
            break
        is_frame = (otype == CAN_MESSAGE or otype == CAN_MESSAGE2 or otype == CAN_ERROR_EXT
                    or otype == CAN_FD_MESSAGE or otype == CAN_FD_MESSAGE_64)
        if not is_frame or (hver != 1 and hver != 2):
            ignored += 1
            pos = nxt
            continue
        q = p + 16
        body = q + 16 if hver == 1 else q + 24
        if otype == CAN_MESSAGE or otype == CAN_MESSAGE2:
            need = 16
        elif otype == CAN_ERROR_EXT:
            need = 32
        elif otype == CAN_FD_MESSAGE:
            need = 84
        else:
            need = 40
        if body + need > nxt:
            pos = p
            state[S_ERR] = ERR_OBJECT_TOO_SMALL
            state[S_ERRVAL] = otype
            status = CORRUPT
            break

        # -- fields ---------------------------------------------------------------------
        src = 0
        copy = 0
        length = 0
        remote = False
        fd = False
        err = False
        if otype == CAN_MESSAGE or otype == CAN_MESSAGE2:
            chan = _u16(buf, body)
            remote = (_b(buf, body + 2) & 0x80) != 0
            dlc = _b(buf, body + 3)
            can_id = _u32(buf, body + 4)
            length = min(dlc, 8)
            copy = length
            src = body + 8
        elif otype == CAN_ERROR_EXT:
            chan = _u16(buf, body)
            dlc = _b(buf, body + 10)
            can_id = _u32(buf, body + 16)
            err = True
            length = min(dlc, 8)
            copy = length
            src = body + 24
        elif otype == CAN_FD_MESSAGE:
            chan = _u16(buf, body)
            remote = (_b(buf, body + 2) & 0x80) != 0
            code = _b(buf, body + 3)
            dlc = _DLC2LEN[code] if code <= 15 else 64
            can_id = _u32(buf, body + 4)
            fd = (_b(buf, body + 13) & 1) != 0
            length = min(_b(buf, body + 14), 64)
            copy = length
            src = body + 20
        else:
            chan = _b(buf, body)
            code = _b(buf, body + 1)
            dlc = _DLC2LEN[code] if code <= 15 else 64
            valid = _b(buf, body + 2)
            can_id = _u32(buf, body + 4)
            fdflags = _u32(buf, body + 12)
            remote = (fdflags & 0x0010) != 0
            fd = (fdflags & 0x1000) != 0
            ext_off = _b(buf, body + 35)
            limit = (ext_off if ext_off != 0 else osize) - hsize - 40
            copy = min(valid, limit)
            src = body + 40
            if copy < 0 or src > n:
                copy = 0
            elif src + copy > n:
                copy = n - src
            length = valid
        if remote:
            copy = 0                        # python-can's Message drops a remote frame's data
            length = 0
        if dlc > 64:
            events[ne, 0] = EV_BAD_DLC
            events[ne, 1] = p
            events[ne, 2] = dlc
            ne += 1
            pos = nxt
            continue
        if length > 64:
            events[ne, 0] = EV_BAD_LENGTH
            events[ne, 1] = p
            events[ne, 2] = length
            ne += 1
            pos = nxt
            continue
        if length > width:
            status = WIDE
            break
        if k >= cap:
            status = FULL
            break

        raw = _u64(buf, q + 8)
        if _u32(buf, q) == 1:
            t = np.float64(raw) / 1e5
        else:
            t = np.float64(raw) / 1e9
        if raw >= np.uint64(_EXACT):
            events[ne, 0] = EV_SLOW_TIME
            events[ne, 1] = p
            events[ne, 2] = k
            events[ne, 3] = np.int64(raw)
            ne += 1
        r = np.uint64(k)
        ts[r] = t + start_ts
        aid[r] = np.uint32(can_id & 0x1FFFFFFF)
        flags[0, r] = (can_id & 0x80000000) != 0
        flags[1, r] = fd
        flags[2, r] = err
        flags[3, r] = remote
        dc[0, r] = np.uint8(dlc)
        dc[1, r] = np.uint8((chan - 1) & 0xFF) if chan > 0 else np.uint8(0)
        if copy <= 8 and src + 8 <= nxt:
            # one 8-byte word, the bytes past the payload masked off (python-can drops them)
            v = _u64(buf, src)
            if copy < 8:
                v &= (np.uint64(1) << np.uint64(8 * copy)) - np.uint64(1)
            data64[r, 0] = v
        else:
            for i in range(copy):
                data[k, i] = buf[np.uint64(src + i)]
        k += 1
        pos = nxt
    state[S_POS] = start
    state[S_K] = k
    state[S_EVENTS] = ne
    state[S_IGNORED] = ignored
    return status

