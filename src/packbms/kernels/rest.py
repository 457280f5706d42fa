"""Rest detection on the pack current.

A row is *quiet* when ``|current| < threshold_a``. A rest starts on the first quiet row after a
rest ended (or at the first row); it ends once the current has stayed at or above the threshold
for ``debounce_s``, so a few noisy samples above the threshold (current sensor noise plus
offset) do not break a long rest. The rows of such an excursion stay inside the rest but are not
quiet: estimators skip them when reading OCV. The age of the rest on a row is the time since its
start.

State: the start of the rest in progress (NaN when none) and the start of the current excursion
above the threshold (NaN when none), so a log processed in chunks gives the same answer as in
one piece.
"""

from ._jit import kernel


@kernel
def rest_age(time_s, current_a, threshold_a, debounce_s, state, out_age, out_quiet):
    """Age (s) of the rest in progress on each row (-1: not in a rest) and the quiet flag.

    Parameters
    ----------
    time_s, current_a : float64 [T]
    threshold_a : float
        |current| below this (A) is quiet. A NaN current is not quiet.
    debounce_s : float
        How long the current must stay at or above the threshold to end a rest (s); 0 ends it
        on the first such row.
    state : float64 [2]
        ``[rest_start, above_start]`` (NaN: none); updated in place.
    out_age : float64 [T]
    out_quiet : bool [T]
        Written.
    """
    start = state[0]
    above = state[1]
    nan = float("nan")
    for k in range(time_s.shape[0]):
        t = time_s[k]
        quiet = abs(current_a[k]) < threshold_a
        if quiet:
            above = nan
            if start != start:
                start = t
        elif start == start:
            if above != above:
                above = t
            if t - above >= debounce_s:
                start = nan
                above = nan
        out_quiet[k] = quiet
        out_age[k] = t - start if start == start else -1.0
    state[0] = start
    state[1] = above
