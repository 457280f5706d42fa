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

Decoding is column-wise, in four kernels:

1. :func:`lookup_frames` finds each frame's message (a direct-mapped cache of recent ids in
   front of a binary search per identifier mask) and counts frames per message.
2. :func:`gather_frames` groups the frames by message (a counting sort, stable): each message
   gets its timestamps, payload lengths and the payload words its signals need as contiguous
   blocks.
3. :func:`plan_rowsets` works out which rows carry each signal. A *rowset* is an ascending list
   of a message's rows, or "every row" (start -1). Root signals share the "every row" set; a
   multiplexer's rows are bucketed by its raw value (one bucket per value any of its children
   needs), and each group of children selecting the same values shares one rowset (a bucket, or
   a union of buckets, or the multiplexer's own rows when the union covers them; a single
   group spanning a contiguous range of values, as ``SG_MUL_VAL_ 0-31``, needs only a count of
   the rows in range). A signal the frames may be too short to carry gets its own filtered
   rowset. Absent signals cost nothing.
4. :func:`decode_values` decodes signal by signal over its rowset, writing only present values,
   with fast loops for fields within one word (two shifts, one multiply-add; vectorisable).

:func:`encode_frames` walks the multiplexer tree (``root_signal``, ``sig_edge_first/stop``,
``edge_value``, ``edge_child``) frame by frame. Signals no edge reaches are never present.

Integer arrays are int64 unless stated, ids uint32, keys and payload words uint64, so each
kernel compiles to one signature. Helpers called per element take scalars only: a Numba call
that passes an array is not inlined and costs more than the field extraction itself.
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
_U11 = np.uint64(11)
_U22 = np.uint64(22)

#: lookup outcome codes written to ``frame_msg`` for frames that are not decoded
UNKNOWN_ID = -1
TOO_SHORT = -2
ERROR_OR_REMOTE = -3

#: direct-mapped id cache of :func:`lookup_frames`: 2**CACHE_BITS entries
CACHE_BITS = 12

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


# -- 1. lookup ----------------------------------------------------------------------------------
@kernel
def lookup_frames(arbitration_id, is_extended, is_error, is_remote, dlc, width,
                  group_mask, group_first, keys, key_msg, msg_length, msg_enabled,
                  frame_msg, msg_count, msg_min_avail, counts):
    """Find each frame's message and count frames per message.

    Keys are ``(is_extended << 32) | (id & mask)``, sorted within each mask group; groups are
    tried in order (most specific mask first), so an exact definition wins over a masked one.
    The answer for an id is kept in a direct-mapped cache, so a log's few hundred distinct ids
    are searched once each.

    Parameters
    ----------
    arbitration_id : uint32 [N]
    is_extended, is_error, is_remote : bool [N]
    dlc : uint8 [N] (frames) or int64 [N] (reassembled ISO-TP messages)
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
    frame_msg : int32 [N] (out)
        Message index, or UNKNOWN_ID / TOO_SHORT / ERROR_OR_REMOTE.
    msg_count : int64 [M] (out, zeroed)
        Frames decoded per message.
    msg_min_avail : int64 [M] (out, set to a large value)
        Shortest payload (bytes) among each message's decoded frames.
    counts : int64 [4] (out, zeroed)
        decoded, unknown_id, too_short, error_or_remote.
    """
    n = arbitration_id.shape[0]
    n_groups = group_mask.shape[0]
    size = 1 << CACHE_BITS
    cache_key = np.empty(size, np.uint64)
    cache_msg = np.empty(size, np.int64)
    for h in range(size):
        cache_key[h] = _ALL     # no real key: keys are at most 33 bits
    mask = np.uint64(size - 1)
    for i in range(n):
        if is_error[i] or is_remote[i]:
            frame_msg[i] = ERROR_OR_REMOTE
            counts[3] += 1
            continue
        key = np.uint64(arbitration_id[i])
        if is_extended[i]:
            key |= np.uint64(1) << np.uint64(32)
        h = (key ^ (key >> _U11) ^ (key >> _U22)) & mask   # 11-bit ids map to themselves
        if cache_key[h] == key:
            found = cache_msg[h]
        else:
            found = -1
            for g in range(n_groups):
                gkey = key & ((np.uint64(1) << np.uint64(32)) | np.uint64(group_mask[g]))
                lo = group_first[g]
                hi = group_first[g + 1]
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if keys[mid] < gkey:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < group_first[g + 1] and keys[lo] == gkey:
                    found = key_msg[lo]
                    break
            if found >= 0 and not msg_enabled[found]:
                found = -1
            cache_key[h] = key
            cache_msg[h] = found
        if found < 0:
            frame_msg[i] = UNKNOWN_ID
            counts[1] += 1
            continue
        avail = min(np.int64(dlc[i]), width)
        if avail < msg_length[found]:
            frame_msg[i] = TOO_SHORT
            counts[2] += 1
            continue
        frame_msg[i] = found
        msg_count[found] += 1
        if avail < msg_min_avail[found]:
            msg_min_avail[found] = avail
    counts[0] = n - counts[1] - counts[2] - counts[3]


