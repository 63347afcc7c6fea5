"""What the commands print: JSON objects and small tables of metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on one line, keys sorted, so scripts can parse a command's result."""
    print(json.dumps(_finite(data), sort_keys=True))


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None at any depth (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def print_table(rows: Sequence[tuple[str, dict[str, Any]]], columns: Sequence[str]) -> None:
    """Named rows of metrics side by side, so a model reads against its baseline."""
    width = max(len(name) for name, _ in rows) + 2
    print(" " * width + "".join(f"{c:>20}" for c in columns))
    for name, values in rows:
        cells = "".join(f"{_fmt(values.get(c)):>20}" for c in columns)
        print(f"{name:<{width}}{cells}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"
    return str(value)
