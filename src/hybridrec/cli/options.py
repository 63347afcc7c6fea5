"""Flags generated from the config dataclasses and read back into them, so flags, defaults
and help text always match the API."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from string import Template
from typing import Any

from hybridrec.models import MODELS, capabilities, model_class, models_with
from hybridrec.values import is_integer, parse_int, parse_seed


def _parse_sizes(text: str) -> tuple[int, ...]:
    """Comma-separated sizes (``--mlp-layers 64,32,16``, ``--k 5,10``): an argparse type.

    Marked ``takes_sizes`` (below): a config file gives such flags a TOML list.
    """
    parts = [part.strip() for part in text.split(",")]
    if not all(is_integer(part) for part in parts):  # "64,,16" is a typo, not 64,16
        raise argparse.ArgumentTypeError(f"expected sizes like 64,32,16, got {text!r}")
    return tuple(int(part) for part in parts)


_parse_sizes.takes_sizes = True  # type: ignore[attr-defined]  # read by hybridrec.configfile


def add_config_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type | Sequence[type],
    title: str,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one ``--flag`` per field with help text in its metadata (first class wins).

    A field several classes share with different defaults (``--dropout`` of two models) gets
    ``None`` as its flag default, meaning "the class's own default"; the help lists them.
    """
    group = parser.add_argument_group(title)
    defaults = defaults or {}
    model_lists = _model_lists()
    classes = cls if isinstance(cls, Sequence) else [cls]
    owners: dict[str, dict[str, Any]] = {}  # field name -> {class name: its default}
    for c in classes:
        for f in fields(c):
            owners.setdefault(f.name, {})[c.__name__] = f.default
    seen: set[str] = set()
    for f in (f for c in classes for f in fields(c)):
        if "help" not in f.metadata or f.name in seen:
            continue
        seen.add(f.name)
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        text = Template(f.metadata["help"]).safe_substitute(model_lists)
        default = defaults.get(f.name, f.default if f.default is not MISSING else None)
        kind = str(f.type)
        if "tuple" in kind:
            parse: Callable[[str], Any] = _parse_sizes
            shown = ",".join(str(x) for x in default)
        elif "float" in kind:
            parse, shown = float, default
        elif f.name == "seed":
            parse, shown = parse_seed, default
        elif "int" in kind:
            parse, shown = parse_int, default
        else:
            parse, shown = str, default
        if kind == "bool":  # an on/off switch: --flag turns it on
            group.add_argument(flag, dest=f.name, action="store_true", default=default, help=text)
            continue
        if f.name not in defaults and len(set(map(repr, owners[f.name].values()))) > 1:
            default = None
            shown = ", ".join(f"{name} {value}" for name, value in owners[f.name].items())
        group.add_argument(
            flag,
            dest=f.name,
            type=parse,
            default=default,
            metavar=f.name.split("_")[-1].upper() if "tuple" not in kind else "SIZES",
            help=text if shown is None else f"{text} (default: {shown})",  # None: the text says
        )


def _model_lists() -> dict[str, str]:
    """What the ``$placeholders`` of help texts stand for: the models able to do something,
    asked of the registry (so a newly registered model is listed too)."""
    losses = {capabilities(name).default_loss for name in MODELS}
    by_loss = {loss: models_with(default_loss=loss) for loss in sorted(losses)}
    common = max(by_loss, key=lambda loss: len(by_loss[loss]))  # "bce for the others"
    own = [f"{loss} for {', '.join(names)}" for loss, names in by_loss.items() if loss != common]
    return {
        "default_patiences": _by_model("default_patience"),
        "default_epochs": _by_model("default_epochs"),
        "retrieval_models": ", ".join(models_with(retrieval=True)),
        "next_item_models": ", ".join(models_with(objective="next_item")),
        "feature_models": ", ".join(models_with(features=True)),
        "default_losses": ", ".join([*own, f"{common} for the others"]),
    }


def _by_model(attribute: str) -> str:
    """``"6 for sasrec, 3 for the others"``: a declared default and the models with each."""
    values = {getattr(capabilities(name), attribute) for name in MODELS}
    groups = {v: models_with(**{attribute: v}) for v in sorted(values)}
    common = max(groups, key=lambda v: len(groups[v]))
    own = [f"{v} for {', '.join(names)}" for v, names in groups.items() if v != common]
    return ", ".join([*own, f"{common} for the others"])


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build dataclass ``cls`` from the parsed flags that ``add_config_arguments`` added."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**values)


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``--model``'s config class that the flags set, for ``hybridrec.train``."""
    cls = model_class(args.model).config_class
    # None: a flag shared by models with different defaults, not given: the model's own
    return {
        f.name: getattr(args, f.name)
        for f in fields(cls)
        if getattr(args, f.name, None) is not None
    }
