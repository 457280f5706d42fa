"""Open-circuit-voltage table kernels: OCV(SoC), its slope, and the inverse SoC(OCV).

Tables are piecewise linear: ``table_soc`` strictly increasing (fractions, normally 0..1) and
``table_ocv`` strictly increasing (V). Outside the table the end segment is **extrapolated
linearly** (its slope is kept), not clamped: an estimator whose SoC wanders a little below 0 or
above 1 still sees a voltage that moves with SoC and a non-zero slope, so its gain does not
vanish. The slope at a knot is the slope of the segment to its right (the last knot uses the last
segment).

Scalar kernels (``*_scalar``) are meant to be called from other kernels (an EKF step, the pack
simulator); the array kernels apply them elementwise and return a new array of the input's shape.
NaN in gives NaN out. No validation happens here: :mod:`packbms.cell` checks tables.
"""

import numpy as np

from ._jit import kernel


@kernel
def segment_index(x, xs):
    """Index ``i`` of the table segment ``[xs[i], xs[i+1])`` used for ``x`` (0..n-2).

    Below ``xs[0]`` gives 0 and at or above ``xs[-1]`` gives ``n - 2`` (end segments are
    extrapolated). Binary search, O(log n). ``xs`` must be strictly increasing with n >= 2.
    """
    n = xs.shape[0]
    if not x > xs[0]:          # also catches NaN
        return 0
    if x >= xs[n - 1]:
        return n - 2
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if xs[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo


@kernel
def interp_scalar(x, xs, ys):
    """Piecewise-linear ``ys(x)`` with linear extrapolation by the end segments."""
    i = segment_index(x, xs)
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return ys[i] + slope * (x - xs[i])


@kernel
def slope_scalar(x, xs, ys):
    """Slope d ys / d x of the piecewise-linear table at ``x`` (segment to the right of a knot)."""
    i = segment_index(x, xs)
    if x != x:
        return np.nan
    return (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])


@kernel
def ocv_scalar(s, table_soc, table_ocv):
    """OCV (V) at SoC ``s`` (fraction)."""
    return interp_scalar(s, table_soc, table_ocv)


@kernel
def ocv_slope_scalar(s, table_soc, table_ocv):
    """dOCV/dSoC (V per unit SoC) at SoC ``s``."""
    return slope_scalar(s, table_soc, table_ocv)


@kernel
def soc_from_ocv_scalar(v, table_soc, table_ocv):
    """SoC whose OCV is ``v`` (the inverse table; needs ``table_ocv`` strictly increasing)."""
    return interp_scalar(v, table_ocv, table_soc)


@kernel
def ocv_temp_scalar(s, temperature_k, table_soc, table_ocv, table_entropic, t_ref_k):
    """OCV (V) at SoC ``s`` and temperature ``temperature_k`` (K).

    ``OCV(s, T) = OCV_ref(s) + dOCV/dT(s) * (T - t_ref_k)`` with ``table_entropic`` the entropic
    coefficient dOCV/dT (V/K) at the knots of ``table_soc``.
    """
    return (interp_scalar(s, table_soc, table_ocv)
            + interp_scalar(s, table_soc, table_entropic) * (temperature_k - t_ref_k))


@kernel
def ocv_interp(soc, table_soc, table_ocv):
    """OCV (V) elementwise over ``soc`` (ndim >= 1); returns a new float64 array of that shape."""
    flat = soc.ravel()
    out = np.empty(flat.shape[0])
    for k in range(flat.shape[0]):
        out[k] = interp_scalar(flat[k], table_soc, table_ocv)
    return out.reshape(soc.shape)


@kernel
def ocv_slope(soc, table_soc, table_ocv):
    """dOCV/dSoC (V per unit SoC) elementwise over ``soc`` (ndim >= 1)."""
    flat = soc.ravel()
    out = np.empty(flat.shape[0])
    for k in range(flat.shape[0]):
        out[k] = slope_scalar(flat[k], table_soc, table_ocv)
    return out.reshape(soc.shape)


@kernel
def soc_from_ocv(ocv_v, table_soc, table_ocv):
    """SoC elementwise over ``ocv_v`` (ndim >= 1): the inverse of :func:`ocv_interp`."""
    flat = ocv_v.ravel()
    out = np.empty(flat.shape[0])
    for k in range(flat.shape[0]):
        out[k] = interp_scalar(flat[k], table_ocv, table_soc)
    return out.reshape(ocv_v.shape)
