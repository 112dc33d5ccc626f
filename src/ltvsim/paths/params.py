"""Model parameter objects: validated, printable, saved to and loaded from TOML or JSON.

Each model declares its fields as data (name, shape, rule, meaning) and one helper
checks them all, so every error names the field, the asset and the value. The model
modules (``gbm``, ``merton``, ``garch``, ``regime``, ``bootstrap``) subclass
:class:`ModelParams` and add the generator; this module only knows about fields and files.

Units: rates and drifts are per year, volatilities are annualised (``sigma * sqrt(dt)``
is the standard deviation of one step's log return), prices are in quote currency.
"""
import json
import math
from pathlib import Path

import numpy as np

_REGISTRY = {}

#: rule name -> (test on a float array, text completing "must be ...")
RULES = {
    "finite": (np.isfinite, "finite"),
    "positive": (lambda a: np.isfinite(a) & (a > 0), "finite and > 0"),
    "nonnegative": (lambda a: np.isfinite(a) & (a >= 0), "finite and >= 0"),
    "unit": (lambda a: np.isfinite(a) & (a >= 0) & (a < 1), "in [0, 1)"),
    "nu": (lambda a: ~np.isnan(a) & (a > 2), "> 2 (Student-t degrees of freedom; inf for normal)"),
    "atleast1": (lambda a: np.isfinite(a) & (a >= 1), "finite and >= 1"),
}


class Field:
    """One parameter: ``shape`` uses ``"a"`` for the number of assets, ``"r"`` for regimes."""

    def __init__(self, name, shape, rule, doc, default=None):
        self.name, self.shape, self.rule, self.doc, self.default = name, shape, rule, doc, default


def _describe_index(index, shape_spec, assets):
    parts = []
    for i, s in zip(index, shape_spec):
        parts.append(assets[i] if s == "a" else ("calm" if i == 0 else "stress") if s == "r" else str(i))
    return "[" + ", ".join(parts) + "]"


def check_field(name, value, shape_spec, rule, assets, n_regimes=2):
    """Return ``value`` as a float64 array of the declared shape, or raise naming the culprit."""
    n = len(assets)
    shape = tuple(n if s == "a" else n_regimes if s == "r" else int(s) for s in shape_spec)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numeric, got {value!r}") from None
    if array.shape != shape:
        if array.ndim == 0 and shape_spec == ("a",):
            array = np.full(shape, float(array))
        else:
            raise ValueError(f"{name} must have shape {shape} ({' x '.join(shape_spec) or 'scalar'}), got {array.shape}")
    test, text = RULES[rule]
    ok = np.asarray(test(array), dtype=bool)
    if not ok.all():
        index = np.unravel_index(int(np.flatnonzero(~ok.ravel())[0]), ok.shape) if array.ndim else ()
        where = _describe_index(index, shape_spec, assets) if index else ""
        raise ValueError(f"{name}{where} = {float(array[index])!r}: must be {text}")
    return np.array(array, order="C")  # a copy (ascontiguousarray would make 0-d 1-d)


def check_corr(name, corr, assets):
    """Validate a correlation matrix (symmetric, unit diagonal, PSD) and return it."""
    from .gbm import cholesky_of_correlation

    n = len(assets)
    if corr is None:
        return np.eye(n)
    corr = np.asarray(corr, dtype=np.float64)
    try:
        cholesky_of_correlation(corr, n)
    except ValueError as exc:
        raise ValueError(f"{name} ({', '.join(assets)}): {exc}") from None
    return np.ascontiguousarray(corr)


