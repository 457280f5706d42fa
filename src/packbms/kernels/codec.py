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

Decoding is column-wise, in four kernels, each called once per table (the bookkeeping between
them happens inside them: a NumPy call between two kernels finds its code and data pushed out
of the caches by the kernel before, and costs several microseconds):

1. :func:`lookup_frames` finds each frame's message and counts frames per message: an 11-bit
   id reads its message from a 2048-entry table; other ids go through a direct-mapped cache,
   keyed by id and payload length, in front of a binary search per identifier mask. For a
   database of at most four keys (a small DBC, or a few messages selected),
   :func:`lookup_few` does the same vectorised, key by key over blocks of frames, with no
   per-frame branch or table (a log mostly of other ids then costs about 1 ns a frame).
   Error and remote frames, being rare, are found by a vectorised scan.
2. :func:`group_frames` groups the frames by message (a counting sort, stable): each message
   gets its timestamps, payload lengths and the payload words its signals need as contiguous
   blocks. When few frames are decoded, their positions are listed first with AVX-512
   compress-stores (:func:`decoded_positions`).
3. :func:`plan_rowsets` works out which rows carry each signal. A *rowset* is an ascending list
   of a message's rows, or "every row" (start -1). Root signals share the "every row" set; a
   multiplexer's rows are bucketed by its raw value (one bucket per value any of its children
   needs; a branch-free vectorised loop for the usual multiplexer), and each group of children
   selecting the same values shares one rowset (a bucket, or a union of buckets, or the
   multiplexer's own rows when the union covers them; a single group spanning a contiguous
   range of values, as ``SG_MUL_VAL_ 0-31``, needs only a count of the rows in range). A
   signal the frames may be too short to carry gets its own filtered rowset. Absent signals
   cost nothing.
4. :func:`decode_values` decodes over the rowsets, writing only present values, with fast loops
   for fields within one word (two shifts, one multiply-add; vectorised); the signals sharing
   a rowset and a payload word are decoded together, tile by tile, so the words are read from
   memory once.

:func:`encode_frames` walks the multiplexer tree (``root_signal``, ``sig_edge_first/stop``,
``edge_value``, ``edge_child``) frame by frame. Signals no edge reaches are never present.

Integer arrays are int64 unless stated, ids uint32, keys and payload words uint64, so each
kernel compiles to one signature. Helpers called per element take scalars only: a Numba call
that passes an array is not inlined and costs more than the field extraction itself.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

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
_EXT = np.uint64(1 << 32)
_U31 = np.uint64(31)
_U33 = np.uint64(33)
_ID_KEY = np.uint64((1 << 33) - 1)

#: lookup outcome codes written to ``frame_msg`` for frames that are not decoded
UNKNOWN_ID = -1
TOO_SHORT = -2
ERROR_OR_REMOTE = -3

#: direct-mapped id cache of :func:`lookup_frames`: 2**CACHE_BITS entries
CACHE_BITS = 12

#: rows :func:`decode_values` decodes at a time for the signals sharing a payload word
TILE = 2048

#: encode error codes
ENC_OK = 0
ENC_NOT_FINITE = 1
ENC_OUT_OF_RANGE = 2
ENC_FLOAT32_OVERFLOW = 3


