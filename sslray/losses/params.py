"""Paper-named parameters, declared once: a table of :class:`Param` per loss and per method.

A table maps each parameter (the config's ``loss.params`` key) to its default and bounds, and says
whether it sizes the method's state (a queue's length, a predictor's width: a resume must keep
it). Everything else reads the table: the defaults (``sslray.methods.method_params``), the checks
(:func:`resolve`, run by ``config.validate`` without building anything and by every constructor),
checkpoint compatibility (``sslray.checkpoint.architecture``) and a search's plan.

Every problem is one ``ValueError`` line naming the parameter and what is allowed::

    beta: 1.0 is out of range; allowed: [0, 1)
    center: 1 is not true or false; allowed: true, false
    queue_size: 100.5 is not a whole number; allowed: an integer >= 1
    unknown parameter(s) tau for 'simclr'; allowed: temperature

Types: a ``bool`` default makes a switch (only true/false, not 0/1: a YAML typo fails instead of
switching a part on silently); any other parameter takes numbers (not booleans). Whole-number
parameters arrive as floats from the config (a search samples floats) and are checked to be whole.

Example::

    TABLE = {"temperature": Param(0.2, lo=0.0, lo_open=True),
             "queue_size": Param(32768.0, lo=1.0, whole="an integer", sizes_state=True)}
    values = resolve("'moco'", TABLE, {"temperature": 0.1}, dim=128)   # every parameter, defaults filled in
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Param:
    default: float | bool | None  # None: no default, the parameter must be given (``missing`` says why)
    lo: float = 0.0
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    whole: str | None = None  # a whole number; the phrase that names the allowed values ("an integer", "integers")
    sizes_state: bool = False  # sizes or shapes a weight or buffer: a checkpoint loads only with the same value
    missing: Callable[[int | None], str] | None = None  # the error when not given, from the embedding width

    @property
    def flag(self) -> bool:
        return isinstance(self.default, bool)

    def check(self, name: str, value: Any) -> None:
        """``value`` fits the bounds (its type already checked)."""
        if self.flag:
            return
        check_range(name, value, self.lo, self.hi, hi_open=self.hi_open, lo_open=self.lo_open)
        if self.whole and value != int(value):
            raise ValueError(f"{name}: {value!r} is not a whole number; allowed: {self.whole} >= {self.lo:g}")


def check_range(name: str, value: float, lo: float, hi: float | None = None, hi_open: bool = False,
                lo_open: bool = False) -> None:
    """Raise ``ValueError("beta: 1.0 is out of range; allowed: [0, 1)")`` style errors. NaN and inf fail."""
    ok = math.isfinite(value) and value >= lo and not (lo_open and value == lo)
    ok = ok and (hi is None or (value <= hi and not (hi_open and value == hi)))
    if not ok:
        if hi is None:
            allowed = f"> {lo:g}" if lo_open else f">= {lo:g}"
        else:
            allowed = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: {value!r} is out of range; allowed: {allowed}")


def check_flag(name: str, value: Any) -> None:
    """Raise ``ValueError("center: 1 is not true or false; allowed: true, false")`` for a non-bool switch."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not true or false; allowed: true, false")


def _check_type(name: str, value: Any, param: Param) -> None:
    if param.flag:
        check_flag(name, value)
    elif value is None and param.default is None:
        return  # "not given": reported as missing, after every value given was checked
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: {value!r} is not a number; allowed: a number")


def resolve(owner: str, table: dict[str, Param], params: dict[str, Any] | None, dim: int | None = None
            ) -> dict[str, Any]:
    """Every parameter of ``table``: the given ``params`` (checked) and the defaults of the others.

    Checks, in order: every key is in the table (``owner`` names whose, e.g. "loss 'tico'"); every
    given value has its type; every given value is within its bounds (in table order); every
    parameter without a default is given (its ``missing`` message, told the embedding width
    ``dim``). Builds nothing."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(table))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {owner}; allowed: {', '.join(table)}")
    for k, v in params.items():
        _check_type(k, v, table[k])
    for k, p in table.items():
        if params.get(k) is not None:
            p.check(k, params[k])
    values = {k: params.get(k, p.default) for k, p in table.items()}
    for k, p in table.items():
        if values[k] is None:
            raise ValueError(p.missing(dim) if p.missing else f"{k}: required; allowed: a number")
    return values


def defaults(table: dict[str, Param]) -> dict[str, Any]:
    """Each parameter's default (None: none, it must be given)."""
    return {k: p.default for k, p in table.items()}
