"""Merge the frame streams of several MF4 channel groups into python-can's order.

python-can's ``MF4Reader`` reads each CAN channel group with its own iterator and merges them with
``heapq.merge(..., key=timestamp)``: at every step the frame with the smallest timestamp among the
groups' current frames comes next, the group listed first winning ties. :func:`merge_order` does
the same over blocks of the groups' timestamps.
"""

from __future__ import annotations

from ._jit import kernel


@kernel
def merge_order(ts, pos, end, more, out):
    """Pick frames from the groups' blocks in merge order.

    Parameters
    ----------
    ts : float64 [total]
        The groups' current blocks of timestamps, one after the other.
    pos, end : int64 [groups]
        Each group's next row and the end of its block in ``ts`` (updated in place).
    more : bool [groups]
        The group has rows after this block: merging must stop when its block runs out.
    out : int64 [cap]
        Row numbers (into ``ts``) in merge order.

    Returns
    -------
    int
        Rows written to ``out``. The merge stops when ``out`` is full, when a group with
        ``more`` rows has used up its block, or when every block is used up.
    """
    groups = pos.shape[0]
    cap = out.shape[0]
    n = 0
    while n < cap:
        best = -1
        for g in range(groups):
            if pos[g] < end[g]:
                if best < 0 or ts[pos[g]] < ts[pos[best]]:
                    best = g
            elif more[g]:
                return n
        if best < 0:
            return n
        out[n] = pos[best]
        pos[best] += 1
        n += 1
    return n
