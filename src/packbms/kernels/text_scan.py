"""Line kernels for the text CAN logs: Vector ASC, candump ``-L`` and PEAK TRC.

Each kernel walks the lines of a byte buffer (``\\n`` ends a line, ``\\r\\n`` works as the ``\\r``
is stripped with the other whitespace), parses the frame lines into FrameTable columns and reports
every other line as ignored (a valid line that is not a frame) or as a bad record (an event with
its line number). The parsing rules are python-can 4.6's readers (``ASCReader``,
``CanutilsLogReader``, ``TRCReader``) with packbms' record checks on top (see
:mod:`packbms.io.readers`); the tokens are parsed by small helpers that follow Python's own
``int(s, base)``, ``float(s)`` and ``bytearray.fromhex`` grammars, so a field python-can accepts is
accepted here with the same value. Every index is checked against the line end before it is read.

That general path is the reference. Before it, each kernel hands runs of lines to a fast path
(``_candump_run``, ``_asc_run``, ``_trc_run``) that parses the usual line of its format eight bytes
at a time and stops at the first line it does not recognise, which then takes the general path;
a fast path stores exactly the frame the general path would (tests/test_io_text_threads.py
checks this on generated lines). The fast paths read up to :data:`FAST_REACH` bytes past a line's
start (never past the array): lines closer than that to the end of the array take the general
path. Callers must give every kernel the same kind of array (read-only ``uint8``): Numba compiles
one variant per kind.

Header lines (ASC ``date``/``base``, TRC ``;$...``) are parsed in Python before the kernel runs.

Statuses: ``DONE`` (every line up to ``end`` was read), ``FULL`` (output arrays full), ``WIDE``
(a payload needs 64 columns), ``EVENTS_FULL``; on the last three the kernel stops at the start of
the line concerned and ``state`` says where to resume.

Events, one row each: ``[EV_BAD, line, line start, line end, reason, a, b, 0]`` for a bad record,
``[EV_SLOW_TIME, line, token start, token end, frame index, 0, 0, 0]`` for a timestamp whose exact
rounding needs Python's ``float`` (more than 15 significant digits or an exponent; the kernel
stores an approximation).
"""

from __future__ import annotations

import numpy as np
from numba.core.config import DISABLE_JIT

from ._jit import kernel

if DISABLE_JIT:                         # the kernels run as Python (coverage)
    def trailing_zeros(x):
        x = int(x)
        return (x & -x).bit_length() - 1
else:
    from numba.cpython.unsafe.numbers import trailing_zeros

DONE = 0
FULL = 1
WIDE = 2
EVENTS_FULL = 3

S_POS = 0
S_K = 1
S_EVENTS = 2
S_IGNORED = 3
S_LINE = 4
STATE_SIZE = 5

EVENT_COLUMNS = 8
EV_BAD = 1
EV_SLOW_TIME = 2

# bad-record reasons (a, b: values for the message)
R_NOT_RECORD = np.int64(1)        # not a record of the format
R_FIELDS = np.int64(2)            # too few / too many fields
R_BAD_TIME = np.int64(3)
R_BAD_ID = np.int64(4)
R_BAD_DLC = np.int64(5)
R_BAD_BYTE = np.int64(6)
R_BAD_CHANNEL = np.int64(7)
R_BAD_FLAGS = np.int64(8)
R_INCOMPLETE = np.int64(9)        # TRC: a frame line with fields missing
R_MISSING_COLUMN = np.int64(10)   # TRC 2.x: the $COLUMNS header lacks a column the record needs
R_TS_NONFINITE = np.int64(11)
R_AID_RANGE = np.int64(12)        # a: the id (saturated)
R_DLC_RANGE = np.int64(13)        # a: the dlc (saturated)
R_PAYLOAD = np.int64(14)          # a: payload bytes, b: what the DLC says
R_LINE_TOO_LONG = np.int64(15)

# TRC file versions (iparams[0])
TRC_V1_0 = 10
TRC_V1_1 = 11
TRC_V1_3 = 13
TRC_V2 = 20
# TRC 2.x iparams layout: version, num_columns (maxsplit), then the column index of each field
# (-1 when absent)
P_VERSION = 0
P_NCOL = 1
P_T = 2
P_O = 3
P_I = 4
P_B = 5
P_L = 6
P_LL = 7    # "l": data length in bytes
P_D = 8
P_DIR = 9
TRC_PARAMS = 10

# Arguments passed to helper kernels are NumPy scalars, never Python literals: Numba compiles a
# helper once per distinct literal value otherwise (slow first call).
_B10 = np.int64(10)
_B16 = np.int64(16)
_Z = np.int64(0)
_FALSE = np.bool_(False)

# byte classes as lookup tables (one load instead of a chain of comparisons)
_HEXV = np.full(256, -1, np.int64)
_HEXV[48:58] = np.arange(10)
_HEXV[65:71] = np.arange(10, 16)
_HEXV[97:103] = np.arange(10, 16)
_SPLIT_WS = np.zeros(256, np.bool_)
_SPLIT_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True

_DLC2LEN = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64], dtype=np.int64)
_POW10 = np.array([1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                   1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22])
_IPOW10 = np.array([10 ** i for i in range(16)], dtype=np.int64)
_SAT = 1 << 62
_EXACT = 1 << 53

_KW_ERRORFRAME = np.frombuffer(b"errorframe", np.uint8)
_KW_CANFD = np.frombuffer(b"canfd", np.uint8)
_KW_CANFD_UP = np.frombuffer(b"CANFD", np.uint8)
_KW_TX = np.frombuffer(b"tx", np.uint8)
_KW_RX = np.frombuffer(b"rx", np.uint8)
_KW_DATE = np.frombuffer(b"date", np.uint8)
_KW_BASE = np.frombuffer(b"base", np.uint8)
_KW_NO = np.frombuffer(b"no", np.uint8)
_KW_INTERNAL = np.frombuffer(b"internal", np.uint8)
_KW_EVENTS = np.frombuffer(b"events", np.uint8)
_KW_LOGGED = np.frombuffer(b"logged", np.uint8)
_KW_BEGIN = np.frombuffer(b"begin", np.uint8)
_KW_END = np.frombuffer(b"end", np.uint8)
_KW_TRIGGERBLOCK = np.frombuffer(b"triggerblock", np.uint8)
_KW_INF = np.frombuffer(b"inf", np.uint8)
_KW_INFINITY = np.frombuffer(b"infinity", np.uint8)
_KW_NAN = np.frombuffer(b"nan", np.uint8)
_KW_TX_EXACT = np.frombuffer(b"Tx", np.uint8)
_KW_RX_EXACT = np.frombuffer(b"Rx", np.uint8)
_KW_RTR = np.frombuffer(b"RTR", np.uint8)
_KW_FFFFFFFF = np.frombuffer(b"FFFFFFFF", np.uint8)
_KW_DT = np.frombuffer(b"DT", np.uint8)
_KW_FD = np.frombuffer(b"FD", np.uint8)
_KW_FB = np.frombuffer(b"FB", np.uint8)
_KW_FE = np.frombuffer(b"FE", np.uint8)
_KW_BI = np.frombuffer(b"BI", np.uint8)
_KW_RR = np.frombuffer(b"RR", np.uint8)


# -- characters ------------------------------------------------------------------------------
@kernel
def _split_space(c):
    """str.split()/str.strip() whitespace among ASCII bytes (\\t \\n \\v \\f \\r, 0x1c-0x1f,
    space)."""
    return _SPLIT_WS[c]


@kernel
def _re_space(c):
    """``\\s`` of an ASCII regex: space \\t \\n \\r \\f \\v."""
    return c == 32 or (9 <= c <= 13)


@kernel
def _blank(c):
    """The blanks the fast paths accept between fields: space and tab."""
    return c == 32 or c == 9


@kernel
def _is_digit(c):
    return 48 <= c <= 57


