"""Signal codec kernels: find each frame's message, then decode or encode its signals.

The database arrives flattened by :mod:`packbms.dbc` (one entry per message, one per signal). Bit
positions are normalised so a kernel never thinks in DBC "sawtooth" numbering:

* a little-endian (Intel) signal's ``start`` is the sequential number of its least significant
  bit (bit ``b`` of byte ``B`` is ``8 * B + b``, LSB = 0), as in the DBC;
* a big-endian (Motorola) signal's ``start`` is the network number of its most significant bit
  (payload read as one big-endian bit stream, MSB of byte 0 = 0), i.e. cantools'
  ``utils.start_bit``.

Payloads are read and written as 64-bit little-endian words (a zero-copy ``uint64`` view of
the ``uint8`` rows, whose width is 8 or 64): a field starting at bit ``start`` lies in word
``start // 64`` from bit ``start % 64``, spilling into the next word when longer than the rest
of it. Motorola fields are read from the byte-swapped (big-endian) words.

Two decode kernels share one output layout (one row-major [rows, signals] block per message):

* :func:`decode_dense` groups the frames by message and decodes one signal at a time over all
  its rows, its layout hoisted out of the loop. A multiplexed signal is present where its
  multiplexer is present and has one of the signal's raw values (``mux_values`` slice). Best
  when a frame carries most of its message's signals (no multiplexer, or V1..V4 under every
  group value).
* :func:`decode_sparse` walks each frame's multiplexer tree from the message's root signals
  (``root_signal[root_first:root_stop]``): a multiplexer ``s`` owns the edges
  ``sig_edge_first[s]:sig_edge_stop[s]``, sorted by ``edge_value``, and a frame whose
  multiplexer raw value is ``v`` visits the ``edge_child`` of every edge with value ``v``. Only
  present signals cost time, which matters for foxbms' 433-signal f_CellVoltages (9 present).

:func:`encode_frames` walks the same tree. Signals no edge reaches are never present.

Every integer array is int64, ids uint32, keys uint64, payload words uint64 2-D C-contiguous,
so each kernel compiles to one signature. Helpers take scalars only: a Numba call that passes
an array is not inlined and cost 4x the whole field extraction, so array accesses are written
in place.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U8 = np.uint64(8)
_UFF = np.uint64(0xFF)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_U16 = np.uint64(16)
_U32 = np.uint64(32)
_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)

#: lookup outcome codes written to ``frame_msg`` for frames that are not decoded
UNKNOWN_ID = -1
TOO_SHORT = -2
ERROR_OR_REMOTE = -3

#: encode error codes
ENC_OK = 0
ENC_NOT_FINITE = 1
ENC_OUT_OF_RANGE = 2
ENC_FLOAT32_OVERFLOW = 3


@kernel
def _mask(length):
    """The low ``length`` bits set (1..64)."""
    if length >= 64:
        return _ALL
    return (_U1 << np.uint64(length)) - _U1


@kernel
def _signed_value(bits, length):
    """Two's-complement interpretation of the low ``length`` bits."""
    if length < 64 and (bits >> np.uint64(length - 1)) & _U1:
        bits = bits | (_ALL ^ _mask(length))
    return np.int64(bits)


@kernel
def _bswap(x):
    """Byte-swap a uint64 (LLVM turns this into one instruction)."""
    x = ((x & _M8) << _U8) | ((x >> _U8) & _M8)
    x = ((x & _M16) << _U16) | ((x >> _U16) & _M16)
    return (x << _U32) | (x >> _U32)


@kernel
def _field(w0, w1, off, length, big_endian):
    """Raw bits of a field from its first word ``w0`` and the next word ``w1`` (used only when
    ``off + length > 64``); ``off`` is the field's start within ``w0`` (LSB for Intel, network
    MSB for Motorola)."""
    if big_endian:
        x = _bswap(w0) << np.uint64(off)
        if off + length > 64:
            x |= _bswap(w1) >> np.uint64(64 - off)
        return x >> np.uint64(64 - length)
    x = w0 >> np.uint64(off)
    if off + length > 64:
        x |= w1 << np.uint64(64 - off)
    return x & _mask(length)