# -- 2. group by message ------------------------------------------------------------------------
@kernel
def gather_frames(words, dlc, timestamp, frame_msg, row_offset, word_offset, msg_words, width,
                  keep_avail, ts_out, words_out, avail_out):
    """Counting sort of the decoded frames by message (stable: log order within a message).

    Message ``m`` owns rows ``row_offset[m]:row_offset[m + 1]`` of ``ts_out`` and
    ``avail_out`` (uint16 payload bytes, ``min(dlc, width)``; written only when
    ``keep_avail``), and
    ``msg_words[m]`` payload words per row in ``words_out`` from ``word_offset[m]``
    (row-major). ``words`` is the payload as little-endian uint64 words [N, W / 8];
    ``msg_words[m] <= W / 8``.
    """
    n = frame_msg.shape[0]
    n_msg = msg_words.shape[0]
    cursor = np.empty(n_msg, np.int64)
    single = True
    for m in range(n_msg):
        cursor[m] = row_offset[m]
        single = single and msg_words[m] == 1 and word_offset[m] == row_offset[m]
    if single and not keep_avail:       # classic CAN: one word per row, rows = word slots
        for i in range(n):
            m = frame_msg[i]
            if m >= 0:
                r = cursor[m]
                cursor[m] = r + 1
                ts_out[r] = timestamp[i]
                words_out[r] = words[i, 0]
        return
    for i in range(n):
        m = frame_msg[i]
        if m < 0:
            continue
        r = cursor[m]
        cursor[m] = r + 1
        ts_out[r] = timestamp[i]
        if keep_avail:
            avail_out[r] = min(dlc[i], width)
        nw = msg_words[m]
        base = word_offset[m] + (r - row_offset[m]) * nw
        for k in range(nw):
            words_out[base + k] = words[i, k]


# -- 3. rowsets -----------------------------------------------------------------------------
@kernel
def _bucket_rows(words_out, wbase, nw, rows, start, cnt, bit, length, big, signed,
                 bucket_value, b0, b1, bucket_of, bkt_count):
    """Bucket of each row of a multiplexer's rowset (by its raw value; -1: no bucket), and
    rows per bucket."""
    for b in range(b0, b1):
        bkt_count[b] = 0
    w = bit >> 6
    w1 = min(w + 1, nw - 1)
    off = bit & 63
    v_lo = bucket_value[b0]
    v_hi = bucket_value[b1 - 1]
    dense = v_hi - v_lo == b1 - b0 - 1
    for p in range(cnt):
        r = p if start < 0 else rows[start + p]
        at = wbase + r * nw
        bits = _field(words_out[at + w], words_out[at + w1], off, length, big)
        iv = _signed_value(bits, length) if signed else np.int64(bits)
        b = -1
        if dense:
            if v_lo <= iv <= v_hi:
                b = b0 + (iv - v_lo)
        else:
            lo = b0
            hi = b1
            while lo < hi:
                mid = (lo + hi) >> 1
                if bucket_value[mid] < iv:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < b1 and bucket_value[lo] == iv:
                b = lo
        bucket_of[p] = b
        if b >= 0:
            bkt_count[b] += 1