@kernel
def _is_word(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95


@kernel
def _lower(c):
    return c | 32 if 65 <= c <= 90 else c


@kernel
def _hexval(c):
    return _HEXV[c]


@kernel
def _ieq_at(buf, i, e, kw):
    """buf[i:] starts with ``kw`` (lower-case), case-insensitively, before ``e``."""
    m = kw.shape[0]
    if e - i < m:
        return False
    for j in range(m):
        if _lower(buf[i + j]) != kw[j]:
            return False
    return True


@kernel
def _tok_eq(buf, a, b, kw):
    """buf[a:b] == kw exactly."""
    m = kw.shape[0]
    if b - a != m:
        return False
    for j in range(m):
        if buf[a + j] != kw[j]:
            return False
    return True


@kernel
def _skip_split(buf, i, e):
    while i < e and _split_space(buf[i]):
        i += 1
    return i


@kernel
def _skip_re(buf, i, e):
    while i < e and _re_space(buf[i]):
        i += 1
    return i


@kernel
def _tok_end(buf, i, e):
    while i < e and not _split_space(buf[i]):
        i += 1
    return i


@kernel
def _all_digits(buf, a, b):
    if a >= b:
        return False
    for i in range(a, b):
        if not _is_digit(buf[i]):
            return False
    return True


# -- Python's int(), float() and bytearray.fromhex() ------------------------------------------
@kernel
def _pyint(buf, a, b, base):
    """``int(buf[a:b], base)`` for base 10 or 16 (sign, ``0x`` prefix in base 16, single
    underscores between digits). Returns (ok, value saturated at +-2**62, value modulo 2**64)."""
    if a >= b:
        return False, np.int64(0), np.uint64(0)
    i = a
    neg = False
    c = buf[i]
    if c == 43 or c == 45:
        neg = c == 45
        i += 1
    prefixed = False
    if base == 16 and i + 1 < b and buf[i] == 48 and (buf[i + 1] | 32) == 120:
        i += 2
        prefixed = True
    if prefixed and i < b and buf[i] == 95:
        i += 1
    nd = 0
    prev_us = False
    sat = np.int64(0)
    wrap = np.uint64(0)
    ubase = np.uint64(base)
    while i < b:
        c = buf[i]
        if c == 95:
            if nd == 0 or prev_us:
                return False, np.int64(0), np.uint64(0)
            prev_us = True
            i += 1
            continue
        d = _hexval(c)
        if d < 0 or d >= base:
            return False, np.int64(0), np.uint64(0)
        prev_us = False
        nd += 1
        wrap = wrap * ubase + np.uint64(d)
        if sat < _SAT // 16:
            sat = sat * base + d
        else:
            sat = _SAT
        i += 1
    if nd == 0 or prev_us:
        return False, np.int64(0), np.uint64(0)
    if neg:
        sat = -sat
        wrap = (~wrap) + np.uint64(1)
    return True, sat, wrap


@kernel
def _digits(buf, i, b, allow_leading_us):
    """Scan ``digit (["_"] digit)*`` from i; returns the end (i when no digit) and ok=False on
    a misplaced underscore."""
    start = i
    prev_us = False
    while i < b:
        c = buf[i]
        if c == 95:
            if i == start or prev_us:
                return i, False
            prev_us = True
        elif _is_digit(c):
            prev_us = False
        else:
            break
        i += 1
    if prev_us:
        return i, False
    return i, True


@kernel
def _plain16(buf, a, b):
    """Fast path of ``int(s, 16)``: the value of 1..15 plain hex digits, else -1."""
    if a >= b or b - a > 15:
        return np.int64(-1)
    v = np.int64(0)
    for i in range(a, b):
        d = _hexval(buf[i])
        if d < 0:
            return np.int64(-1)
        v = (v << 4) | d
    return v


@kernel
def _plain10(buf, a, b):
    """Fast path of ``int(s, 10)``: the value of 1..15 plain digits, else -1."""
    if a >= b or b - a > 15:
        return np.int64(-1)
    v = np.int64(0)
    for i in range(a, b):
        c = buf[i]
        if c < 48 or c > 57:
            return np.int64(-1)
        v = v * 10 + (np.int64(c) - 48)
    return v


@kernel
def _int(buf, a, b, base):
    """``int(buf[a:b], base)`` as :func:`_pyint`, plain digits first (the usual field)."""
    v = _plain16(buf, a, b) if base == 16 else _plain10(buf, a, b)
    if v >= 0:
        return True, v, np.uint64(v)
    return _pyint(buf, a, b, base)


@kernel
def _float(buf, a, b):
    """:func:`_pyfloat` with the usual-form fast path first."""
    ok, v = _fastfloat(buf, a, b)
    if ok:
        return 1, v
    return _pyfloat(buf, a, b)


@kernel
def _fastfloat(buf, a, b):
    """``float()`` of the usual timestamp form, digits with at most one ``.`` and at most 15
    significant digits after a 2**53 check: (True, exact value), or (False, 0.0) for anything else
    (then :func:`_pyfloat`'s full grammar applies)."""
    mant = np.int64(0)
    nd = 0
    dot = np.int64(-1)
    i = a
    while i < b:
        c = buf[i]
        if 48 <= c <= 57:
            if nd >= 18:
                return False, 0.0
            mant = mant * 10 + (np.int64(c) - 48)
            nd += 1
        elif c == 46 and dot < 0:
            dot = i
        else:
            return False, 0.0
        i += 1
    if nd == 0 or mant > _EXACT:
        return False, 0.0
    frac = b - dot - 1 if dot >= 0 else 0
    if frac > 22:
        return False, 0.0
    return True, np.float64(mant) / _POW10[frac]


@kernel
def _pyfloat(buf, a, b):
    """``float(buf[a:b])``. Returns (status, value): 0 not a float, 1 exact, 2 valid but the
    exact rounding needs Python (value approximate)."""
    if a >= b:
        return 0, 0.0
    i = a
    neg = False
    if buf[i] == 43 or buf[i] == 45:
        neg = buf[i] == 45
        i += 1
    if _ieq_at(buf, i, b, _KW_INF) and (b - i == 3 or (b - i == 8
                                                       and _ieq_at(buf, i, b, _KW_INFINITY))):
        return 1, -np.inf if neg else np.inf
    if b - i == 3 and _ieq_at(buf, i, b, _KW_NAN):
        return 1, np.nan
    # syntax: digitpart ["." [digitpart]] [exponent] | "." digitpart [exponent]
    j, ok = _digits(buf, i, b, False)
    if not ok:
        return 0, 0.0
    n_int = j - i
    int_end = j
    frac_start = j
    frac_end = j
    if j < b and buf[j] == 46:
        frac_start = j + 1
        frac_end, ok = _digits(buf, frac_start, b, False)
        if not ok:
            return 0, 0.0
        if frac_end > frac_start and buf[frac_start] == 95:
            return 0, 0.0
        j = frac_end
    if n_int == 0 and frac_end == frac_start:
        return 0, 0.0
    exp = np.int64(0)
    slow = False
    if j < b and (buf[j] | 32) == 101:
        j += 1
        eneg = False
        if j < b and (buf[j] == 43 or buf[j] == 45):
            eneg = buf[j] == 45
            j += 1
        e_end, ok = _digits(buf, j, b, False)
        if not ok or e_end == j:
            return 0, 0.0
        for p in range(j, e_end):
            if buf[p] != 95:
                if exp < 100000:
                    exp = exp * 10 + (np.int64(buf[p]) - 48)
        if eneg:
            exp = -exp
        j = e_end
    if j != b:
        return 0, 0.0
    # value: mant * 10**scale, trailing zeros deferred so "1.500000" stays exact
    mant = np.int64(0)
    zeros = np.int64(0)
    scale = np.int64(0)
    lost = np.int64(0)
    for p in range(i, frac_end):
        if p == int_end:
            continue                    # the "."
        c = buf[p]
        if c == 95:
            continue
        if p > int_end:
            scale -= 1
        d = np.int64(c) - 48
        if d == 0:
            zeros += 1
        elif mant == 0:
            mant = d
            zeros = 0
        elif not slow:
            if zeros + 1 > 15 or mant > (_EXACT - d) // _IPOW10[zeros + 1]:
                slow = True
                lost = zeros + scale     # magnitude only: Python rounds it exactly
            else:
                mant = mant * _IPOW10[zeros + 1] + d
                zeros = 0
        if slow and p < int_end:
            lost += 1                   # integer digits left out of mant: keep the magnitude
    e10 = zeros + scale + exp
    if mant == 0:
        v = 0.0
    elif slow or e10 > 22 or e10 < -22:
        if slow:
            e10 = lost + exp
        v = np.float64(mant) * 10.0 ** np.float64(min(max(e10, -400), 400))
        return 2, -v if neg else v
    elif e10 >= 0:
        v = np.float64(mant) * _POW10[e10]
    else:
        v = np.float64(mant) / _POW10[-e10]
    return 1, -v if neg else v


@kernel
def _fromhex(buf, a, b, out):
    """``bytearray.fromhex(buf[a:b])`` into ``out`` (at most out.shape[0] bytes are stored).
    Returns the byte count, or -1 when not hex."""
    n = 0
    i = a
    cap = out.shape[0]
    while True:
        while i < b and (buf[i] == 32 or (9 <= buf[i] <= 13)):
            i += 1
        if i >= b:
            break
        if i + 1 >= b:
            return -1
        hi = _hexval(buf[i])
        lo = _hexval(buf[i + 1])
        if hi < 0 or lo < 0:
            return -1
        if n < cap:
            out[n] = np.uint8(hi * 16 + lo)
        n += 1
        i += 2
    return n


# -- newlines (the readers' block cuts) ---------------------------------------------------------
@kernel
def find_newline(buf, start, stop):
    """The index of the first ``\\n`` in ``buf[start:stop]``, or -1."""
    for i in range(start, stop):
        if buf[i] == 10:
            return i
    return -1


@kernel
def rfind_newline(buf, start, stop):
    """The index of the last ``\\n`` in ``buf[start:stop]``, or -1."""
    for i in range(stop - 1, start - 1, -1):
        if buf[i] == 10:
            return i
    return -1


# -- shared output ------------------------------------------------------------------------------
@kernel
def _bad(events, ne, line, ls, le, reason, a, b):
    events[ne, 0] = EV_BAD
    events[ne, 1] = line
    events[ne, 2] = ls
    events[ne, 3] = le
    events[ne, 4] = reason
    events[ne, 5] = a
    events[ne, 6] = b
    events[ne, 7] = 0
    return ne + 1


@kernel
def _slow(events, ne, line, ta, tb, k):
    events[ne, 0] = EV_SLOW_TIME
    events[ne, 1] = line
    events[ne, 2] = ta
    events[ne, 3] = tb
    events[ne, 4] = k
    events[ne, 5] = 0
    events[ne, 6] = 0
    events[ne, 7] = 0
    return ne + 1


@kernel
def _write(ts, aid, flags, dc, data, k, t, can_id, ext, fd, err, rtr, dlc, chan, payload, nbytes):
    ts[k] = t
    aid[k] = np.uint32(can_id)
    flags[0, k] = ext
    flags[1, k] = fd
    flags[2, k] = err
    flags[3, k] = rtr
    dc[0, k] = np.uint8(dlc)
    dc[1, k] = np.uint8(chan)
    for j in range(nbytes):
        data[k, j] = payload[j]
    for j in range(nbytes, data.shape[1]):
        data[k, j] = 0                  # the row may be reused (the readers' per-slice outputs)


@kernel
def _check(t, can_id, dlc, nbytes, expect, check_payload):
    """packbms' record checks, in the python engine's order: (reason, a, b); reason 0 = good."""
    if not np.isfinite(t):
        return R_TS_NONFINITE, 0, 0
    if can_id < 0 or can_id > 0x1FFFFFFF:
        return R_AID_RANGE, can_id, 0
    if dlc < 0 or dlc > 64:
        return R_DLC_RANGE, dlc, 0
    if nbytes > 64 or (check_payload and nbytes != expect):
        return R_PAYLOAD, nbytes, expect
    return 0, 0, 0


@kernel
def _line_end(buf, pos, end):
    e = pos
    while e < end and buf[e] != 10:
        e += 1
    return e


# -- fast paths: eight bytes at a time -------------------------------------------------------
# The usual lines of a format are parsed by one run function per format, called once for a run
# of lines (a call with array arguments costs reference counting; the small helpers it uses take
# integers or get inlined). Anything unusual (other whitespace, signs, prefixes, remote/FD/error
# frames, a field out of range, a line near the end of the buffer, ...) leaves the fast path and
# the line goes through the general path, which follows python-can's rules exactly; so the fast
# path only decides lines whose result is obvious, and stores the same frame the general path
# would. It writes nothing until the whole line is checked.
#
# Fields are read as little-endian 64-bit words (:func:`_ld8`, eight bytes from any index, first
# byte lowest) and classified with SWAR masks: bit 7 of each byte of a mask flags the bytes of a
# class; :func:`_first` is the index of the first flagged byte. A word may extend past the line
# (only the bytes before the first non-matching one are used) or past ``end``: the fast path runs
# only for lines starting at least :data:`FAST_REACH` bytes before the end of the array, and
# gives up when a line gets longer than :data:`FAST_SPAN`. The line's newline must be before
# ``end``.
#
# Speed comes from keeping the CPU's chains of dependent instructions short: the next line's
# start is found before this line's fields are parsed; ASC and TRC fields are located from a
# bitmap of the blanks of 64 bytes (``_bits8``, ``_tz``) and then checked independently of each
# other; a run of blanks is skipped with a branch for the usual one blank, which the CPU
# predicts, rather than with an index computed from the bytes, which it would have to wait for.

#: A line takes the fast path only if it starts at least this many bytes before the array end.
FAST_REACH = 512
#: ... and is at most about this long (longer lines take the general path).
FAST_SPAN = 384

_U0 = np.uint64(0)
_U8 = np.uint64(8)
_L01 = np.uint64(0x0101010101010101)
_L7F = np.uint64(0x7F7F7F7F7F7F7F7F)
_L80 = np.uint64(0x8080808080808080)
_L0F = np.uint64(0x0F0F0F0F0F0F0F0F)
_L20 = np.uint64(0x2020202020202020)
_L30 = np.uint64(0x3030303030303030)
_L09 = np.uint64(0x0909090909090909)
_L0A = np.uint64(0x0A0A0A0A0A0A0A0A)
_M_DIGIT_LO = _L01 * np.uint64(127 - 47)     # between "/" and ":"
_M_DIGIT_HI = _L01 * np.uint64(127 + 58)
_M_HEXL_LO = _L01 * np.uint64(127 - 96)      # between "`" and "g" (after | 0x20)
_M_HEXL_HI = _L01 * np.uint64(127 + 103)
_M_GT32_LO = _L01 * np.uint64(127 - 32)      # above " " (bytes below 128)
_M_GT32_HI = _L01 * np.uint64(127 + 128)
_B00FF = np.uint64(0x00FF00FF00FF00FF)
_B0000FFFF = np.uint64(0x0000FFFF0000FFFF)
_B000000FF = np.uint64(0x000000FF000000FF)
_MUL100 = np.uint64(100 + (1000000 << 32))
_MUL1 = np.uint64(1 + (10000 << 32))
_U32 = np.uint64(0xFFFFFFFF)
_U1 = np.uint64(1)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_MOVEMASK = np.uint64(0x0102040810204080)


@kernel
def _ld8(buf, i):
    """The eight bytes at ``buf[i:i + 8]`` as a little-endian word (unsigned indexes: no
    negative-index wrap, so LLVM makes it one load)."""
    u = np.uint64(i)
    return (np.uint64(buf[u]) | (np.uint64(buf[u + np.uint64(1)]) << np.uint64(8))
            | (np.uint64(buf[u + np.uint64(2)]) << np.uint64(16))
            | (np.uint64(buf[u + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(buf[u + np.uint64(4)]) << np.uint64(32))
            | (np.uint64(buf[u + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(buf[u + np.uint64(6)]) << np.uint64(48))
            | (np.uint64(buf[u + np.uint64(7)]) << np.uint64(56)))


@kernel
def _between(x, lo, hi):
    """Bytes b of x with m < b < n (lo = 0x01..01 * (127 - m), hi = 0x01..01 * (127 + n));
    exact per byte, bytes >= 128 never flagged (the "hasbetween" bit hack)."""
    t = x & _L7F
    return (hi - t) & ~x & (t + lo) & _L80


@kernel
def _digit_mask(w):
    """Bytes "0".."9"."""
    return _between(w, _M_DIGIT_LO, _M_DIGIT_HI)


@kernel
def _hex_mask(w):
    """Bytes "0".."9", "A".."F", "a".."f"."""
    return _between(w, _M_DIGIT_LO, _M_DIGIT_HI) | _between(w | _L20, _M_HEXL_LO, _M_HEXL_HI)


@kernel
def _zero_mask(x):
    """Zero bytes of x (exact per byte)."""
    return ~(((x & _L7F) + _L7F) | x) & _L80


@kernel
def _blank_mask(w):
    """Bytes " " and "\\t"."""
    return _zero_mask(w ^ _L20) | _zero_mask(w ^ _L09)


@kernel
def _token_mask(w):
    """Bytes above " " (any byte >= 128 too): the characters of a token."""
    return _between(w, _M_GT32_LO, _M_GT32_HI) | (w & _L80)


@kernel
def _newline_mask(w):
    return _zero_mask(w ^ _L0A)


@kernel
def _first(mask):
    """Index of the first flagged byte of a mask (8 when none)."""
    if mask == _U0:
        return np.int64(8)
    return np.int64(trailing_zeros(mask)) >> 3


@kernel
def _run(mask):
    """Length of the leading run of flagged bytes (8 when all are)."""
    return _first(mask ^ _L80)


@kernel
def _bits8(mask):
    """A byte mask as eight bits: byte j's flag -> bit j."""
    return ((mask >> np.uint64(7)) * _MOVEMASK) >> np.uint64(56)


@kernel
def _tz(x):
    """Trailing zero bits of x (64 when x is 0)."""
    if x == _U0:
        return np.int64(64)
    return np.int64(trailing_zeros(x))


@kernel
def _dec8(t):
    """Value of eight decimal digits t (bytes 0..9, the first most significant)."""
    t = t * np.uint64(10) + (t >> _U8)
    t = (((t & _B000000FF) * _MUL100)
         + (((t >> np.uint64(16)) & _B000000FF) * _MUL1)) >> np.uint64(32)
    return np.int64(t)


@kernel
def _dec_lead(w, c):
    """Value of the first c (1..8) bytes of w, decimal digits."""
    return _dec8((w ^ _L30) << np.uint64(64 - 8 * c))


@kernel
def _digits16(w, w2):
    """The decimal digits at the start of the 16 bytes w, w2: (count, value); count 17 when all
    16 bytes are digits (a longer number: not handled here)."""
    c = _run(_digit_mask(w))
    if c < 8:
        if c == 0:
            return np.int64(0), np.int64(0)
        return c, _dec_lead(w, c)
    c2 = _run(_digit_mask(w2))
    if c2 == 8:
        return np.int64(17), np.int64(0)
    hi = _dec8(w ^ _L30)
    if c2 == 0:
        return np.int64(8), hi
    return 8 + c2, hi * _IPOW10[c2] + _dec_lead(w2, c2)


@kernel
def _nibbles(w):
    """Per byte: the value of a hex digit byte."""
    return (w & _L0F) + ((w >> np.uint64(6)) & _L01) * np.uint64(9)


@kernel
def _hex_lead(w, c):
    """Value of the first c (1..8) bytes of w, hex digits."""
    n = _nibbles(w) << np.uint64(64 - 8 * c)
    n = ((n << np.uint64(4)) | (n >> _U8)) & _B00FF
    n = ((n << _U8) | (n >> np.uint64(16))) & _B0000FFFF
    return np.int64(((n & np.uint64(0xFFFF)) << np.uint64(16)) | (n >> np.uint64(32)))


@kernel
def _hex_bytes4(w):
    """Eight hex digits -> four bytes (the first pair lowest)."""
    n = _nibbles(w)
    p = ((n << np.uint64(4)) | (n >> _U8)) & _B00FF
    p = (p | (p >> _U8)) & _B0000FFFF
    return (p | (p >> np.uint64(16))) & _U32


@kernel
def _store8(data, k, pay):
    """Payload bytes 0..7 of row k (unsigned indexes: one store), zeros after them."""
    u = np.uint64(k)
    for j in range(8):
        data[u, np.uint64(j)] = np.uint8((pay >> np.uint64(8 * j)) & np.uint64(255))
    for j in range(8, data.shape[1]):
        data[u, np.uint64(j)] = 0       # a 64-byte row may be reused


@kernel
def _skip_blanks(buf, i, lim):
    """The index of the first byte from i that is not " " or "\\t" (a value above ``lim``: the
    run goes on past it). No blank and one blank are tested first: a predicted branch lets the
    CPU run ahead, where an index computed from the bytes would make it wait for them."""
    if not _blank(buf[i]):
        return i
    i += 1
    if not _blank(buf[i]):
        return i
    while True:
        c = _run(_blank_mask(_ld8(buf, i)))
        i += c
        if c < 8 or i > lim:
            return i


@kernel
def _skip_digits(buf, i, lim):
    while True:
        c = _run(_digit_mask(_ld8(buf, i)))
        i += c
        if c < 8 or i > lim:
            return i


@kernel
def _skip_token(buf, i, lim):
    """The end of the run of bytes above " " from i (a value above ``lim``: longer)."""
    while True:
        c = _run(_token_mask(_ld8(buf, i)))
        i += c
        if c < 8 or i > lim:
            return i


@kernel
def _find_newline(buf, i, lim):
    """The index of the first "\\n" from i (a value above ``lim``: not found before it)."""
    while True:
        m = _newline_mask(_ld8(buf, i))
        if m != _U0:
            return i + _first(m)
        i += 8
        if i > lim:
            return i


@kernel
def _candump_run(buf, pos, end, ts, aid, flags, dc, data, k):
    """Fast path: the usual lines ``(1700000000.123456) can0 1AB#0011223344556677[ R|T]`` from
    ``pos`` on, while there is room; returns (position of the first other line, k)."""
    cap = ts.shape[0]
    fast_end = min(buf.shape[0] - FAST_REACH, end - 1)
    while k < cap and pos <= fast_end:
        fi = pos
        if buf[fi] != 40:
            return pos, k
        fi += 1
        ci, vi = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))
        if ci == 0 or ci > 16:
            return pos, k
        fi += ci
        if buf[fi] != 46:
            return pos, k
        fi += 1
        cf, vf = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))
        if cf > 16 or ci + cf > 17:
            return pos, k
        fi += cf
        mant = vi * _IPOW10[cf] + vf
        if buf[fi] != 41 or buf[fi + 1] != 32 or mant > _EXACT:
            return pos, k
        fi += 2
        fc = _run(_token_mask(_ld8(buf, fi)))          # channel name
        if fc == 0 or fc == 8 or buf[fi + fc] != 32:
            return pos, k
        fchan = np.int64(0)
        for p in range(fi, fi + fc):
            d = np.int64(buf[p]) - 48
            if 0 <= d <= 9:
                fchan = (fchan * 10 + d) & 0xFF
        fi += fc + 1
        fw = _ld8(buf, fi)                              # id#
        fc = _run(_hex_mask(fw))
        if fc == 0 or buf[fi + fc] != 35:
            return pos, k
        fid = _hex_lead(fw, fc)
        if fid & 0x20000000 and fid & 0x80:
            return pos, k                               # error frame
        fext = fc > 3
        fi += fc + 1
        fw = _ld8(buf, fi)                              # data: 0..16 hex digits
        fc = _run(_hex_mask(fw))
        if fc & 1:
            return pos, k
        fpay = _hex_bytes4(fw)
        if fc == 8:
            fw = _ld8(buf, fi + 8)
            fc2 = _run(_hex_mask(fw))
            if fc2 & 1:
                return pos, k
            fpay |= (_hex_bytes4(fw) & ((_U1 << np.uint64(4 * fc2)) - _U1)) << np.uint64(32)
            fc += fc2
        else:
            fpay &= (_U1 << np.uint64(4 * fc)) - _U1
        fi += fc
        fb = np.int64(buf[fi])
        if fb == 32:                                    # " R" / " T"
            fb = np.int64(buf[fi + 1]) | 32
            if fb != 114 and fb != 116:
                return pos, k
            fi += 2
            fb = np.int64(buf[fi])
        if fb == 13:
            fi += 1
            fb = np.int64(buf[fi])
        if fb != 10 or fi >= end:
            return pos, k
        ts[k] = np.float64(mant) / _POW10[cf]
        aid[k] = np.uint32(fid & 0x1FFFFFFF)
        flags[0, k] = fext
        flags[1, k] = False
        flags[2, k] = False
        flags[3, k] = False
        dc[0, k] = np.uint8(fc >> 1)
        dc[1, k] = np.uint8(fchan)
        _store8(data, k, fpay)
        k += 1
        pos = fi + 1
    return pos, k


@kernel
def _asc_run(buf, pos, end, ts, aid, flags, dc, data, k):
    """Fast path (hex base): the usual classic data frame lines
    ``   3.098426 1  18EBFF00x       Rx   d 8 01 A0 0F A6 60 3B D1 40  [anything]`` from ``pos``
    on, while there is room; returns (position of the first other line, k)."""
    cap = ts.shape[0]
    fast_end = min(buf.shape[0] - FAST_REACH, end - 1)
    while k < cap and pos <= fast_end:
        lim = pos + FAST_SPAN
        le = _find_newline(buf, pos, lim)           # the next line's start does not wait for
        if le > lim or le >= end:                   # this line's fields
            return pos, k
        fi = _skip_blanks(buf, pos, lim)
        # 1. The fields lie in the 64 bytes from the first non-blank: the token bounds come from
        # a bitmap of the blanks, and the fields are checked and parsed independently of each
        # other (the CPU overlaps them).
        got = False
        mant = cf = ch = fid = dlc = np.int64(0)
        fext = False
        fpay = _U0
        while fi <= lim:                    # once; break = go on with 2.
            nl = le - fi
            bl = _U0
            for j in range(8):
                bl |= _bits8(_blank_mask(_ld8(buf, fi + 8 * j))) << np.uint64(8 * j)
            nb = ~bl & ((_U1 << np.uint64(nl)) - _U1 if nl < 64 else _ONES)
            starts = nb & ~(nb << _U1)      # first byte of each token
            ends = (nb << _U1) & ~nb        # first byte after each token
            s0 = _tz(starts)
            starts &= starts - _U1
            e0 = _tz(ends)
            ends &= ends - _U1
            s1 = _tz(starts)
            starts &= starts - _U1
            e1 = _tz(ends)
            ends &= ends - _U1
            s2 = _tz(starts)
            starts &= starts - _U1
            e2 = _tz(ends)
            ends &= ends - _U1
            s3 = _tz(starts)
            starts &= starts - _U1
            e3 = _tz(ends)
            ends &= ends - _U1
            s4 = _tz(starts)
            starts &= starts - _U1
            e4 = _tz(ends)
            ends &= ends - _U1
            s5 = _tz(starts)
            starts &= starts - _U1
            e5 = _tz(ends)
            if e5 >= 64:
                break
            a0 = fi + s0                                            # time: digits.digits
            ci, vi = _digits16(_ld8(buf, a0), _ld8(buf, a0 + 8))
            if ci == 0 or ci > 16 or buf[a0 + ci] != 46:
                break
            a0 += ci + 1
            cf, vf = _digits16(_ld8(buf, a0), _ld8(buf, a0 + 8))
            mant = vi * _IPOW10[cf] + vf
            if cf == 0 or ci + cf > 17 or a0 + cf != fi + e0 or mant > _EXACT:
                break
            n1 = e1 - s1                                            # channel: 1..6 digits
            fw = _ld8(buf, fi + s1)
            if n1 > 6 or _run(_digit_mask(fw)) < n1:
                break
            ch = _dec_lead(fw, n1)
            n2 = e2 - s2                                            # id[x]
            fext = (np.int64(buf[fi + e2 - 1]) | 32) == 120
            if fext:
                n2 -= 1
            fw = _ld8(buf, fi + s2)
            if n2 == 0 or n2 > 8 or _run(_hex_mask(fw)) < n2:
                break
            fid = _hex_lead(fw, n2)
            fb = np.int64(buf[fi + s3]) | 32                        # Rx / Tx; type (not r...)
            n4 = e4 - s4
            if (e3 - s3 != 2 or (fb != 114 and fb != 116)
                    or (np.int64(buf[fi + s3 + 1]) | 32) != 120 or fid > 0x1FFFFFFF
                    or (np.int64(buf[fi + s4]) | 32) == 114 or n4 > 8
                    or _run(_token_mask(_ld8(buf, fi + s4))) < n4):
                break
            code = _HEXV[buf[fi + s5]]                              # DLC: one hex digit
            if code < 0 or not _SPLIT_WS[buf[fi + s5 + 1]]:
                break
            dlc = _DLC2LEN[code]
            n = min(dlc, 8)
            if n > 0 and e5 - s5 != 1:
                break
            fpay = _U0
            ok = True
            for j in range(n):                                      # " XX" per byte
                q = fi + _tz(starts)
                starts &= starts - _U1
                hi = _HEXV[buf[q]]
                lo = _HEXV[buf[q + 1]]
                if (q >= fi + 64 or hi < 0 or lo < 0 or not _SPLIT_WS[buf[q + 2]]
                        or (j < n - 1 and not _blank(buf[q + 2]))):
                    ok = False
                    break
                fpay |= np.uint64(hi * 16 + lo) << np.uint64(8 * j)
            got = ok
            break
        if got:
            ts[k] = np.float64(mant) / _POW10[cf]
            aid[k] = np.uint32(fid)
            flags[0, k] = fext
            flags[1, k] = False
            flags[2, k] = False
            flags[3, k] = False
            dc[0, k] = np.uint8(dlc)
            dc[1, k] = np.uint8((ch - 1) & 0xFF) if ch > 0 else np.uint8(0)
            _store8(data, k, fpay)
            k += 1
            pos = le + 1
            continue
        # 2. Field after field (a long line, or one to give up on).
        ci, vi = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))       # time
        if ci == 0 or ci > 16:
            return pos, k
        fi += ci
        if buf[fi] != 46:
            return pos, k
        fi += 1
        cf, vf = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))
        if cf == 0 or cf > 16 or ci + cf > 17:
            return pos, k
        fi += cf
        mant = vi * _IPOW10[cf] + vf
        if mant > _EXACT or not _blank(buf[fi]):
            return pos, k
        fi = _skip_blanks(buf, fi, lim)
        cc, ch = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))      # channel
        if cc == 0 or cc > 6:
            return pos, k
        fi += cc
        if not _blank(buf[fi]):
            return pos, k
        fi = _skip_blanks(buf, fi, lim)
        fw = _ld8(buf, fi)                                          # id[x]
        fc = _run(_hex_mask(fw))
        if fc == 0 or fi > lim:
            return pos, k
        fid = _hex_lead(fw, fc)
        fi += fc
        fext = buf[fi] == 120 or buf[fi] == 88
        if fext:
            fi += 1
        if not _blank(buf[fi]) or fid > 0x1FFFFFFF:
            return pos, k
        fi = _skip_blanks(buf, fi, lim)                             # Rx / Tx
        fb = np.int64(buf[fi]) | 32
        if ((fb != 114 and fb != 116) or (np.int64(buf[fi + 1]) | 32) != 120
                or not _blank(buf[fi + 2]) or fi > lim):
            return pos, k
        fi = _skip_blanks(buf, fi + 2, lim)                         # frame type, not r...
        if (np.int64(buf[fi]) | 32) == 114:
            return pos, k
        fe = _skip_token(buf, fi, lim)
        if fe == fi or fe > lim or not _blank(buf[fe]):
            return pos, k
        fi = _skip_blanks(buf, fe, lim)                             # DLC: one hex digit
        code = _HEXV[buf[fi]]
        fi += 1
        if code < 0 or not _SPLIT_WS[buf[fi]] or fi > lim:
            return pos, k
        dlc = _DLC2LEN[code]
        fpay = _U0
        for j in range(min(dlc, 8)):                                # " XX" per byte
            if not _blank(buf[fi]):
                return pos, k
            fi += 1
            if _blank(buf[fi]):
                fi = _skip_blanks(buf, fi, lim)
            hi = _HEXV[buf[fi]]
            lo = _HEXV[buf[fi + 1]]
            if hi < 0 or lo < 0 or not _SPLIT_WS[buf[fi + 2]] or fi > lim:
                return pos, k
            fpay |= np.uint64(hi * 16 + lo) << np.uint64(8 * j)
            fi += 2
        # the rest of the line: anything (the fields stopped at or before its newline)
        ts[k] = np.float64(mant) / _POW10[cf]
        aid[k] = np.uint32(fid)
        flags[0, k] = fext
        flags[1, k] = False
        flags[2, k] = False
        flags[3, k] = False
        dc[0, k] = np.uint8(dlc)
        dc[1, k] = np.uint8((ch - 1) & 0xFF) if ch > 0 else np.uint8(0)
        _store8(data, k, fpay)
        k += 1
        pos = le + 1
    return pos, k


