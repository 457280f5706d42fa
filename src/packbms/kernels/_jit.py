"""The one place where Numba options are set.

Every kernel in :mod:`packbms.kernels` is built through :func:`kernel`, so caching, the error
model and the fastmath policy are decided here and nowhere else (the pattern numba-stats and
stumpy follow). Covariance updates must use ``fastmath=False`` (the default): reassociation can
break the symmetry and positive definiteness of P.
"""

from __future__ import annotations

import os

import numba

#: Fast-math flags allowed for kernels that opt in (never for covariance updates). ``contract``
#: (fused multiply-add) and ``arcp`` keep NaN and inf semantics, unlike ``fast``.
FASTMATH_SAFE = frozenset({"contract", "arcp", "nsz"})

_DISABLED = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"


def kernel(fn=None, *, parallel: bool = False, fastmath: bool = False):
    """Compile ``fn`` as a packbms kernel.

    Parameters
    ----------
    fn
        The function to compile (the decorator can be used bare or called).
    parallel
        Enable ``numba.prange`` loops.
    fastmath
        Allow the :data:`FASTMATH_SAFE` flags. Leave off for anything touching a covariance.

    Returns
    -------
    The ``numba.njit`` dispatcher, cached on disk so later processes skip compilation.

    Examples
    --------
    >>> @kernel
    ... def add(a, b):
    ...     return a + b
    >>> add(1, 2)
    3
    """

    def wrap(f):
        return numba.njit(
            cache=True,
            nogil=True,
            error_model="numpy",
            parallel=parallel,
            fastmath=set(FASTMATH_SAFE) if fastmath else False,
        )(f)

    if fn is None:
        return wrap
    return wrap(fn)
