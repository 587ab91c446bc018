"""What the command lines share: bad arguments get one line on stderr and exit code 2.

argparse answers a bad argument with its usage block and an error line. The project's rule for bad
input is one line, ``error: <argument>: <what is wrong>; allowed: <what is allowed>``, so a person
(or a script reading stderr) sees the problem and nothing else. :class:`ArgumentParser` is
argparse's, with only ``error()`` changed: it rewrites argparse's messages into that shape and adds
``; see --help`` (where the full usage still is).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import typing
from typing import Callable, NoReturn

# argparse's message templates (Python 3.10-3.13), and how each becomes "<argument>: ...; allowed: ..."
_CHOICE = re.compile(r"^argument (?P<arg>[^:]+): invalid choice: (?P<value>.*) \(choose from (?P<choices>.*)\)$")
_TYPE = re.compile(r"^argument (?P<arg>[^:]+): invalid (?P<type>\w+) value: (?P<value>.*)$")
_ARGUMENT = re.compile(r"^argument (?P<arg>[^:]+): (?P<problem>.*)$")
_UNKNOWN = re.compile(r"^unrecognized arguments: (?P<args>.*)$")
_REQUIRED = re.compile(r"^the following arguments are required: (?P<args>.*)$")
_TYPE_NAMES = {"int": "an integer", "float": "a number"}


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self._one_line(message)}; see --help\n")

    def _one_line(self, message: str) -> str:
        message = " ".join(message.split())  # argparse never breaks lines here, but a type function might
        if "; allowed:" in message:  # already in shape: "argument --workers: -1 is out of range; allowed: >= 0"
            return message.removeprefix("argument ")
        if m := _CHOICE.match(message):
            choices = m["choices"].replace("'", "")
            return f"{m['arg']}: {m['value']} is not allowed; allowed: {choices}"
        if m := _TYPE.match(message):
            kind = _TYPE_NAMES.get(m["type"], f"a {m['type']} value")
            return f"{m['arg']}: {m['value']} is not {kind}; allowed: {kind}"
        if m := _UNKNOWN.match(message):
            return f"{m['args']}: unknown argument(s); allowed: {self._usage_line()}"
        if m := _REQUIRED.match(message):
            return f"{self._really_required(m['args'])}: missing; allowed: {self._usage_line()}"
        if m := _ARGUMENT.match(message):
            return f"{m['arg']}: {m['problem']}; allowed: {self._usage_line()}"
        return f"{message}; allowed: {self._usage_line()}"

    def _really_required(self, names: str) -> str:
        """parse_intermixed_args also lists positionals that may be empty (nargs * or ?): drop them."""
        optional = {a.metavar or a.dest for a in self._actions if a.nargs in ("*", "?")}
        kept = [n for n in names.split(", ") if n not in optional]
        return ", ".join(kept or [names])

    def _usage_line(self) -> str:
        usage = " ".join(self.format_usage().split())
        return usage.removeprefix("usage: ")


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers >= lo, whose error already names what is allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: an integer >= {lo}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: >= {lo}")
        return value

    return parse


def fail(message: str) -> int:
    """Print a bad-input message as the one stderr line; the exit code to return (2)."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def float_in(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers in an interval (None: unbounded), whose error
    names the interval: ``float_in(0, 1, lo_open=True)`` allows (0, 1]."""
    interval = (f"{'(' if lo_open or lo is None else '['}{'-inf' if lo is None else f'{lo:g}'}, "
                f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open or hi is None else ']'}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: a number in {interval}") from None
        inside = math.isfinite(value) and (lo is None or value > lo or (value == lo and not lo_open)) \
            and (hi is None or value < hi or (value == hi and not hi_open))
        if not inside:
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {interval}")
        return value

    return parse


def add_knob_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name`` flag per field of a dataclass declared with :func:`sslray.config.knob`:
    its type and bounds (and error) from the declaration, its help from the doc. A flag not given is
    absent from the parsed namespace, so a recipe's value stands unless the command line changes it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        m, tp = f.metadata, hints[f.name]
        kwargs: dict = {"default": argparse.SUPPRESS, "dest": f.name,
                        "help": f"{m['doc']} (default {f.default})"}
        if m.get("choices"):
            kwargs["choices"] = list(m["choices"])
        elif tp is int:
            kwargs["type"] = int_at_least(int(m["lo"])) if m.get("lo") is not None else int
        elif tp is float:
            kwargs["type"] = float_in(m.get("lo"), m.get("hi"), m.get("lo_open", False), m.get("hi_open", False))
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)