@intrinsic
def _append_decoded16(typingctx, frame_msg, p, index, k):
    """Append to ``index[k:]`` the positions ``p .. p + 15`` (int32) whose ``frame_msg`` entry
    is not negative, and return how many: one masked compress-store (``vpcompressd`` on
    AVX-512; LLVM lowers it to scalar stores elsewhere). ``frame_msg`` (int32) must hold 16
    entries from ``p``; ``index`` (int32) room for them from ``k``. No Numba-level equivalent
    exists: a branch per frame mispredicts on every decoded frame of a sparse log, and a
    branch-free scalar append costs a dependent add per frame."""
    sig = types.int64(frame_msg, p, index, k)

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(signature.args[2])(context, builder, args[2])
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        at = builder.gep(src.data, [args[1]])
        codes = builder.load(builder.bitcast(at, v16.as_pointer()), align=4)
        keep = builder.icmp_signed(">=", codes, ir.Constant(v16, [0] * 16))
        first = builder.insert_element(ir.Constant(v16, ir.Undefined),
                                       builder.trunc(args[1], i32), ir.Constant(i32, 0))
        first = builder.shuffle_vector(first, ir.Constant(v16, ir.Undefined),
                                       ir.Constant(v16, [0] * 16))
        positions = builder.add(first, ir.Constant(v16, list(range(16))))
        out = builder.gep(dst.data, [args[3]])
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [v16, out.type, keep.type]),
            "llvm.masked.compressstore.v16i32")
        builder.call(store, [positions, out, keep])
        i16 = ir.IntType(16)
        popcount = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
        return builder.zext(builder.call(popcount, [builder.bitcast(keep, i16)]),
                            ir.IntType(64))

    return sig, codegen


if config.DISABLE_JIT:     # kernels run as Python (coverage runs): the same, with NumPy
    def _append_decoded16(frame_msg, p, index, k):  # noqa: F811
        found = np.flatnonzero(frame_msg[p:p + 16] >= 0)
        index[k:k + found.shape[0]] = found + p
        return found.shape[0]


@kernel
def decoded_positions(frame_msg, index):
    """Positions of the frames with a message (``frame_msg >= 0``), ascending, written to
    ``index`` (int32, room for all); returns how many. 16 frames per step, branch-free."""
    n = frame_msg.shape[0]
    k = 0
    q = n >> 4
    for j in range(q):
        k += _append_decoded16(frame_msg, j << 4, index, k)
    for i in range(q << 4, n):
        if frame_msg[i] >= 0:
            index[k] = i
            k += 1
    return k


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
def _find_message(key, group_mask, group_first, keys, key_msg, msg_enabled):
    """Message of an id key (``(is_extended << 32) | id``), or -1: a binary search per mask
    group, most specific mask first."""
    for g in range(group_mask.shape[0]):
        gkey = key & (_EXT | np.uint64(group_mask[g]))
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
            if msg_enabled[found]:
                return found
            return -1
    return -1


@kernel
def lookup_frames(arbitration_id, is_extended, is_error, is_remote, dlc, width, std_msg,
                  std_length, group_mask, group_first, keys, key_msg, msg_length, msg_enabled,
                  frame_msg, msg_count, counts):
    """Find each frame's message and count frames per message.

    An 11-bit frame reads its message from a 2048-entry table (built from the same keys).
    Other frames use the keys: ``(is_extended << 32) | (id & mask)``, sorted within each mask
    group; groups are tried in order (most specific mask first), so an exact definition wins
    over a masked one. The outcome for an identifier and payload length (the message, or
    TOO_SHORT) is kept in a direct-mapped cache, so a log's few hundred distinct ids are
    searched once each and the per-frame work is a hash and one compare. Error and remote
    frames, being rare, are looked for with a vectorised scan and a pass only when there are
    some.

    Parameters
    ----------
    arbitration_id : uint32 [N]
    is_extended, is_error, is_remote : bool [N]
    dlc : uint8 [N] (frames) or int64 [N] (reassembled ISO-TP messages)
        Payload length in bytes; only ``min(dlc, width)`` bytes are trusted.
    width : int
        Payload columns of the frame table (below 2**30).
    std_msg : int32 [2048]
        Message of each 11-bit id (-1: unknown or not decoded), as the keys give it.
    std_length : int64 [2048]
        That message's minimum payload length (0 for -1).
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
    counts : int64 [4] (out)
        decoded, unknown_id, too_short, error_or_remote.
    """
    n = arbitration_id.shape[0]
    size = 1 << CACHE_BITS
    cache_key = np.empty(size, np.uint64)
    cache_code = np.empty(size, np.int32)
    for h in range(size):
        cache_key[h] = _ALL     # no real key: the payload length is below 2**30
    mask = np.uint64(size - 1)
    n_short = 0
    for i in range(n):
        aid = arbitration_id[i]
        avail = min(np.int64(dlc[i]), width)
        if aid < 2048 and not is_extended[i]:
            code = std_msg[aid]
            if avail < std_length[aid]:
                code = TOO_SHORT
        else:
            key = (np.uint64(aid) | (np.uint64(is_extended[i]) << _U32)
                   | (np.uint64(avail) << _U33))
            h = (key ^ (key >> _U11) ^ (key >> _U22) ^ (key >> _U31)) & mask
            if cache_key[h] != key:
                cache_key[h] = key
                m = _find_message(key & _ID_KEY, group_mask, group_first, keys, key_msg,
                                  msg_enabled)
                cache_code[h] = TOO_SHORT if m >= 0 and avail < msg_length[m] else m
            code = cache_code[h]
        frame_msg[i] = code
        if code >= 0:
            msg_count[code] += 1
        elif code == TOO_SHORT:
            n_short += 1
    n_bad, bad_short = _error_or_remote(is_error, is_remote, frame_msg, msg_count)
    n_short -= bad_short
    decoded = 0
    for m in range(msg_count.shape[0]):
        decoded += msg_count[m]
    counts[0] = decoded
    counts[1] = n - decoded - n_short - n_bad
    counts[2] = n_short
    counts[3] = n_bad