@kernel
def _trc_run(buf, pos, end, start_time, ts, aid, flags, dc, data, k):
    """Fast path: TRC 2.x ``DT`` lines in python-can's and PEAK's column order N,O,T,B,I,d,R,L,D
    ``      1     17535.400 DT 1  00000100 Tx -  8    00 01 02 03 04 05 06 07`` from ``pos``
    on, while there is room; returns (position of the first other line, k). (The caller checks
    the column layout.)"""
    cap = ts.shape[0]
    fast_end = min(buf.shape[0] - FAST_REACH, end - 1)
    while k < cap and pos <= fast_end:
        lim = pos + FAST_SPAN
        le = _find_newline(buf, pos, lim)           # the next line's start does not wait for
        if le > lim or le >= end:                   # this line's fields
            return pos, k
        fi = _skip_blanks(buf, pos, lim)
        fe = _skip_digits(buf, fi, lim)                             # N
        if fe == fi or fe > lim or not _blank(buf[fe]):
            return pos, k
        fi = _skip_blanks(buf, fe, lim)
        # 1. The fields from O on lie in 64 bytes: token bounds from a bitmap of the blanks (see
        # _asc_run).
        got = False
        mant = cf = bus = fid = dlc = np.int64(0)
        fext = False
        fpay = _U0
        while fi <= lim:                    # once; break = go on with 2.
            nl = le - fi
            bl = _U0
            for j in range(8):
                bl |= _bits8(_blank_mask(_ld8(buf, fi + 8 * j))) << np.uint64(8 * j)
            nb = ~bl & ((_U1 << np.uint64(nl)) - _U1 if nl < 64 else _ONES)
            starts = nb & ~(nb << _U1)
            ends = (nb << _U1) & ~nb
            s0 = _tz(starts)
            starts &= starts - _U1
            e0 = _tz(ends)
            ends &= ends - _U1
            s1 = _tz(starts)
            starts &= starts - _U1
            e1 = _tz(ends)
            ends &= ends - _U1
            s2 = _tz(starts)
            starts &= starts - _U1
            e2 = _tz(ends)
            ends &= ends - _U1
            s3 = _tz(starts)
            starts &= starts - _U1
            e3 = _tz(ends)
            ends &= ends - _U1
            s4 = _tz(starts)
            starts &= starts - _U1
            e4 = _tz(ends)
            ends &= ends - _U1
            s5 = _tz(starts)
            starts &= starts - _U1
            e5 = _tz(ends)
            ends &= ends - _U1
            s6 = _tz(starts)
            starts &= starts - _U1
            e6 = _tz(ends)
            if e6 >= 64:
                break
            a0 = fi + s0                                            # O (ms): digits.[digits]
            ci, vi = _digits16(_ld8(buf, a0), _ld8(buf, a0 + 8))
            if ci == 0 or ci > 16 or buf[a0 + ci] != 46:
                break
            a0 += ci + 1
            cf, vf = _digits16(_ld8(buf, a0), _ld8(buf, a0 + 8))
            mant = vi * _IPOW10[cf] + vf
            if ci + cf > 17 or a0 + cf != fi + e0 or mant > _EXACT:
                break
            n2 = e2 - s2                                            # B: 1..6 digits
            fw = _ld8(buf, fi + s2)
            if n2 > 6 or _run(_digit_mask(fw)) < n2:
                break
            bus = _dec_lead(fw, n2)
            n3 = e3 - s3                                            # I: 1..8 hex digits
            fw = _ld8(buf, fi + s3)
            if n3 > 8 or _run(_hex_mask(fw)) < n3:
                break
            fid = _hex_lead(fw, n3)
            fext = n3 > 4
            n4 = e4 - s4                                            # T = DT; d and R: tokens
            n5 = e5 - s5
            dlc = np.int64(buf[fi + s6]) - 48                       # L: 0..8
            if (e1 - s1 != 2 or buf[fi + s1] != 68 or buf[fi + s1 + 1] != 84
                    or fid > 0x1FFFFFFF or n4 > 8 or n5 > 8
                    or _run(_token_mask(_ld8(buf, fi + s4))) < n4
                    or _run(_token_mask(_ld8(buf, fi + s5))) < n5
                    or dlc < 0 or dlc > 8 or not _SPLIT_WS[buf[fi + s6 + 1]]
                    or (dlc > 0 and e6 - s6 != 1)):
                break
            fpay = _U0
            t = fi + s6 + 1
            ok = True
            for j in range(dlc):                                    # D: " XX" per byte
                q = fi + _tz(starts)
                starts &= starts - _U1
                hi = _HEXV[buf[q]]
                lo = _HEXV[buf[q + 1]]
                t = q + 2
                c = buf[t]
                if (q >= fi + 64 or hi < 0 or lo < 0
                        or not (_blank(c) or (j == dlc - 1 and (c == 13 or c == 10)))):
                    ok = False
                    break
                fpay |= np.uint64(hi * 16 + lo) << np.uint64(8 * j)
            t = _skip_blanks(buf, t, lim)                           # then blanks, [\r] \n
            if buf[t] == 13:
                t += 1
            got = ok and t == le
            break
        if got:
            ts[k] = np.float64(mant) / _POW10[cf] / 1000.0 + start_time
            aid[k] = np.uint32(fid)
            flags[0, k] = fext
            flags[1, k] = False
            flags[2, k] = False
            flags[3, k] = False
            dc[0, k] = np.uint8(dlc)
            dc[1, k] = np.uint8((bus - 1) & 0xFF) if bus > 0 else np.uint8(0)
            _store8(data, k, fpay)
            k += 1
            pos = le + 1
            continue
        # 2. Field after field (a long line, or one to give up on).
        ci, vi = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))       # O (ms)
        if ci == 0 or ci > 16:
            return pos, k
        fi += ci
        if buf[fi] != 46:
            return pos, k
        fi += 1
        cf, vf = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))
        if cf > 16 or ci + cf > 17:
            return pos, k
        fi += cf
        mant = vi * _IPOW10[cf] + vf
        if mant > _EXACT or not _blank(buf[fi]):
            return pos, k
        fi = _skip_blanks(buf, fi, lim)                             # T: DT
        if buf[fi] != 68 or buf[fi + 1] != 84 or not _blank(buf[fi + 2]) or fi > lim:
            return pos, k
        fi = _skip_blanks(buf, fi + 2, lim)
        cb, bus = _digits16(_ld8(buf, fi), _ld8(buf, fi + 8))     # B
        if cb == 0 or cb > 6:
            return pos, k
        fi += cb
        if not _blank(buf[fi]):
            return pos, k
        fi = _skip_blanks(buf, fi, lim)                             # I
        fw = _ld8(buf, fi)
        fc = _run(_hex_mask(fw))
        if fc == 0 or fi > lim:
            return pos, k
        fid = _hex_lead(fw, fc)
        fi += fc
        if not _blank(buf[fi]) or fid > 0x1FFFFFFF:
            return pos, k
        fext = fc > 4
        for _col in range(2):                                       # d (Rx/Tx) and R: any token
            fi = _skip_blanks(buf, fi, lim)
            fe = _skip_token(buf, fi, lim)
            if fe == fi or fe > lim or not _blank(buf[fe]):
                return pos, k
            fi = fe
        fi = _skip_blanks(buf, fi, lim)                             # L: 0..8
        dlc = np.int64(buf[fi]) - 48
        fi += 1
        if dlc < 0 or dlc > 8 or not _SPLIT_WS[buf[fi]] or fi > lim:
            return pos, k
        fpay = _U0
        n = 0
        if dlc:                                                     # D: hex pairs, blanks between
            while True:
                fi = _skip_blanks(buf, fi, lim)
                fb = buf[fi]
                if fb == 10 or fb == 13 or fi > lim:
                    break
                if n >= dlc:
                    return pos, k
                hi = _HEXV[fb]
                lo = _HEXV[buf[fi + 1]]
                if hi < 0 or lo < 0:
                    return pos, k
                fpay |= np.uint64(hi * 16 + lo) << np.uint64(8 * n)
                n += 1
                fi += 2
            if n != dlc:
                return pos, k
        else:
            fi = _skip_blanks(buf, fi, lim)
        if buf[fi] == 13:
            fi += 1
        if fi != le:
            return pos, k
        ts[k] = np.float64(mant) / _POW10[cf] / 1000.0 + start_time
        aid[k] = np.uint32(fid)
        flags[0, k] = fext
        flags[1, k] = False
        flags[2, k] = False
        flags[3, k] = False
        dc[0, k] = np.uint8(dlc)
        dc[1, k] = np.uint8((bus - 1) & 0xFF) if bus > 0 else np.uint8(0)
        _store8(data, k, fpay)
        k += 1
        pos = le + 1
    return pos, k