class ModelParams:
    """Base of the models' parameter objects.

    Subclasses set ``model`` (the name saved in files), ``fields`` (a tuple of
    :class:`Field`) and optionally ``matrices`` (names of correlation matrices, validated
    with :func:`check_corr`; a regime model has one per regime).
    """

    model = None
    fields = ()
    matrices = ()
    extra = ()  # non-numeric attributes saved as they are (strings, lists)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.model:
            _REGISTRY[cls.model] = cls

    def __init__(self, *, assets, info=None, **values):
        if isinstance(assets, str):
            assets = (assets,)
        self.assets = tuple(str(a) for a in assets)
        if not self.assets:
            raise ValueError("assets must name at least one asset")
        if len(set(self.assets)) != len(self.assets):
            raise ValueError(f"assets must be unique, got {self.assets}")
        known = {f.name for f in self.fields} | set(self.matrices) | set(self.extra)
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}")
        for f in self.fields:
            value = values.get(f.name, f.default)
            if value is None:
                raise TypeError(f"{type(self).__name__} needs {f.name} ({f.doc})")
            setattr(self, f.name, check_field(f.name, value, f.shape, f.rule, self.assets))
        for m in self.matrices:
            setattr(self, m, self._check_matrix(m, values.get(m)))
        for e in self.extra:
            setattr(self, e, values.get(e))
        self.info = dict(info or {})
        self._validate()

    def _check_matrix(self, name, value):
        return check_corr(name, value, self.assets)

    def _validate(self):
        """Cross-field checks of a subclass."""

    @property
    def n_assets(self):
        return len(self.assets)

    # ---- dict / files ------------------------------------------------------------
    def to_dict(self):
        """Plain-Python dict (lists and floats) that :meth:`from_dict` reads back."""
        d = {"model": self.model, "assets": list(self.assets)}
        for name in [f.name for f in self.fields] + list(self.matrices):
            value = getattr(self, name)
            d[name] = value.tolist() if isinstance(value, np.ndarray) else value
        for e in self.extra:
            value = getattr(self, e)
            if value is not None:
                d[e] = list(value) if isinstance(value, (tuple, np.ndarray)) else value
        if self.info:
            d["info"] = dict(self.info)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        model = d.pop("model", cls.model)
        if cls.model is not None and model != cls.model:
            raise ValueError(f"expected model {cls.model!r}, the data is for {model!r}")
        if cls.model is None:
            if model not in _REGISTRY:
                raise ValueError(f"unknown model {model!r}; known: {sorted(_REGISTRY)}")
            return _REGISTRY[model].from_dict({"model": model, **d})
        return cls(**d)

    def save(self, path):
        """Write to ``path``: TOML if it ends in ``.toml``, else JSON."""
        path = Path(path)
        text = to_toml(self.to_dict()) if path.suffix == ".toml" else json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

    def __eq__(self, other):
        if type(other) is not type(self) or other.assets != self.assets:
            return NotImplemented if not isinstance(other, ModelParams) else False
        for name in [f.name for f in self.fields] + list(self.matrices):
            if not np.array_equal(getattr(self, name), getattr(other, name), equal_nan=True):
                return False
        return all(getattr(self, e) == getattr(other, e) for e in self.extra if not isinstance(getattr(self, e), np.ndarray))

    def __repr__(self):
        return f"{type(self).__name__}(assets={list(self.assets)})"

    def __str__(self):
        lines = [f"{type(self).__name__} ({self.model}), assets: {', '.join(self.assets)}"]
        width = max([len(f.name) for f in self.fields] + [len(m) for m in self.matrices] + [6])
        np_opts = dict(precision=6, suppress_small=False, max_line_width=100, threshold=20)
        for f in self.fields:
            value = getattr(self, f.name)
            if f.shape == ("a",):
                text = ", ".join(f"{a}={v:.6g}" for a, v in zip(self.assets, value))
            elif f.shape == ():
                text = f"{float(value):.6g}"
            else:
                text = np.array2string(value, **np_opts).replace("\n", "\n" + " " * (width + 4))
            lines.append(f"  {f.name:<{width}}  {text}   # {f.doc}")
        for m in self.matrices:
            value = getattr(self, m)
            text = np.array2string(value, **np_opts).replace("\n", "\n" + " " * (width + 4))
            lines.append(f"  {m:<{width}}  {text}")
        for e in self.extra:
            value = getattr(self, e)
            if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
                lines.append(f"  {e:<{width}}  {value}")
        for k, v in self.info.items():
            lines.append(f"  info.{k}: {v}")
        return "\n".join(lines)


def load_params(path):
    """Read a parameter file written by :meth:`ModelParams.save` (``.toml`` or ``.json``)."""
    path = Path(path)
    if path.suffix == ".toml":
        import tomllib

        with open(path, "rb") as fh:
            d = tomllib.load(fh)
    else:
        d = json.loads(path.read_text(encoding="utf-8"))
    _import_models()
    return ModelParams.from_dict(d)


def _import_models():
    from . import bootstrap, garch, gbm, merton, regime  # noqa: F401  (fill the registry)


# ---- a small TOML writer (tomllib reads; the standard library has no writer) ----------
def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(d):
    """TOML text of a dict of scalars, strings, (nested) lists and one level of sub-tables."""
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            lines.append(f"{json.dumps(str(k))} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