@kernel
def _error_or_remote(is_error, is_remote, frame_msg, msg_count):
    """Mark error and remote frames ERROR_OR_REMOTE, whatever their id and length, and take
    them out of ``msg_count``; returns (how many, how many of them were counted too short).
    A vectorised scan first tells whether there are any."""
    bad = np.uint8(0)
    flags = is_error.view(np.uint8)
    for i in range(flags.shape[0]):
        bad = max(bad, flags[i])        # uint8 max: vectorised (an `or` is not)
    flags = is_remote.view(np.uint8)
    for i in range(flags.shape[0]):
        bad = max(bad, flags[i])
    n_bad = 0
    n_short = 0
    if bad:
        for i in range(frame_msg.shape[0]):
            if is_error[i] or is_remote[i]:
                code = frame_msg[i]
                if code >= 0:
                    msg_count[code] -= 1
                elif code == TOO_SHORT:
                    n_short += 1
                frame_msg[i] = ERROR_OR_REMOTE
                n_bad += 1
    return n_bad, n_short


@kernel
def lookup_few(arbitration_id, is_extended, is_error, is_remote, dlc, width, key_mask,
               key_value, key_extended, key_msg, key_length, frame_msg, msg_count, counts):
    """:func:`lookup_frames` for a database of a few keys (a small DBC, or a few messages
    selected; :data:`packbms.dbc.FEW_KEYS`), vectorised: each key in turn claims the
    unclaimed frames it matches, block by block of :data:`TILE` frames, so no per-frame
    branch or table is involved: about 0.1 ns a frame and key.

    Parameters
    ----------
    arbitration_id, is_extended, is_error, is_remote, dlc, width
        As :func:`lookup_frames`.
    key_mask, key_value : uint32 [K]
        A frame matches key ``k`` when ``id & key_mask[k] == key_value[k]`` and its id kind
        is ``key_extended[k]``. Keys are in priority order (the first match wins).
    key_extended : uint8 [K]
    key_msg : int32 [K]
        Message of each key, or -1 (a message not decoded: its frames are unknown).
    key_length : int64 [K]
        The message's minimum payload length (0 for key_msg -1).
    frame_msg, msg_count, counts
        As :func:`lookup_frames` (``msg_count`` zeroed).

    Returns
    -------
    bool
        False when an id has bit 31 set (no CAN id has; the bit holds the id kind here):
        the outputs are then meaningless and :func:`lookup_frames` must be used.
    """
    n = arbitration_id.shape[0]
    n_keys = key_mask.shape[0]
    n_msg = msg_count.shape[0]
    hidden = False      # keys of messages not decoded, which claim frames as unknown
    longest = 0
    for k in range(n_keys):
        hidden |= key_msg[k] < 0
        if key_msg[k] >= 0:
            longest = max(longest, key_length[k])
    # frames no key claimed are unknown; those a hiding key claimed are marked apart first
    free = np.int32(UNKNOWN_ID)
    hide = np.int32(-4) if hidden else free
    # keys with the id kind folded in at bit 31 (ids have at most 29 bits), and lengths, as
    # 32-bit lanes
    key32 = np.empty(TILE, np.uint32)
    avail = np.empty(TILE, np.int32)
    seen = np.zeros(n_msg, np.int64)     # counted in block b0 when seen == b0 + 1
    n_short = 0
    n_bad = 0
    top = np.uint32(0)
    for b0 in range(0, n, TILE):
        b1 = min(b0 + TILE, n)
        nb = b1 - b0
        ids = arbitration_id[b0:b1]
        ext = is_extended[b0:b1].view(np.uint8)
        err = is_error[b0:b1].view(np.uint8)
        rtr = is_remote[b0:b1].view(np.uint8)
        lengths = dlc[b0:b1]
        out = frame_msg[b0:b1]
        # short vectorised passes (one each: fused, they do not vectorise as well): ids with
        # bit 31, keys, the shortest payload, error or remote frames
        for p in range(nb):
            top = max(top, ids[p])
        for p in range(nb):
            key32[p] = ids[p] | (np.uint32(ext[p]) << np.uint32(31))
        if n_keys == 0:
            for p in range(nb):
                out[p] = free
        low = lengths[0]
        for p in range(nb):
            low = min(low, lengths[p])
        bad = np.uint8(0)
        for p in range(nb):
            bad = max(bad, err[p])
        for p in range(nb):
            bad = max(bad, rtr[p])
        shortest = min(np.int64(low), width)
        if shortest < longest:
            for p in range(nb):
                avail[p] = np.int32(min(np.int64(lengths[p]), width))
        for k in range(n_keys):
            mask = key_mask[k] | np.uint32(1 << 31)
            value = key_value[k] | (np.uint32(key_extended[k]) << np.uint32(31))
            target = np.int32(key_msg[k])
            if target < 0:
                target = hide
            need = np.int32(key_length[k])
            if target >= 0 and need > shortest:
                short = np.int32(TOO_SHORT)
                if k == 0:      # the first key claims over nothing: no test, no read
                    for p in range(nb):
                        code = target if avail[p] >= need else short
                        out[p] = code if (key32[p] & mask) == value else free
                else:
                    for p in range(nb):
                        hit = ((key32[p] & mask) == value) & (out[p] == free)
                        out[p] = (target if avail[p] >= need else short) if hit else out[p]
            elif k == 0:
                for p in range(nb):
                    out[p] = target if (key32[p] & mask) == value else free
            else:
                for p in range(nb):
                    hit = ((key32[p] & mask) == value) & (out[p] == free)
                    out[p] = target if hit else out[p]
        if hidden:
            for p in range(nb):
                out[p] = free if out[p] == hide else out[p]
        if bad:     # error and remote frames, whatever their id and length
            c = np.int32(0)
            for p in range(nb):
                is_bad = (err[p] | rtr[p]) != 0
                out[p] = np.int32(ERROR_OR_REMOTE) if is_bad else out[p]
                c += np.int32(is_bad)
            n_bad += c
        for k in range(n_keys):
            target = np.int32(key_msg[k])
            if target < 0 or seen[target] == b0 + 1:
                continue
            seen[target] = b0 + 1
            c = np.int32(0)
            for p in range(nb):
                c += np.int32(out[p] == target)
            msg_count[target] += c
        if shortest < longest:
            c = np.int32(0)
            for p in range(nb):
                c += np.int32(out[p] == np.int32(TOO_SHORT))
            n_short += c
    if top >> np.uint32(31):
        return False
    decoded = 0
    for m in range(n_msg):
        decoded += msg_count[m]
    counts[0] = decoded
    counts[1] = n - decoded - n_short - n_bad
    counts[2] = n_short
    counts[3] = n_bad
    return True