# -- candump -L -----------------------------------------------------------------------------------
@kernel
def scan_candump(buf, end, fparams, iparams, ts, aid, flags, dc, data, events, state):
    """candump ``-L`` lines: ``(time) channel id#data [R|T]``, ``id##<flags>data`` (CAN FD),
    ``id#R[dlc]`` (remote); python-can's ``CanutilsLogReader`` rules."""
    cap = ts.shape[0]
    width = data.shape[1]
    max_events = events.shape[0]
    pos = state[S_POS]
    k = state[S_K]
    ne = state[S_EVENTS]
    ignored = state[S_IGNORED]
    line = state[S_LINE]
    payload = np.zeros(72, np.uint8)
    fast_end = buf.shape[0] - FAST_REACH
    fails = np.int64(0)
    backoff = np.int64(0)
    status = DONE
    while pos < end:
        if ne + 2 > max_events:
            status = EVENTS_FULL
            break
        if k < cap and pos <= fast_end and backoff == 0:
            pos0 = pos
            pos, k1 = _candump_run(buf, pos, end, ts, aid, flags, dc, data, k)
            line += k1 - k
            k = k1
            if pos > pos0:
                fails = 0
            else:                               # unusual lines: try the fast path less often
                fails = min(2 * fails + 1, 64)
                backoff = fails
            if pos >= end:
                break
        elif backoff > 0:
            backoff -= 1
        le = _line_end(buf, pos, end)
        nxt = le + 1 if le < end else end
        s = _skip_split(buf, pos, le)
        e = le
        while e > s and _split_space(buf[e - 1]):
            e -= 1
        if s == e:
            pos = nxt
            line += 1
            continue
        # tokens: 3, or 4 when the line ends in " r"/" t"
        want = np.int64(3)
        if e - s >= 2 and buf[e - 2] == 32 and (_lower(buf[e - 1]) == 114
                                                or _lower(buf[e - 1]) == 116):
            want = np.int64(4)
        t0 = s
        t0e = _tok_end(buf, t0, e)
        t1 = _skip_split(buf, t0e, e)
        t1e = _tok_end(buf, t1, e)
        t2 = _skip_split(buf, t1e, e)
        t2e = _tok_end(buf, t2, e)
        t3 = _skip_split(buf, t2e, e)
        t3e = _tok_end(buf, t3, e)
        t4 = _skip_split(buf, t3e, e)
        ntok = (1 if t0e > t0 else 0) + (1 if t1e > t1 else 0) + (1 if t2e > t2 else 0) \
            + (1 if t3e > t3 else 0) + (1 if t4 < e else 0)
        if ntok != want:
            ne = _bad(events, ne, line, pos, le, R_FIELDS, ntok, want)
            pos = nxt
            line += 1
            continue
        # timestamp: float(token[1:-1])
        fs, t = _float(buf, t0 + 1, t0e - 1)
        if t0e - t0 < 2 or fs == 0:
            ne = _bad(events, ne, line, pos, le, R_BAD_TIME, _Z, _Z)
            pos = nxt
            line += 1
            continue
        # channel: digits -> int; else the digits of the name (packbms' mapping)
        chan = np.int64(0)
        for p in range(t1, t1e):
            if _is_digit(buf[p]):
                chan = (chan * 10 + (np.int64(buf[p]) - 48)) & 0xFF
        # frame: id#data
        h = t2
        while h < t2e and buf[h] != 35:
            h += 1
        if h >= t2e:
            ne = _bad(events, ne, line, pos, le, R_FIELDS, _Z, _Z)
            pos = nxt
            line += 1
            continue
        ok, id_sat, id_wrap = _int(buf, t2, h, _B16)
        if not ok:
            ne = _bad(events, ne, line, pos, le, R_BAD_ID, _Z, _Z)
            pos = nxt
            line += 1
            continue
        ext = h - t2 > 3
        d = h + 1
        fd = False
        if d < t2e and buf[d] == 35:
            fd = True
            if d + 1 >= t2e or not _is_digit(buf[d + 1]):
                ne = _bad(events, ne, line, pos, le, R_BAD_FLAGS, _Z, _Z)
                pos = nxt
                line += 1
                continue
            d += 2
        rtr = False
        bad_byte = False
        nbytes = _Z
        if d < t2e and _lower(buf[d]) == 114:
            rtr = True
            if t2e - d > 1:
                ok, dlc, _w = _int(buf, d + 1, t2e, _B10)
                if not ok:
                    ne = _bad(events, ne, line, pos, le, R_BAD_DLC, _Z, _Z)
                    pos = nxt
                    line += 1
                    continue
            else:
                dlc = _Z
        else:
            dlc = (t2e - d) // 2
            p = d
            while p < t2e:
                q = min(p + 2, t2e)
                v = np.int64(-1)
                if q - p == 2:
                    hi = _HEXV[buf[p]]
                    lo = _HEXV[buf[p + 1]]
                    if hi >= 0 and lo >= 0:
                        v = hi * 16 + lo
                if v < 0:
                    ok, v, _w = _pyint(buf, p, q, _B16)    # "+F", "-0", ...: Python's int()
                    if not ok or v < 0 or v > 255:
                        bad_byte = True
                        break
                if nbytes < 72:
                    payload[nbytes] = np.uint8(v)
                nbytes += 1
                p = q
            if bad_byte:
                ne = _bad(events, ne, line, pos, le, R_BAD_BYTE, _Z, _Z)
                pos = nxt
                line += 1
                continue
        err = (id_wrap & np.uint64(0x20000000)) != 0 and (id_wrap & np.uint64(0x80)) != 0
        if err:
            can_id = np.int64(0)
            ext = True
            fd = False
            rtr = False
            dlc = np.int64(0)
            nbytes = _Z
            chan = np.int64(0)
        else:
            can_id = np.int64(id_wrap & np.uint64(0x1FFFFFFF))
        reason, ra, rb = _check(t, can_id, dlc, nbytes, dlc, not rtr)
        if reason != 0:
            ne = _bad(events, ne, line, pos, le, reason, ra, rb)
            pos = nxt
            line += 1
            continue
        if nbytes > width:
            status = WIDE
            break
        if k >= cap:
            status = FULL
            break
        if fs == 2:
            ne = _slow(events, ne, line, t0 + 1, t0e - 1, k)
        _write(ts, aid, flags, dc, data, k, t, can_id, ext, fd, err, rtr, dlc, chan, payload,
               nbytes)
        k += 1
        pos = nxt
        line += 1
    state[S_POS] = pos
    state[S_K] = k
    state[S_EVENTS] = ne
    state[S_IGNORED] = ignored
    state[S_LINE] = line
    return status