@kernel
def _count_in_range(ws, shl, shr, big, signed, v_lo, v_hi):
    """How many payload words ``ws`` hold a multiplexer raw value ``(word << shl) >> shr``
    (logical or arithmetic) in ``v_lo..v_hi``: a branch-free loop (vectorised)."""
    ushl = np.uint64(shl)
    ushr = np.uint64(shr)
    ishr = np.int64(shr)
    n_in = 0
    for p in range(ws.shape[0]):
        x = (_bswap(ws[p]) if big else ws[p]) << ushl
        iv = (np.int64(x) >> ishr) if signed else np.int64(x >> ushr)
        n_in += 1 if v_lo <= iv <= v_hi else 0
    return n_in


@kernel
def plan_rowsets(words_out, word_offset, msg_words, avail, row_offset, msg_min_avail,
                 msg_active, msg_sig_first, msg_sig_stop, eval_signal, msg_root_group,
                 sig_start, sig_length, sig_big_endian, sig_signed, sig_float, sig_end_byte,
                 sig_group, sig_bucket_first, sig_bucket_stop, bucket_value,
                 sig_group_first, sig_group_stop, group_bucket_first, group_bucket_stop,
                 group_bucket, rows, sig_row_start, sig_count):
    """Rows of each message that carry each signal (see the module docstring).

    Per message with ``msg_active``, signals are visited in ``eval_signal`` order (each
    multiplexer before the signals under it). Signal ``s`` belongs to rowset group
    ``sig_group[s]`` (-1: never present; a message's root group is ``msg_root_group[m]``, every
    row). A multiplexer owns buckets ``sig_bucket_first[s]:sig_bucket_stop[s]`` with sorted raw
    values ``bucket_value``, and the groups ``sig_group_first[s]:sig_group_stop[s]`` under it;
    group ``g`` selects buckets ``group_bucket[group_bucket_first[g]:group_bucket_stop[g]]``.
    A group whose values cover every row of its multiplexer shares the multiplexer's rowset;
    the others get their rows written out. A signal whose ``sig_end_byte`` exceeds the
    message's shortest frame keeps only the rows long enough to carry it (and so do the
    signals under it, if it is a multiplexer). A float multiplexer selects nothing.

    Fills ``rows`` (row numbers within the message, ascending per rowset) and returns how
    many entries it used; writes ``sig_row_start[s]`` (-1: every row) and ``sig_count[s]``
    (rows carrying the signal) for the signals of active messages. ``rows`` must hold, per
    active message, its rows times (its multiplexers + multi-value groups + signals that may
    be too long for its shortest frame): :func:`rowset_bound`.
    """
    n_msg = msg_words.shape[0]
    n_groups = group_bucket_first.shape[0]
    n_buckets = bucket_value.shape[0]
    grp_start = np.zeros(n_groups, np.int64)
    grp_count = np.zeros(n_groups, np.int64)
    bkt_count = np.zeros(n_buckets, np.int64)
    fill = np.zeros(n_buckets, np.int64)
    chosen = np.zeros(n_buckets, np.bool_)
    max_rows = 0
    for m in range(n_msg):
        if msg_active[m]:
            max_rows = max(max_rows, row_offset[m + 1] - row_offset[m])
    bucket_of = np.empty(max_rows, np.int64)
    used = 0
    for m in range(n_msg):
        if not msg_active[m]:
            continue
        r0 = row_offset[m]
        if msg_root_group[m] >= 0:
            grp_start[msg_root_group[m]] = -1
            grp_count[msg_root_group[m]] = row_offset[m + 1] - r0
        for q in range(msg_sig_first[m], msg_sig_stop[m]):
            s = eval_signal[q]
            g = sig_group[s]
            if g < 0:
                sig_row_start[s] = 0
                sig_count[s] = 0
                continue
            start = grp_start[g]
            cnt = grp_count[g]
            end = sig_end_byte[s]
            if end > msg_min_avail[m] and cnt > 0:
                first = used
                for p in range(cnt):
                    r = p if start < 0 else rows[start + p]
                    if avail[r0 + r] >= end:
                        rows[used] = r
                        used += 1
                start = first
                cnt = used - first
            sig_row_start[s] = start
            sig_count[s] = cnt
            b0 = sig_bucket_first[s]
            b1 = sig_bucket_stop[s]
            if b1 == b0:
                continue
            # -- a multiplexer: bucket its rows by raw value, then its groups' rowsets
            g_all = sig_group_first[s]
            bit = sig_start[s]
            length = sig_length[s]
            off = bit & 63
            if (start < 0 and not sig_float[s] and sig_group_stop[s] == g_all + 1
                    and group_bucket_stop[g_all] - group_bucket_first[g_all] == b1 - b0
                    and bucket_value[b1 - 1] - bucket_value[b0] == b1 - b0 - 1
                    and off + length <= 64 and (sig_signed[s] or length < 64)):
                # one group under every value of a contiguous range (SG_MUL_VAL_ 0-31, or
                # all signals under one value), a multiplexer on every row within one word:
                # when every row is in range, the group shares the multiplexer's rows and no
                # bucketing is needed
                base = word_offset[m] + (bit >> 6)
                nw = msg_words[m]
                big = sig_big_endian[s]
                if _count_in_range(words_out[base:base + cnt * nw:nw],
                                   off if big else 64 - off - length, 64 - length, big,
                                   sig_signed[s], bucket_value[b0], bucket_value[b1 - 1]) \
                        == cnt:
                    grp_start[g_all] = -1
                    grp_count[g_all] = cnt
                    continue
            if sig_float[s]:
                for b in range(b0, b1):
                    bkt_count[b] = 0
                for p in range(cnt):
                    bucket_of[p] = -1
            else:
                _bucket_rows(words_out, word_offset[m], msg_words[m], rows, start, cnt,
                             sig_start[s], sig_length[s], sig_big_endian[s], sig_signed[s],
                             bucket_value, b0, b1, bucket_of, bkt_count)
            fills = 0
            for g2 in range(sig_group_first[s], sig_group_stop[s]):
                tot = 0
                for k in range(group_bucket_first[g2], group_bucket_stop[g2]):
                    tot += bkt_count[group_bucket[k]]
                grp_count[g2] = tot
                if tot == cnt:
                    grp_start[g2] = start
                elif group_bucket_stop[g2] - group_bucket_first[g2] == 1:
                    b = group_bucket[group_bucket_first[g2]]     # one bucket per such group
                    chosen[b] = True
                    grp_start[g2] = used
                    fill[b] = used
                    used += tot
                    fills += 1
                else:
                    grp_start[g2] = -2      # a union of buckets, written below
            if fills:
                for p in range(cnt):
                    b = bucket_of[p]
                    if b >= 0 and chosen[b]:
                        rows[fill[b]] = p if start < 0 else rows[start + p]
                        fill[b] += 1
                for b in range(b0, b1):
                    chosen[b] = False
            for g2 in range(sig_group_first[s], sig_group_stop[s]):
                if grp_start[g2] != -2:
                    continue
                for k in range(group_bucket_first[g2], group_bucket_stop[g2]):
                    chosen[group_bucket[k]] = True
                grp_start[g2] = used
                for p in range(cnt):
                    b = bucket_of[p]
                    if b >= 0 and chosen[b]:
                        rows[used] = p if start < 0 else rows[start + p]
                        used += 1
                for k in range(group_bucket_first[g2], group_bucket_stop[g2]):
                    chosen[group_bucket[k]] = False
    return used


