"""Input checks shared by the public constructors.

Every error names the field, the first offending row and its value, and says what is
allowed, before any kernel runs.
"""
import numbers

import numpy as np


def describe(value):
    """Short repr of one offending value for an error message."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (np.integer,)):
        return repr(int(value))
    return repr(value)


def first_bad(name, array, ok, rule, *, index_names=None):
    """Raise ``ValueError`` naming the first element of ``array`` where ``ok`` is False.

    Parameters
    ----------
    name : str
        Field name shown to the user.
    array : ndarray
        The values checked.
    ok : ndarray of bool
        Same shape as ``array``; False marks an invalid value.
    rule : str
        What a valid value is, completing "must be ...".
    index_names : tuple of str, optional
        Names of the axes of a multi-dimensional ``array`` (e.g. ``("path", "step",
        "asset")``); a 1-D array is indexed by loan row.
    """
    if ok.all():
        return
    flat = int(np.flatnonzero(~ok.ravel())[0])
    index = np.unravel_index(flat, ok.shape)
    value = array[index]
    if array.ndim == 1 and index_names is None:
        where = f"{name}[{index[0]}] (loan row {index[0]})"
    else:
        names = index_names or tuple(f"axis{k}" for k in range(array.ndim))
        where = f"{name}[{', '.join(str(i) for i in index)}] ({', '.join(f'{n} {i}' for n, i in zip(names, index))})"
    count = int((~ok).sum())
    more = f"; {count - 1} more invalid value(s) follow" if count > 1 else ""
    raise ValueError(f"{where} = {describe(value)}: must be {rule}{more}")


def as_float_field(name, value, n):
    """Convert a scalar or 1-D sequence to a float64 array of length ``n``."""
    array = _as_array(name, value)
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    # A private copy: later writes to the caller's array cannot reach validated data.
    array = np.array(array, dtype=np.float64, copy=True)
    return _broadcast(name, array, n)


def as_int_field(name, value, n):
    """Convert a scalar or 1-D sequence of whole numbers to an int64 array of length ``n``."""
    array = _as_array(name, value)
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        first_bad(name, np.atleast_1d(array), np.atleast_1d(whole), "a whole number")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu" or array.dtype.kind == "b":
        raise TypeError(f"{name} must hold whole numbers, got dtype {array.dtype}")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} has values beyond int64")
    return _broadcast(name, np.array(array, dtype=np.int64, copy=True), n)


def _as_array(name, value):
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be numeric, got the string {value!r}")
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got values of mixed or object type")
    if array.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {array.shape}")
    return array


def _broadcast(name, array, n):
    if array.ndim == 0:
        return np.full(n, array[()], dtype=array.dtype)
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {n} (the book's length)")
    return np.ascontiguousarray(array)


def check_int(name, value, *, minimum=None):
    """Return ``value`` as int, refusing bools, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_positive_float(name, value):
    """Return ``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return value