# -- Vector ASC -----------------------------------------------------------------------------------
@kernel
def _asc_frame_line(buf, s, e):
    """python-can's ASC_MESSAGE_REGEX ``\\d+\\.\\d+\\s+(\\d+\\s+(\\w+\\s+(Tx|Rx)|ErrorFrame)|CANFD)``
    (ignoring case) matches at ``s``."""
    i = s
    j = i
    while j < e and _is_digit(buf[j]):
        j += 1
    if j == i or j >= e or buf[j] != 46:
        return False
    i = j + 1
    j = i
    while j < e and _is_digit(buf[j]):
        j += 1
    if j == i or j >= e or not _re_space(buf[j]):
        return False
    i = _skip_re(buf, j, e)
    if _ieq_at(buf, i, e, _KW_CANFD):
        return True
    j = i
    while j < e and _is_digit(buf[j]):
        j += 1
    if j == i or j >= e or not _re_space(buf[j]):
        return False
    i = _skip_re(buf, j, e)
    if _ieq_at(buf, i, e, _KW_ERRORFRAME):
        return True
    j = i
    while j < e and _is_word(buf[j]):
        j += 1
    if j == i or j >= e or not _re_space(buf[j]):
        return False
    i = _skip_re(buf, j, e)
    return _ieq_at(buf, i, e, _KW_TX) or _ieq_at(buf, i, e, _KW_RX)