# -- 4. values ------------------------------------------------------------------------------
@kernel
def _column_shift(w, shl, shr, big, signed, scale, offset, o):
    """One field that lies within one payload word: ``(word << shl) >> shr`` (logical or
    arithmetic) for each word of ``w``, physical values into ``o``.

    The loops index the views with the loop counter: Numba then knows the index is not
    negative and LLVM vectorises them (AVX-512: 8 rows per instruction)."""
    ushl = np.uint64(shl)
    ushr = np.uint64(shr)
    ishr = np.int64(shr)
    if big:
        if signed:
            for p in range(o.shape[0]):
                o[p] = np.float64(np.int64(_bswap(w[p]) << ushl) >> ishr) * scale + offset
        else:
            for p in range(o.shape[0]):
                o[p] = np.float64(np.int64((_bswap(w[p]) << ushl) >> ushr)) * scale + offset
    else:
        if signed:
            for p in range(o.shape[0]):
                o[p] = np.float64(np.int64(w[p] << ushl) >> ishr) * scale + offset
        else:
            for p in range(o.shape[0]):
                o[p] = np.float64(np.int64((w[p] << ushl) >> ushr)) * scale + offset


@kernel
def _column_generic(words_out, wbase, nw, w, off, length, big, signed, is_float, scale, offset,
                    rows, start, cnt, o, ob):
    """Any field (fields spilling into the next word, 64-bit unsigned, floats). ``o`` and
    ``ob`` are float64 and uint64 views of the same output: an IEEE float signal's raw bits
    are left in ``ob`` for the caller to reinterpret (no bit casts here: they cost compile
    time)."""
    w1 = min(w + 1, nw - 1)
    for p in range(cnt):
        r = p if start < 0 else rows[start + p]
        at = wbase + r * nw
        ob[p] = _field(words_out[at + w], words_out[at + w1], off, length, big)
    if is_float:
        return
    for p in range(cnt):
        bits = ob[p]
        if signed:
            o[p] = np.float64(_signed_value(bits, length)) * scale + offset
        else:
            o[p] = np.float64(bits) * scale + offset


