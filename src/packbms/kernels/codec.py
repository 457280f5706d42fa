"""Signal codec kernels: find each frame's message, then decode or encode its signals.

The database arrives flattened by :mod:`packbms.dbc` (one entry per message, one per signal). Bit
positions are normalised so a kernel never thinks in DBC "sawtooth" numbering:

* a little-endian (Intel) signal's ``start`` is the sequential number of its least significant
  bit (bit ``b`` of byte ``B`` is ``8 * B + b``, LSB = 0), as in the DBC;
* a big-endian (Motorola) signal's ``start`` is the network number of its most significant bit
  (payload read as one big-endian bit stream, MSB of byte 0 = 0), i.e. cantools'
  ``utils.start_bit``.

From that, each signal covers ``nbytes`` bytes from ``byte0`` (at most 9: a 64-bit field that
does not start on a byte boundary), and ``shift`` is where its LSB sits in the integer made of
those bytes (little-endian integer for Intel, big-endian for Motorola).

Multiplexing (simple and extended) is a tree walked from each message's root signals
(``root_signal[root_first:root_stop]``): a multiplexer ``s`` owns the edges
``sig_edge_first[s]:sig_edge_stop[s]``, sorted by ``edge_value``, and a frame whose multiplexer
raw value is ``v`` visits the ``edge_child`` of every edge with value ``v`` (a child listed
under several values has one edge per value). Signals no edge reaches are never present. Only
visited signals cost time, which matters for a 433-signal multiplexed message.

Every integer array is int64, ids uint32, keys uint64, payloads uint8 2-D C-contiguous, so each
kernel compiles to one signature.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U8 = np.uint64(8)
_UFF = np.uint64(0xFF)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

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
    if length >= 64:
        return _ALL
    return (_U1 << np.uint64(length)) - _U1


@kernel
def _extract(data, i, byte0, nbytes, shift, length, big_endian):
    """Raw bits of one field of row ``i`` as an unsigned 64-bit integer."""
    acc = _U0
    if nbytes <= 8:
        if big_endian:
            for b in range(nbytes):
                acc = (acc << _U8) | np.uint64(data[i, byte0 + b])
        else:
            for b in range(nbytes):
                acc |= np.uint64(data[i, byte0 + b]) << np.uint64(8 * b)
        return (acc >> np.uint64(shift)) & _mask(length)
    # nine bytes: a 64-bit-wide field straddling a byte boundary
    for b in range(8):
        if big_endian:
            acc = (acc << _U8) | np.uint64(data[i, byte0 + b])
        else:
            acc |= np.uint64(data[i, byte0 + b]) << np.uint64(8 * b)
    last = np.uint64(data[i, byte0 + 8])
    if big_endian:
        # 72-bit stream = acc:last, LSB of the field at ``shift`` (0..7)
        val = (acc << np.uint64(8 - shift)) | (last >> np.uint64(shift))
    else:
        val = (acc >> np.uint64(shift)) | (last << np.uint64(64 - shift))
    return val & _mask(length)


@kernel
def _insert(data, i, byte0, nbytes, shift, length, big_endian, val):
    """OR the low ``length`` bits of ``val`` into the field of row ``i``."""
    val = val & _mask(length)
    if nbytes <= 8:
        shifted = val << np.uint64(shift)
        if big_endian:
            for b in range(nbytes):
                data[i, byte0 + b] |= np.uint8((shifted >> np.uint64(8 * (nbytes - 1 - b))) & _UFF)
        else:
            for b in range(nbytes):
                data[i, byte0 + b] |= np.uint8((shifted >> np.uint64(8 * b)) & _UFF)
        return
    if big_endian:
        high = val >> np.uint64(8 - shift)          # bytes 0..7 of the 72-bit stream
        for b in range(8):
            data[i, byte0 + b] |= np.uint8((high >> np.uint64(8 * (7 - b))) & _UFF)
        data[i, byte0 + 8] |= np.uint8((val << np.uint64(shift)) & _UFF)
    else:
        low = val << np.uint64(shift)
        for b in range(8):
            data[i, byte0 + b] |= np.uint8((low >> np.uint64(8 * b)) & _UFF)
        data[i, byte0 + 8] |= np.uint8((val >> np.uint64(64 - shift)) & _UFF)


@kernel
def _signed_value(bits, length):
    """Two's-complement interpretation of the low ``length`` bits."""
    if length < 64 and (bits >> np.uint64(length - 1)) & _U1:
        bits = bits | (_ALL ^ _mask(length))
    return np.int64(bits)


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
def _children(edge_value, value, first, stop):
    """Range of ``edge_value[first:stop]`` (sorted) equal to ``value``."""
    lo = first
    hi = stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if edge_value[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    end = lo
    while end < stop and edge_value[end] == value:
        end += 1
    return lo, end


@kernel
def decode_frames(data, dlc, timestamp, frame_msg, frame_row,
                  msg_sig_first, msg_sig_stop, msg_root_first, msg_root_stop, root_signal,
                  msg_row_offset, msg_value_offset,
                  sig_byte0, sig_nbytes, sig_shift, sig_length, sig_big_endian, sig_signed,
                  sig_float, sig_scale, sig_offset, sig_end_byte,
                  sig_edge_first, sig_edge_stop, edge_value, edge_child,
                  ts_out, values_out, present_out):
    """Decode every frame whose ``frame_msg`` is a message index.

    Message ``m``'s block holds ``msg_count[m]`` rows of ``k = msg_sig_stop[m] -
    msg_sig_first[m]`` columns at ``values_out[msg_value_offset[m]:]`` (row-major), and its
    timestamps at ``ts_out[msg_row_offset[m]:]``. ``values_out`` must be prefilled with NaN and
    ``present_out`` with False: only present signals are visited, starting from the message's
    root signals (``root_signal[msg_root_first[m]:msg_root_stop[m]]``) and following, for each
    multiplexer, the edges whose value equals its raw value. A signal is skipped (with its
    subtree) when the frame is too short to carry it. Physical value = raw * scale + offset in
    float64.
    """
    n = frame_msg.shape[0]
    width = data.shape[1]
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
        if m < 0:
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
            b = _extract(data, i, sig_byte0[s], sig_nbytes[s], sig_shift[s], sig_length[s],
                         sig_big_endian[s])
            j = s - first
            present_out[base + j] = True
            if sig_float[s]:
                if sig_length[s] == 32:
                    u32[0] = np.uint32(b)
                    raw = np.float64(f32[0])
                else:
                    u64[0] = b
                    raw = f64[0]
                values_out[base + j] = raw * sig_scale[s] + sig_offset[s]
                continue
            if sig_signed[s]:
                iv = _signed_value(b, sig_length[s])
                raw = np.float64(iv)
            else:
                iv = np.int64(b)
                raw = np.float64(b)
            values_out[base + j] = raw * sig_scale[s] + sig_offset[s]
            if sig_edge_stop[s] > sig_edge_first[s]:
                lo, hi = _children(edge_value, iv, sig_edge_first[s], sig_edge_stop[s])
                for e in range(lo, hi):
                    stack[top] = edge_child[e]
                    top += 1


@kernel
def encode_frames(phys, column, first, k, root_first, root_stop, root_signal,
                  sig_byte0, sig_nbytes, sig_shift, sig_length, sig_big_endian,
                  sig_signed, sig_float, sig_scale, sig_offset,
                  sig_edge_first, sig_edge_stop, edge_value, edge_child, data, error):
    """Encode N frames of one message (signals ``first .. first + k``) from physical values.

    ``phys[N, g]`` holds the given signals; ``column[j]`` is local signal ``j``'s column in
    ``phys``, or -1 to write raw 0. Only the signals the multiplexer tree selects on a row are
    visited (roots, then the edges matching each multiplexer's raw value), so values of the
    others are never read. Integer signals: raw = rint((phys - offset) / scale) (round half
    to even, like Python's ``round`` that cantools uses), which must lie in the signal's raw
    range; float signals: raw = (phys - offset) / scale stored as IEEE float32/float64.

    ``data`` [N, W] must be zeroed. On the first invalid value, the kernel stops and sets
    ``error = [row, local signal index, code]`` (1 not finite, 2 outside the raw range,
    3 float32 overflow); ``error[2] == 0`` means success.
    """
    n = phys.shape[0]
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
            bits = _U0
            iv = np.int64(0)
            if c >= 0:
                raw = (phys[i, c] - sig_offset[s]) / sig_scale[s]
                length = sig_length[s]
                if sig_float[s]:
                    if length == 32:
                        y = np.float32(raw)
                        if np.isinf(y) and not np.isinf(raw):
                            error[0] = i
                            error[1] = j
                            error[2] = ENC_FLOAT32_OVERFLOW
                            return
                        f32[0] = y
                        bits = np.uint64(u32[0])
                    else:
                        f64[0] = raw
                        bits = u64[0]
                else:
                    if not np.isfinite(raw):
                        error[0] = i
                        error[1] = j
                        error[2] = ENC_NOT_FINITE
                        return
                    r = np.rint(raw)
                    if sig_signed[s]:
                        half = 2.0 ** (length - 1)
                        bad = r < -half or r >= half
                    else:
                        bad = r < 0.0 or r >= 2.0 ** length
                    if bad:
                        error[0] = i
                        error[1] = j
                        error[2] = ENC_OUT_OF_RANGE
                        return
                    if sig_signed[s]:
                        iv = np.int64(r)
                        bits = np.uint64(iv) & _mask(length)
                    else:
                        bits = np.uint64(r)
                        iv = np.int64(bits)
                _insert(data, i, sig_byte0[s], sig_nbytes[s], sig_shift[s], length,
                        sig_big_endian[s], bits)
            if sig_edge_stop[s] > sig_edge_first[s]:
                lo, hi = _children(edge_value, iv, sig_edge_first[s], sig_edge_stop[s])
                for e in range(lo, hi):
                    stack[top] = edge_child[e]
                    top += 1
    error[2] = ENC_OK