@kernel
def _kw_boundary(buf, i, e, kw):
    """``kw\\b`` (ignoring case) at i."""
    if not _ieq_at(buf, i, e, kw):
        return False
    j = i + kw.shape[0]
    return j >= e or not _is_word(buf[j])


@kernel
def _kw_spaced(buf, i, e, kw1, kw2):
    """``kw1\\s+kw2`` (ignoring case) at i; returns the end or -1."""
    if not _ieq_at(buf, i, e, kw1):
        return -1
    j = i + kw1.shape[0]
    if j >= e or not _re_space(buf[j]):
        return -1
    j = _skip_re(buf, j, e)
    if not _ieq_at(buf, j, e, kw2):
        return -1
    return j + kw2.shape[0]


@kernel
def _asc_non_event(buf, a, e):
    """packbms' list of ASC lines that are valid but not events (comments, header, trigger
    block)."""
    i = _skip_re(buf, a, e)
    if i + 1 < e and buf[i] == 47 and buf[i + 1] == 47:
        return True
    if _kw_boundary(buf, i, e, _KW_DATE) or _kw_boundary(buf, i, e, _KW_BASE):
        return True
    if _ieq_at(buf, i, e, _KW_NO):
        j = i + 2
        if j < e and _re_space(buf[j]):
            j = _skip_re(buf, j, e)
            j2 = _kw_spaced(buf, j, e, _KW_INTERNAL, _KW_EVENTS)
            if j2 >= 0 and j2 < e and _re_space(buf[j2]):
                if _ieq_at(buf, _skip_re(buf, j2, e), e, _KW_LOGGED):
                    return True
    j2 = _kw_spaced(buf, i, e, _KW_INTERNAL, _KW_EVENTS)
    if j2 >= 0 and j2 < e and _re_space(buf[j2]):
        if _ieq_at(buf, _skip_re(buf, j2, e), e, _KW_LOGGED):
            return True
    if _kw_spaced(buf, i, e, _KW_BEGIN, _KW_TRIGGERBLOCK) >= 0:
        return True
    return _kw_spaced(buf, i, e, _KW_END, _KW_TRIGGERBLOCK) >= 0


@kernel
def _asc_id(buf, a, b, base):
    """ASC identifier: a trailing x/X marks an extended id. (ok, value, extended)."""
    if b > a and _lower(buf[b - 1]) == 120:
        ok, v, _w = _int(buf, a, b - 1, base)
        return ok, v, True
    ok, v, _w = _int(buf, a, b, base)
    return ok, v, False