@kernel
def lookup_frames(arbitration_id, is_extended, is_error, is_remote, dlc, width,
                  group_mask, group_first, keys, key_msg, msg_length, msg_enabled,
                  frame_msg, frame_row, msg_count, counts):
    """Find each frame's message and its row within that message's output block.

    Keys are ``(is_extended << 32) | (id & mask)``, sorted within each mask group; groups are
    tried in order (most specific mask first), so an exact definition wins over a masked one.

    Parameters
    ----------
    arbitration_id : uint32 [N]
    is_extended, is_error, is_remote : bool [N]
    dlc : uint8 [N]
        Payload length in bytes; only ``min(dlc, width)`` bytes are trusted.
    width : int
        Payload columns of the frame table.
    group_mask : uint32 [G]
    group_first : int64 [G + 1]
        Group ``g`` owns ``keys[group_first[g]:group_first[g + 1]]``.
    keys : uint64 [K]
    key_msg : int64 [K]
        Message index of each key.
    msg_length : int64 [M]
        Minimum payload length of each message.
    msg_enabled : bool [M]
        Messages to decode; frames of the others count as unknown.
    frame_msg : int64 [N] (out)
        Message index, or UNKNOWN_ID / TOO_SHORT / ERROR_OR_REMOTE.
    frame_row : int64 [N] (out)
        Row of the frame within its message (log order).
    msg_count : int64 [M] (out, zeroed)
        Frames decoded per message.
    counts : int64 [4] (out, zeroed)
        decoded, unknown_id, too_short, error_or_remote.
    """
    n = arbitration_id.shape[0]
    n_groups = group_mask.shape[0]
    for i in range(n):
        frame_row[i] = -1
        if is_error[i] or is_remote[i]:
            frame_msg[i] = ERROR_OR_REMOTE
            counts[3] += 1
            continue
        ext = np.uint64(1) if is_extended[i] else np.uint64(0)
        found = -1
        for g in range(n_groups):
            key = (ext << np.uint64(32)) | np.uint64(arbitration_id[i] & group_mask[g])
            lo = group_first[g]
            hi = group_first[g + 1]
            while lo < hi:
                mid = (lo + hi) >> 1
                if keys[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < group_first[g + 1] and keys[lo] == key:
                found = key_msg[lo]
                break
        if found < 0 or not msg_enabled[found]:
            frame_msg[i] = UNKNOWN_ID
            counts[1] += 1
            continue
        avail = min(np.int64(dlc[i]), width)
        if avail < msg_length[found]:
            frame_msg[i] = TOO_SHORT
            counts[2] += 1
            continue
        frame_msg[i] = found
        frame_row[i] = msg_count[found]
        msg_count[found] += 1
        counts[0] += 1


@kernel
def decode_sparse(words, dlc, timestamp, frame_msg, frame_row, msg_dense,
                  msg_sig_first, msg_sig_stop, msg_root_first, msg_root_stop, root_signal,
                  msg_row_offset, msg_value_offset,
                  sig_start, sig_length, sig_big_endian, sig_signed,
                  sig_float, sig_scale, sig_offset, sig_end_byte,
                  sig_edge_first, sig_edge_stop, edge_value, edge_child,
                  ts_out, values_out, present_out):
    """Decode, frame by frame, the frames of messages with ``msg_dense`` False.

    Meant for multiplexed messages where a frame carries few of the message's signals (foxbms'
    f_CellVoltages: 9 of 433): only present signals cost time.

    ``words`` is the payload as little-endian uint64 words [N, W / 8]. Message ``m``'s block
    holds ``msg_count[m]`` rows of ``k = msg_sig_stop[m] - msg_sig_first[m]`` columns at
    ``values_out[msg_value_offset[m]:]`` (row-major), and its
    timestamps at ``ts_out[msg_row_offset[m]:]``. ``values_out`` must be prefilled with NaN and
    ``present_out`` with False: only present signals are visited, starting from the message's
    root signals (``root_signal[msg_root_first[m]:msg_root_stop[m]]``) and following, for each
    multiplexer, the edges whose value equals its raw value. A signal is skipped (with its
    subtree) when the frame is too short to carry it. Physical value = raw * scale + offset in
    float64.
    """
    n = frame_msg.shape[0]
    width = words.shape[1] * 8
    n_words = words.shape[1]
    max_k = 1
    for m in range(msg_sig_first.shape[0]):
        max_k = max(max_k, msg_sig_stop[m] - msg_sig_first[m])
    stack = np.zeros(max_k, np.int64)
    u64 = np.zeros(1, np.uint64)
    f64 = u64.view(np.float64)
    u32 = np.zeros(1, np.uint32)
    f32 = u32.view(np.float32)
    for i in range(n):
        m = frame_msg[i]
        if m < 0 or msg_dense[m]:
            continue
        r = frame_row[i]
        first = msg_sig_first[m]
        k = msg_sig_stop[m] - first
        ts_out[msg_row_offset[m] + r] = timestamp[i]
        base = msg_value_offset[m] + r * k
        avail = min(np.int64(dlc[i]), width)
        top = 0
        for q in range(msg_root_first[m], msg_root_stop[m]):
            stack[top] = root_signal[q]
            top += 1
        while top > 0:
            top -= 1
            s = stack[top]
            if sig_end_byte[s] > avail:
                continue
            # -- the field's raw bits
            length = sig_length[s]
            w = sig_start[s] >> 6
            off = sig_start[s] & 63
            bits = _field(words[i, w], words[i, min(w + 1, n_words - 1)], off, length,
                          sig_big_endian[s])
            j = s - first
            present_out[base + j] = True
            # -- raw value, physical value
            if sig_float[s]:
                if length == 32:
                    u32[0] = np.uint32(bits)
                    raw = np.float64(f32[0])
                else:
                    u64[0] = bits
                    raw = f64[0]
                values_out[base + j] = raw * sig_scale[s] + sig_offset[s]
                continue
            if sig_signed[s]:
                iv = _signed_value(bits, length)
                raw = np.float64(iv)
            else:
                iv = np.int64(bits)
                raw = np.float64(bits)
            values_out[base + j] = raw * sig_scale[s] + sig_offset[s]
            # -- a multiplexer: push the signals its value selects
            e0 = sig_edge_first[s]
            e1 = sig_edge_stop[s]
            if e1 > e0:
                lo = e0
                hi = e1
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if edge_value[mid] < iv:
                        lo = mid + 1
                    else:
                        hi = mid
                while lo < e1 and edge_value[lo] == iv:
                    stack[top] = edge_child[lo]
                    top += 1
                    lo += 1


@kernel
def decode_dense(words, dlc, timestamp, frame_msg, frame_row, msg_dense,
                 msg_sig_first, msg_sig_stop, msg_row_offset, msg_value_offset, msg_slots,
                 eval_signal, sig_start, sig_length, sig_big_endian, sig_signed, sig_float,
                 sig_scale, sig_offset, sig_end_byte, sig_parent, sig_slot, sig_mux_first,
                 sig_mux_stop, mux_values, ts_out, values_out, present_out):
    """Decode, signal by signal, the frames of messages with ``msg_dense`` True.

    For messages whose frames carry most of their signals (no multiplexer, or one that
    selects most signals): the frames are grouped by message, then each signal is decoded for
    all rows in one loop with its layout hoisted out of it. Signals are visited in
    ``eval_signal`` order (same slices as ``msg_sig_first/stop``; each multiplexer before the
    signals under it). A multiplexed signal is present where its multiplexer is present and
    its raw value (kept per row in a scratch column, slot ``sig_slot``) is in the signal's
    ``mux_values`` slice; a signal whose parent is itself is never present. Every cell of the
    message's block is written (NaN / False where absent). Output layout as
    :func:`decode_sparse`.
    """
    n = frame_msg.shape[0]
    n_msg = msg_sig_first.shape[0]
    width = words.shape[1] * 8
    n_words = words.shape[1]
    order = np.empty(msg_row_offset[n_msg], np.int64)
    for i in range(n):
        m = frame_msg[i]
        if m >= 0 and msg_dense[m]:
            order[msg_row_offset[m] + frame_row[i]] = i
    u64 = np.zeros(1, np.uint64)
    f64 = u64.view(np.float64)
    u32 = np.zeros(1, np.uint32)
    f32 = u32.view(np.float32)
    for m in range(n_msg):
        r0 = msg_row_offset[m]
        rows = msg_row_offset[m + 1] - r0
        if not msg_dense[m] or rows == 0:
            continue
        first = msg_sig_first[m]
        k = msg_sig_stop[m] - first
        vbase = msg_value_offset[m]
        n_slots = msg_slots[m]
        muxraw = np.empty(rows * max(n_slots, 1), np.int64)
        for r in range(rows):
            ts_out[r0 + r] = timestamp[order[r0 + r]]
        for q in range(first, first + k):
            s = eval_signal[q]
            j = s - first
            length = sig_length[s]
            w = sig_start[s] >> 6
            w1 = min(w + 1, n_words - 1)
            off = sig_start[s] & 63
            big = sig_big_endian[s]
            signed = sig_signed[s]
            is_float = sig_float[s]
            scale = sig_scale[s]
            offset = sig_offset[s]
            end_byte = sig_end_byte[s]
            p = sig_parent[s]
            pj = p - first
            pslot = sig_slot[p] if p >= 0 else -1
            slot = sig_slot[s]
            a0 = sig_mux_first[s]
            a1 = sig_mux_stop[s]
            never = p == s
            # a contiguous set of selector values is a range check
            contiguous = a1 > a0 and mux_values[a1 - 1] - mux_values[a0] == a1 - a0 - 1
            for r in range(rows):
                i = order[r0 + r]
                at = vbase + r * k + j
                ok = not never and end_byte <= min(np.int64(dlc[i]), width)
                if ok and p >= 0:
                    if not present_out[vbase + r * k + pj]:
                        ok = False
                    else:
                        v = muxraw[r * n_slots + pslot]
                        if contiguous:
                            ok = mux_values[a0] <= v <= mux_values[a1 - 1]
                        else:
                            lo = a0
                            hi = a1
                            while lo < hi:
                                mid = (lo + hi) >> 1
                                if mux_values[mid] < v:
                                    lo = mid + 1
                                else:
                                    hi = mid
                            ok = lo < a1 and mux_values[lo] == v
                if not ok:
                    values_out[at] = np.nan
                    present_out[at] = False
                    continue
                bits = _field(words[i, w], words[i, w1], off, length, big)
                if is_float:
                    if length == 32:
                        u32[0] = np.uint32(bits)
                        raw = np.float64(f32[0])
                    else:
                        u64[0] = bits
                        raw = f64[0]
                    iv = np.int64(0)
                elif signed:
                    iv = _signed_value(bits, length)
                    raw = np.float64(iv)
                else:
                    iv = np.int64(bits)
                    raw = np.float64(bits)
                values_out[at] = raw * scale + offset
                present_out[at] = True
                if slot >= 0:
                    muxraw[r * n_slots + slot] = iv


@kernel
def encode_frames(phys, column, first, k, root_first, root_stop, root_signal,
                  sig_start, sig_length, sig_big_endian,
                  sig_signed, sig_float, sig_scale, sig_offset,
                  sig_edge_first, sig_edge_stop, edge_value, edge_child, words, error):
    """Encode N frames of one message (signals ``first .. first + k``) from physical values.

    ``phys[g, N]`` holds the given signals, one contiguous row each; ``column[j]`` is local
    signal ``j``'s row in ``phys``, or -1 to write raw 0. Only the signals the multiplexer tree
    selects on a row are visited (roots, then the edges matching each multiplexer's raw value),
    so values of the others are never read. Integer signals: raw = rint((phys - offset) /
    scale) (round half to even, like Python's ``round`` that cantools uses), which must lie in
    the signal's raw range; float signals: raw = (phys - offset) / scale stored as IEEE
    float32/float64.

    ``words`` [N, W / 8] (the payload as little-endian uint64 words) must be zeroed. On the
    first invalid value, the kernel stops and sets ``error = [row, local signal index, code]``
    (1 not finite, 2 outside the raw range, 3 float32 overflow); ``error[2] == 0`` means
    success.
    """
    n = words.shape[0]
    stack = np.zeros(max(k, 1), np.int64)
    u64 = np.zeros(1, np.uint64)
    f64 = u64.view(np.float64)
    u32 = np.zeros(1, np.uint32)
    f32 = u32.view(np.float32)
    for i in range(n):
        top = 0
        for q in range(root_first, root_stop):
            stack[top] = root_signal[q]
            top += 1
        while top > 0:
            top -= 1
            s = stack[top]
            j = s - first
            c = column[j]
            iv = np.int64(0)
            if c >= 0:
                length = sig_length[s]
                raw = (phys[c, i] - sig_offset[s]) / sig_scale[s]
                code = ENC_OK
                bits = _U0
                if sig_float[s]:
                    if length == 32:
                        y = np.float32(raw)
                        if np.isinf(y) and not np.isinf(raw):
                            code = ENC_FLOAT32_OVERFLOW
                        else:
                            f32[0] = y
                            bits = np.uint64(u32[0])
                    else:
                        f64[0] = raw
                        bits = u64[0]
                elif not np.isfinite(raw):
                    code = ENC_NOT_FINITE
                else:
                    rr = np.rint(raw)
                    if sig_signed[s]:
                        half = 2.0 ** (length - 1)
                        if rr < -half or rr >= half:
                            code = ENC_OUT_OF_RANGE
                        else:
                            iv = np.int64(rr)
                            bits = np.uint64(iv) & _mask(length)
                    elif rr < 0.0 or rr >= 2.0 ** length:
                        code = ENC_OUT_OF_RANGE
                    else:
                        bits = np.uint64(rr)
                        iv = np.int64(bits)
                if code != ENC_OK:
                    error[0] = i
                    error[1] = j
                    error[2] = code
                    return
                # -- OR the field into the payload
                w = sig_start[s] >> 6
                off = sig_start[s] & 63
                if sig_big_endian[s]:
                    top_aligned = bits << np.uint64(64 - length)
                    words[i, w] |= _bswap(top_aligned >> np.uint64(off))
                    if off + length > 64:
                        words[i, w + 1] |= _bswap(top_aligned << np.uint64(64 - off))
                else:
                    words[i, w] |= bits << np.uint64(off)
                    if off + length > 64:
                        words[i, w + 1] |= bits >> np.uint64(64 - off)
            # -- a multiplexer (or a missing one, raw 0): push the signals it selects
            e0 = sig_edge_first[s]
            e1 = sig_edge_stop[s]
            if e1 > e0:
                lo = e0
                hi = e1
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if edge_value[mid] < iv:
                        lo = mid + 1
                    else:
                        hi = mid
                while lo < e1 and edge_value[lo] == iv:
                    stack[top] = edge_child[lo]
                    top += 1
                    lo += 1
    error[2] = ENC_OK
