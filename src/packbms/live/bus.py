"""Opening a python-can bus from command-line style options, with errors a user can act on."""

from __future__ import annotations

from ..errors import PackBMSError

__all__ = ["open_bus", "parse_bus_options"]


def _value(text: str):
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_bus_options(options) -> dict:
    """``["bitrate=500000", "fd=true"]`` -> ``{"bitrate": 500000, "fd": True}``.

    Raises
    ------
    PackBMSError
        An option without ``=``.

    Examples
    --------
    >>> parse_bus_options(["bitrate=500000", "fd=true", "app_name=CANoe"])
    {'bitrate': 500000, 'fd': True, 'app_name': 'CANoe'}
    """
    out = {}
    for opt in options or ():
        key, sep, val = str(opt).partition("=")
        if not sep or not key.strip():
            raise PackBMSError(f"bus option {opt!r} must look like KEY=VALUE (e.g. "
                               f"bitrate=500000)")
        out[key.strip()] = _value(val.strip())
    return out


def open_bus(interface: str, channel, *, bitrate: int | None = None, options=None, **extra):
    """``can.Bus(interface=..., channel=..., ...)`` with a one-line error on failure.

    Parameters
    ----------
    interface
        Any python-can interface name: ``socketcan``, ``pcan``, ``vector``, ``kvaser``,
        ``virtual``, ...
    channel
        The interface's channel (``can0``, ``PCAN_USBBUS1``, ``0``, a virtual bus name).
    bitrate
        Optional bitrate (bit/s).
    options
        ``KEY=VALUE`` strings passed as keyword arguments (:func:`parse_bus_options`).
    **extra
        More keyword arguments for ``can.Bus``.

    Returns
    -------
    can.BusABC

    Raises
    ------
    PackBMSError
        The interface is unknown, its driver is missing, or the channel cannot be opened.
    """
    import can

    kwargs = parse_bus_options(options)
    if bitrate is not None:
        kwargs["bitrate"] = int(bitrate)
    kwargs.update(extra)
    try:
        return can.Bus(interface=interface, channel=channel, **kwargs)
    except Exception as e:  # noqa: BLE001 - drivers raise anything (CanError, OSError, ImportError)
        reason = " ".join(str(e).split()) or type(e).__name__
        known = ", ".join(sorted(getattr(can, "VALID_INTERFACES", ()))[:20])
        hint = f" (python-can interfaces: {known})" if interface not in getattr(
            can, "VALID_INTERFACES", (interface,)) else ""
        raise PackBMSError(f"cannot open CAN interface {interface!r} channel {channel!r}: "
                           f"{reason}{hint}") from e
