"""Zero-order-hold alignment of event streams onto one time base."""

import numpy as np

from ._jit import kernel


@kernel
def zoh_events_carry(target_t, event_t, event_idx, event_val, stale_after_s, cur_v, cur_t,
                     out_val, out_stale):
    """Hold the latest value of each index at each target time, marking stale holds; the held
    state is carried in and out so a stream can be aligned chunk by chunk.

    Parameters
    ----------
    target_t : float64 [T], sorted
    event_t : float64 [E], sorted (ties keep their order: the later event wins)
    event_idx : int64 [E], in 0..n-1 (events with other indices are ignored)
    event_val : float64 [E]
    stale_after_s : float64 [n]; a held value older than this is stale
    cur_v, cur_t : float64 [n], in/out
        Held value and its time per index (NaN / -inf before the first event).
    out_val : float64 [T, n], written: the held value, NaN where stale or never seen
    out_stale : bool [T, n], written: True where stale or never seen

    Returns
    -------
    int
        Number of events consumed (those at or before the last target time); the rest belong
        to later targets.

    Notes
    -----
    One merge pass, O(T * n + E). An event at exactly a target time is included. An event older than the value already held for its index (a late arrival) does not
    replace it.
    """
    n_idx = out_val.shape[1]
    e = 0
    n_e = event_t.shape[0]
    for i in range(target_t.shape[0]):
        t = target_t[i]
        while e < n_e and event_t[e] <= t:
            k = event_idx[e]
            if 0 <= k < n_idx and event_t[e] >= cur_t[k]:
                cur_v[k] = event_val[e]
                cur_t[k] = event_t[e]
            e += 1
        for k in range(n_idx):
            stale = (t - cur_t[k]) > stale_after_s[k]
            out_stale[i, k] = stale
            out_val[i, k] = np.nan if stale else cur_v[k]
    return e


@kernel
def count_backwards(t):
    """Number of samples whose time is earlier than the previous sample's."""
    n = 0
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            n += 1
    return n