@kernel
def min_payload(dlc, width, frame_msg, msg_min_avail):
    """Shortest payload (bytes, at most ``width``) among each message's decoded frames."""
    for i in range(frame_msg.shape[0]):
        m = frame_msg[i]
        if m >= 0:
            avail = min(np.int64(dlc[i]), width)
            if avail < msg_min_avail[m]:
                msg_min_avail[m] = avail


# -- 2. group by message ------------------------------------------------------------------------
@kernel
def group_frames(words, dlc, timestamp, frame_msg, msg_count, msg_words, msg_partial,
                 msg_end_byte, width, words_out, avail_out):
    """Counting sort of the decoded frames by message (stable: log order within a message).

    Message ``m`` gets rows ``row_offset[m]:row_offset[m + 1]`` of the timestamps and of
    ``avail_out`` (uint16 payload bytes, ``min(dlc, width)``; written only when
    ``keep_avail``), and ``msg_words[m]`` payload words per row in ``words_out`` from
    ``word_offset[m]`` (row-major). ``words`` is the payload as little-endian uint64 words
    [N, W / 8]; ``msg_words[m] <= W / 8``; ``words_out`` (uint64) and ``avail_out`` (uint16)
    are work buffers of at least ``sum(msg_count * msg_words)`` and N entries.

    Payload lengths are kept (``keep_avail``) only when a message with ``msg_partial`` (its
    signals reach beyond its length) has a frame shorter than ``msg_end_byte``: then
    ``min_avail[m]`` is its shortest payload (else a large number).

    When at most a quarter of the frames are decoded (a log mostly of ids the database does
    not have, or of messages not selected), their positions are listed first
    (:func:`decoded_positions`) and only they are visited: a scan with a branch per frame
    would mispredict on each of them.

    Returns
    -------
    row_offset, word_offset : int64 [M + 1]
    min_avail : int64 [M]
    keep_avail : bool
    timestamps : float64 [total rows]
    """
    n_msg = msg_words.shape[0]
    row_offset = np.zeros(n_msg + 1, np.int64)
    word_offset = np.zeros(n_msg + 1, np.int64)
    partial = False
    for m in range(n_msg):
        partial |= msg_count[m] > 0 and msg_partial[m]
        row_offset[m + 1] = row_offset[m] + msg_count[m]
        word_offset[m + 1] = word_offset[m] + msg_count[m] * msg_words[m]
    min_avail = np.full(n_msg, 1 << 30, np.int64)
    keep_avail = False
    if partial:
        min_payload(dlc, width, frame_msg, min_avail)
        # payload lengths matter only where a frame may be too short for a signal
        for m in range(n_msg):
            keep_avail |= msg_count[m] > 0 and min_avail[m] < msg_end_byte[m]
    ts_out = np.empty(row_offset[n_msg], np.float64)
    n = frame_msg.shape[0]
    sparse = 4 * row_offset[n_msg] <= n
    index = np.empty(n if sparse else 0, np.int32)
    if sparse:
        n = decoded_positions(frame_msg, index)
    cursor = np.empty(n_msg, np.int64)
    single = True
    for m in range(n_msg):
        cursor[m] = row_offset[m]
        single = single and msg_words[m] == 1 and word_offset[m] == row_offset[m]
    if single and not keep_avail:       # classic CAN: one word per row, rows = word slots
        for j in range(n):
            i = index[j] if sparse else j
            m = frame_msg[i]
            if m >= 0:
                r = cursor[m]
                cursor[m] = r + 1
                ts_out[r] = timestamp[i]
                words_out[r] = words[i, 0]
        return row_offset, word_offset, min_avail, keep_avail, ts_out
    for j in range(n):
        i = index[j] if sparse else j
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
    return row_offset, word_offset, min_avail, keep_avail, ts_out


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
    if dense and start < 0 and off + length <= 64 and (signed or length < 64):
        # the usual multiplexer (every row, one word, values without gaps): branch-free
        # and vectorised, then counted
        ws = words_out[wbase + w:wbase + w + cnt * nw:nw]
        shl = np.uint64(off if big else 64 - off - length)
        ushr = np.uint64(64 - length)
        ishr = np.int64(64 - length)
        span = v_hi - v_lo
        if big:
            for p in range(cnt):
                x = _bswap(ws[p]) << shl
                d = ((np.int64(x) >> ishr) if signed else np.int64(x >> ushr)) - v_lo
                bucket_of[p] = b0 + d if 0 <= d <= span else -1
        else:
            for p in range(cnt):
                x = ws[p] << shl
                d = ((np.int64(x) >> ishr) if signed else np.int64(x >> ushr)) - v_lo
                bucket_of[p] = b0 + d if 0 <= d <= span else -1
        for p in range(cnt):
            b = bucket_of[p]
            if b >= 0:
                bkt_count[b] += 1
        return
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
                 keep_avail, msg_count, msg_rowsets, msg_sig_first, msg_sig_stop, eval_signal,
                 msg_root_group, sig_msg, sig_start, sig_length, sig_big_endian, sig_signed,
                 sig_float, sig_end_byte, sig_group, sig_bucket_first, sig_bucket_stop,
                 bucket_value, sig_group_first, sig_group_stop, group_bucket_first,
                 group_bucket_stop, group_bucket):
    """Rows of each message that carry each signal (see the module docstring).

    Per message with frames (``msg_count``), signals are visited in ``eval_signal`` order
    (each multiplexer before the signals under it). Signal ``s`` belongs to rowset group
    ``sig_group[s]`` (-1: never present; a message's root group is ``msg_root_group[m]``, every
    row). A multiplexer owns buckets ``sig_bucket_first[s]:sig_bucket_stop[s]`` with sorted raw
    values ``bucket_value``, and the groups ``sig_group_first[s]:sig_group_stop[s]`` under it;
    group ``g`` selects buckets ``group_bucket[group_bucket_first[g]:group_bucket_stop[g]]``.
    A group whose values cover every row of its multiplexer shares the multiplexer's rowset;
    the others get their rows written out. A signal whose ``sig_end_byte`` exceeds the
    message's shortest frame (``msg_min_avail``, with ``keep_avail``) keeps only the rows long
    enough to carry it (and so do the signals under it, if it is a multiplexer). A float
    multiplexer selects nothing. ``msg_rowsets[m]``: rowsets message ``m`` may write per row
    (its multiplexers and multi-value groups), which bounds the storage.

    Returns
    -------
    rows : int64
        Row numbers within the message, ascending per rowset.
    sig_row_start : int64 [S]
        Where each signal's rows start in ``rows`` (-1: every row).
    sig_count : int64 [S]
        Rows carrying each signal (0 for messages without frames).
    value_start : int64 [S]
        Where each signal's values start in the value array (signal after signal).
    n_values : int
        Values in all.
    """
    n_msg = msg_words.shape[0]
    n_sig = sig_start.shape[0]
    n_groups = group_bucket_first.shape[0]
    n_buckets = bucket_value.shape[0]
    sig_row_start = np.full(n_sig, -1, np.int64)
    sig_count = np.zeros(n_sig, np.int64)
    # rowset storage, at an upper bound: the part never written is never touched, so it
    # costs address space, not memory
    bound = 0
    for m in range(n_msg):
        bound += msg_count[m] * msg_rowsets[m]
    if keep_avail:
        for s in range(n_sig):
            if sig_group[s] >= 0 and sig_end_byte[s] > msg_min_avail[sig_msg[s]]:
                bound += msg_count[sig_msg[s]]
    rows = np.empty(bound, np.int64)
    grp_start = np.zeros(n_groups, np.int64)
    grp_count = np.zeros(n_groups, np.int64)
    bkt_count = np.zeros(n_buckets, np.int64)
    fill = np.zeros(n_buckets, np.int64)
    chosen = np.zeros(n_buckets, np.bool_)
    max_rows = 0
    for m in range(n_msg):
        max_rows = max(max_rows, msg_count[m])
    bucket_of = np.empty(max_rows, np.int64)
    used = 0
    for m in range(n_msg):
        if msg_count[m] == 0:
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
    value_start = np.empty(n_sig, np.int64)
    n_values = 0
    for s in range(n_sig):
        value_start[s] = n_values
        n_values += sig_count[s]
    return rows[:used], sig_row_start, sig_count, value_start, n_values


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
def _one_word(off, length, is_float, signed):
    """True for a field the vectorised :func:`_column_shift` decodes: an integer within one
    payload word (a 64-bit unsigned one does not fit its int64 arithmetic)."""
    return not is_float and off + length <= 64 and (signed or length < 64)