@kernel
def _asc_bytes(buf, i, e, n, base, payload):
    """Parse up to n whitespace-separated bytes from i; returns the count, or -1 on a bad one."""
    got = 0
    while got < n:
        i = _skip_split(buf, i, e)
        if i >= e:
            break
        j = _tok_end(buf, i, e)
        v = np.int64(-1)
        if base == 16 and j - i == 2:
            hi = _HEXV[buf[i]]
            lo = _HEXV[buf[i + 1]]
            if hi >= 0 and lo >= 0:
                v = hi * 16 + lo
        if v < 0:
            ok, v, _w = _int(buf, i, j, base)
            if not ok or v < 0 or v > 255:
                return -1
        if got < payload.shape[0]:
            payload[got] = np.uint8(v)
        got += 1
        i = j
    return got


@kernel
def scan_asc(buf, end, fparams, iparams, ts, aid, flags, dc, data, events, state):
    """ASC event lines after the header; ``iparams[0]`` is the number base (10 or 16)."""
    base = iparams[0]
    cap = ts.shape[0]
    width = data.shape[1]
    max_events = events.shape[0]
    pos = state[S_POS]
    k = state[S_K]
    ne = state[S_EVENTS]
    ignored = state[S_IGNORED]
    line = state[S_LINE]
    payload = np.zeros(72, np.uint8)
    fast_end = buf.shape[0] - FAST_REACH if base == 16 else -1
    fails = np.int64(0)
    backoff = np.int64(0)
    status = DONE
    while pos < end:
        if ne + 2 > max_events:
            status = EVENTS_FULL
            break
        if k < cap and pos <= fast_end and backoff == 0:
            pos0 = pos
            pos, k1 = _asc_run(buf, pos, end, ts, aid, flags, dc, data, k)
            line += k1 - k
            k = k1
            if pos > pos0:
                fails = 0
            else:                               # unusual lines: try the fast path less often
                fails = min(2 * fails + 1, 64)
                backoff = fails
            if pos >= end:
                break
        elif backoff > 0:
            backoff -= 1
        le = _line_end(buf, pos, end)
        nxt = le + 1 if le < end else end
        s = _skip_split(buf, pos, le)
        e = le
        while e > s and _split_space(buf[e - 1]):
            e -= 1
        if s == e:
            pos = nxt
            line += 1
            continue
        if not _asc_frame_line(buf, s, e):
            fs, _v = _float(buf, s, _tok_end(buf, s, e))
            if _asc_non_event(buf, pos, le) or fs != 0:
                ignored += 1
            else:
                ne = _bad(events, ne, line, pos, le, R_NOT_RECORD, _Z, _Z)
            pos = nxt
            line += 1
            continue
        t0e = _tok_end(buf, s, e)
        c0 = _skip_split(buf, t0e, e)
        c0e = _tok_end(buf, c0, e)
        r = _skip_split(buf, c0e, e)
        is_canfd = _tok_eq(buf, c0, c0e, _KW_CANFD_UP)
        if c0e == c0 or r >= e or not (is_canfd or _all_digits(buf, c0, c0e)):
            ignored += 1                # python-can passes over it (no frame); a timed event
            pos = nxt
            line += 1
            continue
        fs, t = _float(buf, s, t0e)
        err = False
        rtr = False
        ext = True
        can_id = np.int64(0)
        dlc = np.int64(0)
        nbytes = _Z
        expect = _Z
        check_payload = False
        reason = _Z
        if not is_canfd:
            ok, ch, chw = _int(buf, c0, c0e, _B10)
            chan = _Z if ch < 1 else np.int64((chw - np.uint64(1)) & np.uint64(0xFF))
            if _ieq_at(buf, r, e, _KW_ERRORFRAME):
                err = True
            else:
                i0e = _tok_end(buf, r, e)
                d0 = _skip_split(buf, i0e, e)
                d0e = _tok_end(buf, d0, e)
                r2 = _skip_split(buf, d0e, e)
                if r2 >= e:
                    reason = R_FIELDS
                else:
                    ok, can_id, ext = _asc_id(buf, r, i0e, base)
                    if not ok:
                        reason = R_BAD_ID
                    elif _lower(buf[r2]) == 114:
                        rtr = True
                        a1e = _tok_end(buf, r2, e)
                        a2 = _skip_split(buf, a1e, e)
                        a2e = _tok_end(buf, a2, e)
                        if a2e > a2 and _all_digits(buf, a2, a2e):
                            ok, dlc, _w = _int(buf, a2, a2e, base)
                    else:
                        a1e = _tok_end(buf, r2, e)
                        a2 = _skip_split(buf, a1e, e)
                        a2e = _tok_end(buf, a2, e)
                        if a2e == a2:
                            reason = R_FIELDS
                        else:
                            ok, v, _w = _int(buf, a2, a2e, base)
                            if not ok or v < -16:
                                reason = R_BAD_DLC
                            else:
                                dlc = _DLC2LEN[v] if 0 <= v <= 15 else (
                                    64 if v > 15 else _DLC2LEN[16 + v])
                                expect = min(dlc, 8)
                                nbytes = _asc_bytes(buf, a2e, e, expect, base, payload)
                                check_payload = True
                                if nbytes < 0:
                                    reason = R_BAD_BYTE
        else:
            fd = True
            # CANFD channel dir id ...
            h0e = _tok_end(buf, r, e)
            h1 = _skip_split(buf, h0e, e)
            h1e = _tok_end(buf, h1, e)
            r2 = _skip_split(buf, h1e, e)
            chan = _Z
            if r2 >= e:
                reason = R_FIELDS
            else:
                ok, ch, chw = _int(buf, r, h0e, _B10)
                if not ok:
                    reason = R_BAD_CHANNEL
                else:
                    chan = _Z if ch < 1 else np.int64((chw - np.uint64(1)) & np.uint64(0xFF))
                    if _ieq_at(buf, r2, e, _KW_ERRORFRAME):
                        err = True
                    else:
                        i0e = _tok_end(buf, r2, e)
                        f0 = _skip_split(buf, i0e, e)
                        f0e = _tok_end(buf, f0, e)
                        r3 = _skip_split(buf, f0e, e)
                        # brs esi dlc len data (symbolic name present) or esi dlc len data
                        nskip = 1 if _all_digits(buf, f0, f0e) else 2
                        p = r3
                        for _j in range(nskip):
                            p = _skip_split(buf, _tok_end(buf, p, e), e)
                        dl0 = p
                        dl0e = _tok_end(buf, dl0, e)
                        ln0 = _skip_split(buf, dl0e, e)
                        ln0e = _tok_end(buf, ln0, e)
                        dstart = _skip_split(buf, ln0e, e)
                        if r3 >= e or dstart >= e:
                            reason = R_FIELDS
                        else:
                            ok, can_id, ext = _asc_id(buf, r2, i0e, base)
                            if not ok:
                                reason = R_BAD_ID
                            else:
                                ok, dlc_v, _w = _int(buf, dl0, dl0e, base)
                                ok2, dlen, _w = _int(buf, ln0, ln0e, _B10)
                                if not ok or not ok2:
                                    reason = R_BAD_DLC
                                elif dlen == 0:
                                    rtr = True
                                    dlc = dlc_v
                                elif dlen < 0:
                                    reason = R_DLC_RANGE
                                    dlc = dlen
                                else:
                                    dlc = dlen
                                    nbytes = _asc_bytes(buf, dstart, e, min(dlen, 72), base,
                                                        payload)
                                    expect = dlen
                                    check_payload = True
                                    if nbytes < 0:
                                        reason = R_BAD_BYTE
        if err:
            can_id = _Z
            ext = True
            rtr = False
            dlc = _Z
            nbytes = _Z
            check_payload = False
        ra = np.int64(0)
        rb = np.int64(0)
        if reason == R_DLC_RANGE:
            ra = dlc
        elif reason == 0:
            reason, ra, rb = _check(t, can_id, dlc, nbytes, expect, check_payload)
        if reason != 0:
            ne = _bad(events, ne, line, pos, le, reason, ra, rb)
            pos = nxt
            line += 1
            continue
        if nbytes > width:
            status = WIDE
            break
        if k >= cap:
            status = FULL
            break
        if fs == 2:
            ne = _slow(events, ne, line, s, t0e, k)
        _write(ts, aid, flags, dc, data, k, t, can_id, ext, is_canfd, err, rtr, dlc, chan,
               payload, nbytes)
        k += 1
        pos = nxt
        line += 1
    state[S_POS] = pos
    state[S_K] = k
    state[S_EVENTS] = ne
    state[S_IGNORED] = ignored
    state[S_LINE] = line
    return status


# -- PEAK TRC -------------------------------------------------------------------------------------
@kernel
def _trc_tokens(buf, s, e, maxsplit, starts, ends):
    """str.split(maxsplit=...) of buf[s:e] (already stripped) into starts/ends; the count."""
    n = 0
    i = s
    cap = starts.shape[0]
    while i < e and n < cap:
        i = _skip_split(buf, i, e)
        if i >= e:
            break
        if maxsplit >= 0 and n == maxsplit:
            starts[n] = i
            ends[n] = e
            n += 1
            break
        j = _tok_end(buf, i, e)
        starts[n] = i
        ends[n] = j
        n += 1
        i = j
    return n


@kernel
def _v2_frame_type(buf, a, b):
    """0: not a frame type; 1 DT; 2 FD/FB/FE/BI (CAN FD); 3 RR (remote)."""
    if _tok_eq(buf, a, b, _KW_DT):
        return 1
    if (_tok_eq(buf, a, b, _KW_FD) or _tok_eq(buf, a, b, _KW_FB) or _tok_eq(buf, a, b, _KW_FE)
            or _tok_eq(buf, a, b, _KW_BI)):
        return 2
    if _tok_eq(buf, a, b, _KW_RR):
        return 3
    return 0


