"""Numba kernels: pure functions over contiguous arrays and scalars.

No Python objects, no I/O, no validation here: the public API in :mod:`packbms` checks and
converts its inputs, then calls one kernel. Every kernel is built through
:func:`packbms.kernels._jit.kernel`.
"""