@kernel
def decode_values(words_out, word_offset, msg_words, signals, sig_msg, sig_start, sig_length,
                  sig_big_endian, sig_signed, sig_float, sig_scale, sig_offset, sig_row_start,
                  sig_count, rows, value_start, values_out, bits_out):
    """Physical values (raw * scale + offset, float64) of each signal in ``signals`` over its
    rowset (``sig_row_start``, ``sig_count`` from :func:`plan_rowsets`), written to
    ``values_out[value_start[s]:value_start[s] + sig_count[s]]``. ``bits_out`` is a uint64
    view of ``values_out``: IEEE float signals get their raw bits (float32 in the low half)
    there, and the caller turns them into values.

    A signal carried by every row reads its message's word column in place; for a rowset, the
    words are first gathered into a contiguous buffer, kept for the next signals with the same
    rowset and word (order ``signals`` so that those are adjacent: foxbms' nine signals per
    multiplexer value then cost one gather)."""
    max_cnt = 0
    for q in range(signals.shape[0]):
        max_cnt = max(max_cnt, sig_count[signals[q]])
    tmp = np.empty(max_cnt, np.uint64)
    held_start = -1
    held_word = -1
    held_msg = -1
    for q in range(signals.shape[0]):
        s = signals[q]
        cnt = sig_count[s]
        if cnt == 0:
            continue
        m = sig_msg[s]
        nw = msg_words[m]
        length = sig_length[s]
        w = sig_start[s] >> 6
        off = sig_start[s] & 63
        big = sig_big_endian[s]
        start = sig_row_start[s]
        v0 = value_start[s]
        o = values_out[v0:v0 + cnt]
        if sig_float[s] or off + length > 64 or (length == 64 and not sig_signed[s]):
            _column_generic(words_out, word_offset[m], nw, w, off, length, big, sig_signed[s],
                            sig_float[s], sig_scale[s], sig_offset[s], rows, start, cnt, o,
                            bits_out[v0:v0 + cnt])
            continue
        base = word_offset[m] + w
        if start < 0:
            src = words_out[base:base + cnt * nw:nw]
        else:
            if start != held_start or w != held_word or m != held_msg:
                rr = rows[start:start + cnt]
                ws = words_out[base:]
                for p in range(cnt):
                    tmp[p] = ws[rr[p] * nw]
                held_start = start
                held_word = w
                held_msg = m
            src = tmp[:cnt]
        _column_shift(src, off if big else 64 - off - length, 64 - length, big, sig_signed[s],
                      sig_scale[s], sig_offset[s], o)


# -- encode ---------------------------------------------------------------------------------
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