@kernel
def scan_trc(buf, end, fparams, iparams, ts, aid, flags, dc, data, events, state):
    """TRC record lines after the header (versions 1.0, 1.1, 1.3, 2.0, 2.1; ``iparams`` as
    ``TRC_PARAMS``; ``fparams[0]`` the start time in Unix seconds)."""
    start_time = fparams[0]
    version = iparams[P_VERSION]
    maxsplit = iparams[P_NCOL] if version == TRC_V2 else -1
    # the fast path knows the usual 2.x layout N,O,T,B,I,d,R,L,D
    fast_ok = (version == TRC_V2 and maxsplit == 8 and iparams[P_O] == 1 and iparams[P_T] == 2
               and iparams[P_B] == 3 and iparams[P_I] == 4 and iparams[P_DIR] == 5
               and iparams[P_L] == 7 and iparams[P_LL] < 0 and iparams[P_D] == 8)
    cap = ts.shape[0]
    width = data.shape[1]
    max_events = events.shape[0]
    pos = state[S_POS]
    k = state[S_K]
    ne = state[S_EVENTS]
    ignored = state[S_IGNORED]
    line = state[S_LINE]
    payload = np.zeros(72, np.uint8)
    starts = np.zeros(80, np.int64)
    ends = np.zeros(80, np.int64)
    fast_end = buf.shape[0] - FAST_REACH if fast_ok else -1
    fails = np.int64(0)
    backoff = np.int64(0)
    status = DONE
    while pos < end:
        if ne + 2 > max_events:
            status = EVENTS_FULL
            break
        if k < cap and pos <= fast_end and backoff == 0:
            pos0 = pos
            pos, k1 = _trc_run(buf, pos, end, start_time, ts, aid, flags, dc, data, k)
            line += k1 - k
            k = k1
            if pos > pos0:
                fails = 0
            else:                               # unusual lines: try the fast path less often
                fails = min(2 * fails + 1, 64)
                backoff = fails
            if pos >= end:
                break
        elif backoff > 0:
            backoff -= 1
        le = _line_end(buf, pos, end)
        nxt = le + 1 if le < end else end
        s = _skip_split(buf, pos, le)
        e = le
        while e > s and _split_space(buf[e - 1]):
            e -= 1
        if s == e:
            pos = nxt
            line += 1
            continue
        if buf[s] == 59:                        # ";" comment
            ignored += 1
            pos = nxt
            line += 1
            continue
        n = _trc_tokens(buf, s, e, maxsplit, starts, ends)
        reason = _Z
        skip = False                            # a valid line that is not a frame
        fd = False
        rtr = False
        chan = _Z
        t = 0.0
        fs = 1
        ts_a = _Z
        ts_b = _Z
        can_id = np.int64(0)
        ext = False
        dlc = np.int64(0)
        nbytes = _Z
        if version != TRC_V2:
            if version == TRC_V1_0:
                c_type = -1
                c_id, c_dlc, c_data = 2, 3, 4
            elif version == TRC_V1_1:
                c_type = 2
                c_id, c_dlc, c_data = 3, 4, 5
            else:
                c_type = 3
                c_id, c_dlc, c_data = 4, 6, 7
            if version == TRC_V1_0:
                if n <= 2:
                    reason = R_INCOMPLETE
                elif _tok_eq(buf, starts[2], ends[2], _KW_FFFFFFFF):
                    skip = True
            elif n <= c_type:
                reason = R_INCOMPLETE
            elif not (_tok_eq(buf, starts[c_type], ends[c_type], _KW_TX_EXACT)
                      or _tok_eq(buf, starts[c_type], ends[c_type], _KW_RX_EXACT)):
                skip = True
            if reason == 0 and not skip:
                ts_a = starts[1]
                ts_b = ends[1]
                fs, t = _float(buf, ts_a, ts_b)
                if fs == 0:
                    reason = R_BAD_TIME
                else:
                    t = t / 1000.0 if version == TRC_V1_0 else t / 1000.0 + start_time
                    if n <= c_id:
                        reason = R_INCOMPLETE
                if reason == 0:
                    ok, can_id, _w = _int(buf, starts[c_id], ends[c_id], _B16)
                    ext = ends[c_id] - starts[c_id] > 4
                    if not ok:
                        reason = R_BAD_ID
                if reason == 0 and version == TRC_V1_3:
                    ok, ch, chw = _int(buf, starts[2], ends[2], _B10)
                    if not ok:
                        reason = R_BAD_CHANNEL
                    else:
                        chan = _Z if ch < 1 else np.int64((chw - np.uint64(1)) & np.uint64(0xFF))
                if reason == 0:
                    if n <= c_dlc:
                        reason = R_INCOMPLETE
                    else:
                        ok, dlc, _w = _int(buf, starts[c_dlc], ends[c_dlc], _B10)
                        if not ok:
                            reason = R_BAD_DLC
                if reason == 0:
                    if n > c_data and _tok_eq(buf, starts[c_data], ends[c_data], _KW_RTR):
                        rtr = True
                    else:
                        out_of_range = False
                        for j in range(max(dlc, 0)):
                            if c_data + j >= n:
                                reason = R_INCOMPLETE
                                break
                            ta = starts[c_data + j]
                            v = np.int64(-1)
                            if ends[c_data + j] - ta == 2:
                                hi = _HEXV[buf[ta]]
                                lo = _HEXV[buf[ta + 1]]
                                if hi >= 0 and lo >= 0:
                                    v = hi * 16 + lo
                            if v < 0:
                                ok, v, _w = _int(buf, ta, ends[c_data + j], _B16)
                                if not ok:
                                    reason = R_BAD_BYTE
                                    break
                            if v < 0 or v > 255:
                                out_of_range = True
                            elif nbytes < 72:
                                payload[nbytes] = np.uint8(v)
                            nbytes += 1
                        if reason == 0 and out_of_range:
                            reason = R_BAD_BYTE
        else:
            c_t = iparams[P_T]
            if c_t < 0:
                reason = R_MISSING_COLUMN
            elif n <= c_t:
                reason = R_INCOMPLETE
            else:
                kind = _v2_frame_type(buf, starts[c_t], ends[c_t])
                if kind == 0:
                    skip = True
                else:
                    fd = kind == 2
                    rtr = kind == 3
                    c_l = iparams[P_LL]
                    c_big_l = iparams[P_L]
                    if c_l >= 0:
                        if n <= c_l:
                            reason = R_INCOMPLETE
                        else:
                            ok, length, _w = _int(buf, starts[c_l], ends[c_l], _B10)
                            if not ok:
                                reason = R_BAD_DLC
                            elif length <= 8:
                                dlc = length
                            else:
                                dlc = 15
                                for code in range(16):
                                    if _DLC2LEN[code] >= length:
                                        dlc = code
                                        break
                    elif c_big_l >= 0:
                        if n <= c_big_l:
                            reason = R_INCOMPLETE
                        else:
                            ok, dlc, _w = _int(buf, starts[c_big_l], ends[c_big_l], _B10)
                            if not ok:
                                reason = R_BAD_DLC
                    else:
                        reason = R_MISSING_COLUMN
                    c_o = iparams[P_O]
                    if reason == 0:
                        if c_o < 0:
                            reason = R_MISSING_COLUMN
                        elif n <= c_o:
                            reason = R_INCOMPLETE
                        else:
                            ts_a = starts[c_o]
                            ts_b = ends[c_o]
                            fs, t = _float(buf, ts_a, ts_b)
                            if fs == 0:
                                reason = R_BAD_TIME
                            else:
                                t = t / 1000.0 + start_time
                    c_i = iparams[P_I]
                    if reason == 0:
                        if c_i < 0:
                            reason = R_MISSING_COLUMN
                        elif n <= c_i:
                            reason = R_INCOMPLETE
                        else:
                            ok, can_id, _w = _int(buf, starts[c_i], ends[c_i], _B16)
                            ext = ends[c_i] - starts[c_i] > 4
                            if not ok:
                                reason = R_BAD_ID
                    c_b = iparams[P_B]
                    if reason == 0 and c_b >= 0:
                        if n <= c_b:
                            reason = R_INCOMPLETE
                        else:
                            ok, ch, chw = _int(buf, starts[c_b], ends[c_b], _B10)
                            if not ok:
                                reason = R_BAD_CHANNEL
                            else:
                                chan = _Z if ch < 1 else np.int64((chw - np.uint64(1))
                                                                 & np.uint64(0xFF))
                    c_d = iparams[P_D]
                    if reason == 0 and dlc != 0 and not rtr:
                        if c_d < 0:
                            reason = R_MISSING_COLUMN
                        elif n <= c_d:
                            reason = R_INCOMPLETE
                        else:
                            nbytes = _fromhex(buf, starts[c_d], ends[c_d], payload)
                            if nbytes < 0:
                                nbytes = _Z
                                reason = R_BAD_BYTE
                    c_dir = iparams[P_DIR]
                    if reason == 0:
                        if c_dir < 0:
                            reason = R_MISSING_COLUMN
                        elif n <= c_dir:
                            reason = R_INCOMPLETE
        if skip:
            ignored += 1
            pos = nxt
            line += 1
            continue
        ra = np.int64(0)
        rb = np.int64(0)
        if reason == 0:
            if fd and 9 <= dlc <= 15:
                dlc = _DLC2LEN[dlc]     # packbms: payload length, not python-can's DLC code
            expect = dlc if fd else min(dlc, 8)
            reason, ra, rb = _check(t, can_id, dlc, nbytes, expect, not rtr)
        if reason != 0:
            ne = _bad(events, ne, line, pos, le, reason, ra, rb)
            pos = nxt
            line += 1
            continue
        if nbytes > width:
            status = WIDE
            break
        if k >= cap:
            status = FULL
            break
        if fs == 2:
            ne = _slow(events, ne, line, ts_a, ts_b, k)
        _write(ts, aid, flags, dc, data, k, t, can_id, ext, fd, _FALSE, rtr, dlc, chan, payload,
               nbytes)
        k += 1
        pos = nxt
        line += 1
    state[S_POS] = pos
    state[S_K] = k
    state[S_EVENTS] = ne
    state[S_IGNORED] = ignored
    state[S_LINE] = line
    return status
