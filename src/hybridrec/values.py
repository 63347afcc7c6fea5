"""Values of command-line flags as argparse types: stricter than ``int`` (which reads
``1_0``, padded spaces and other scripts' digits), and marked with the kind a config file
or the tuner's search space checks them by. Apart from :mod:`hybridrec.cli` so that
:mod:`hybridrec.configfile` can read the marks without importing the command line."""

from __future__ import annotations

import argparse
from typing import Any


def is_integer(text: str) -> bool:
    """ASCII digits with an optional sign: Python's ``int`` also reads ``1_0``, spaces and
    other scripts' digits, which nobody means on a command line."""
    digits = text[1:] if text[:1] in "+-" else text
    return digits.isascii() and digits.isdigit()


def parse_int(text: str) -> int:
    """An integer flag's value: an argparse type."""
    if not is_integer(text):
        raise argparse.ArgumentTypeError(f"expected an integer like 10, got {text!r}")
    return int(text)


def parse_seed(text: str) -> int:
    """A ``--seed``: 0 to 2^63-1 (NumPy's generators refuse negative seeds)."""
    value = parse_int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2^63-1, got {text!r}")
    return value


def parse_count(text: str) -> int:
    """A number of things to make (``demo --users``): at least 1."""
    value = parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, got {text!r}")
    return value


for _parser in (parse_int, parse_seed, parse_count):
    _parser.value_kind = "int"  # type: ignore[attr-defined]  # read by value_kind()


def value_kind(parse: Any) -> str:
    """What an argparse ``type`` reads: ``"int"``, ``"float"``, ... (config files and the
    tuner's search space check their values by it)."""
    return getattr(parse, "value_kind", None) or getattr(parse, "__name__", "")