@kernel
def decode_values(words_out, word_offset, msg_words, signals, sig_msg, sig_start, sig_length,
                  sig_big_endian, sig_signed, sig_float, sig_scale, sig_offset, sig_row_start,
                  sig_count, rows, value_start, n_values):
    """Physical values (raw * scale + offset, float64) of each signal in ``signals`` over its
    rowset (``sig_row_start``, ``sig_count``, ``value_start``, ``n_values`` from
    :func:`plan_rowsets`): returns the float64 array of ``n_values`` where signal ``s`` owns
    ``[value_start[s]:value_start[s] + sig_count[s]]``. IEEE float signals get their raw bits
    there instead (float32 in the low half of the uint64 view): the caller turns them into
    values.

    Adjacent signals of one message that share a rowset and a payload word (order
    ``signals`` so that they are adjacent) are decoded together, tile by tile of
    :data:`TILE` rows: the tile's words are read from memory once for all of them (a rowset's
    words are gathered into a small buffer first), not once per signal."""
    values_out = np.empty(n_values, np.float64)
    bits_out = values_out.view(np.uint64)
    tmp = np.empty(TILE, np.uint64)
    nq = signals.shape[0]
    q = 0
    while q < nq:
        s = signals[q]
        cnt = sig_count[s]
        m = sig_msg[s]
        nw = msg_words[m]
        w = sig_start[s] >> 6
        start = sig_row_start[s]
        if cnt == 0:
            q += 1
            continue
        if not _one_word(sig_start[s] & 63, sig_length[s], sig_float[s], sig_signed[s]):
            v0 = value_start[s]
            _column_generic(words_out, word_offset[m], nw, w, sig_start[s] & 63,
                            sig_length[s], sig_big_endian[s], sig_signed[s], sig_float[s],
                            sig_scale[s], sig_offset[s], rows, start, cnt,
                            values_out[v0:v0 + cnt], bits_out[v0:v0 + cnt])
            q += 1
            continue
        q2 = q + 1
        while q2 < nq:
            s2 = signals[q2]
            if (sig_msg[s2] != m or sig_row_start[s2] != start or sig_count[s2] != cnt
                    or sig_start[s2] >> 6 != w
                    or not _one_word(sig_start[s2] & 63, sig_length[s2], sig_float[s2],
                                     sig_signed[s2])):
                break
            q2 += 1
        base = word_offset[m] + w
        for t0 in range(0, cnt, TILE):
            t1 = min(t0 + TILE, cnt)
            if start < 0:
                src = words_out[base + t0 * nw:base + t1 * nw:nw]
            else:
                ws = words_out[base:]
                rr = rows[start + t0:start + t1]
                for p in range(t1 - t0):
                    tmp[p] = ws[rr[p] * nw]
                src = tmp[:t1 - t0]
            for k in range(q, q2):
                s2 = signals[k]
                off = sig_start[s2] & 63
                length = sig_length[s2]
                big = sig_big_endian[s2]
                v0 = value_start[s2]
                _column_shift(src, off if big else 64 - off - length, 64 - length, big,
                              sig_signed[s2], sig_scale[s2], sig_offset[s2],
                              values_out[v0 + t0:v0 + t1])
        q = q2
    return values_out


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
