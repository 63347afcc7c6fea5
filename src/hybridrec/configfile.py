"""Run configurations as TOML files: ``hybridrec train --config run.toml``.

A file holds one command's options under the names of its flags, without the leading
dashes: ``batch_size = 128``, ``lr = 0.01``, ``mlp_layers = [64, 32]``. Underscores are the
canonical spelling (what :func:`to_toml` writes); dashes are accepted too
(``batch-size``). Flags given on the command line override the file. Any subcommand that
calls :func:`add_config_option` gets all of this, since the keys, their types and their
checks come from the subcommand's own argparse actions: the file's values are checked
here, then handed to argparse as ``--flag=value`` tokens placed before the command line's
own, so the command line wins and argparse applies its usual conversions.

Mistakes are :class:`~hybridrec.errors.ConfigError` naming the file and the key: an
unknown key (with the closest valid one), a value of the wrong type, a choice not offered.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybridrec.errors import ConfigError
from hybridrec.values import value_kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

#: Flag of the option itself; it is never a key of the file it names.
CONFIG_FLAG = "--config"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give a subcommand ``--config PATH`` (read by :func:`expand_config`)."""
    parser.add_argument(
        CONFIG_FLAG,
        metavar="PATH",
        help="TOML file of this command's options, keyed by flag name without dashes "
        "(batch_size = 128, mlp_layers = [64, 32]); flags on the command line override it",
    )


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Canonical key -> action for every ``--flag`` of a (sub)parser but help and config."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or isinstance(action, argparse._HelpAction) or CONFIG_FLAG in longs:
            continue
        out[longs[0][2:].replace("-", "_")] = action
    return out


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    """The subcommand's parser, if ``command`` is one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def expand_config(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``argv`` with the options of its ``--config`` file (if any) inserted after the
    subcommand, before the command line's own flags, which therefore override them.

    A file option in a mutually exclusive group with a flag on the command line (``all``
    against ``--users``) is left out, so the command line wins there too.
    """
    argv = list(argv)
    path = _config_path(argv[1:])
    if not argv or path is None:
        return argv
    sub = subparser(parser, argv[0])
    if sub is None or CONFIG_FLAG not in sub._option_string_actions:
        return argv  # argparse reports the unknown option or command itself
    values = read_config(path, sub, argv[0])
    given = _flags_given(argv[1:], sub)
    tokens = []
    for key, value in values.items():
        action = options_of(sub)[key]
        if _excluded_by(action, given, sub):
            continue
        tokens += to_tokens(path, key, value, action)
    return [argv[0], *tokens, *argv[1:]]


def read_config(path: str | Path, parser: argparse.ArgumentParser, command: str) -> dict[str, Any]:
    """The file's options by canonical key, checked against the subcommand's flags."""
    name = str(path)
    if Path(path).exists() and not Path(path).is_file():  # a folder, a device, a pipe
        raise ConfigError(f"--config {name} is not a file; give a TOML file")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, as CSVs may have
            data = tomllib.loads(f.read())
    except FileNotFoundError:
        raise ConfigError(f"--config {name}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--config {name}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text (expected a TOML file)") from None
    options = options_of(parser)
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = raw.replace("-", "_")
        if key not in options:
            raise ConfigError(f"{name}: unknown key {raw!r} for hybridrec {command}; "
                              + _suggest(key, options))  # fmt: skip
        if key in out:
            raise ConfigError(f"{name}: key {key!r} is given twice (with - and with _)")
        out[key] = value
    return out


def to_tokens(path: str | Path, key: str, value: Any, action: argparse.Action) -> list[str]:
    """The ``--flag=value`` tokens of one file option, after checking its type."""
    flag = next(s for s in action.option_strings if s.startswith("--"))
    where = f"{path}: key {key!r} ({flag})"
    if action.nargs == 0:  # an on/off switch
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_shown(value)}")
        return [flag] if value else []
    text = _as_text(where, value, action)
    if action.choices is not None and text not in action.choices:
        allowed = ", ".join(str(c) for c in action.choices)
        raise ConfigError(f"{where}: expected one of {allowed}, got {_shown(value)}")
    if action.type is not None:
        try:
            action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return [f"{flag}={text}"]


def _as_text(where: str, value: Any, action: argparse.Action) -> str:
    """The value as the command line would spell it, or an error naming what was expected."""
    kind = value_kind(action.type)
    if isinstance(value, dict):
        raise ConfigError(f"{where}: expected a single value, got a table")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_shown(value)}")
        return str(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_shown(value)}")
        return repr(float(value))
    if getattr(action.type, "takes_sizes", False):  # e.g. --mlp-layers, --k
        if isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return ",".join(str(v) for v in value)
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)  # "64,32" as on the command line; checked by the flag's parser
        raise ConfigError(
            f"{where}: expected a list of integers like [64, 32], got {_shown(value)}"
        )
    if isinstance(value, str):
        return value
    if kind not in ("", "str") and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # an option of its own syntax, e.g. --two-stage 1000
    raise ConfigError(f"{where}: expected a string, got {_shown(value)}")


def _shown(value: Any) -> str:
    kinds = {bool: "a boolean", str: "a string", int: "an integer", float: "a number",
             list: "a list", dict: "a table"}  # fmt: skip
    kind = kinds.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    return f"{kind} ({text[:40]})"


def _suggest(key: str, options: dict[str, argparse.Action]) -> str:
    """The closest valid key, by spelling or as the option's Python name (``learning_rate``
    is ``lr`` here)."""
    for name, action in options.items():
        if action.dest == key:
            return f"did you mean {name!r}? (the option --{name.replace('_', '-')})"
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.0)
    return f"did you mean {close[0]!r}?" if close else "this command takes no options"


def _config_path(args: Sequence[str]) -> str | None:
    """The value of the last ``--config`` in ``args`` (as argparse would keep it)."""
    path = None
    for i, token in enumerate(args):
        if token == CONFIG_FLAG and i + 1 < len(args):
            path = args[i + 1]
        elif token.startswith(CONFIG_FLAG + "="):
            path = token.split("=", 1)[1]
    return path


def _flags_given(args: Sequence[str], parser: argparse.ArgumentParser) -> set[argparse.Action]:
    """Actions the command line names (``--flag`` or ``--flag=value``)."""
    actions = parser._option_string_actions
    return {actions[t.split("=", 1)[0]] for t in args if t.split("=", 1)[0] in actions}


def _excluded_by(
    action: argparse.Action, given: set[argparse.Action], parser: argparse.ArgumentParser
) -> bool:
    """Whether a command-line flag in the same mutually exclusive group overrides it."""
    for group in parser._mutually_exclusive_groups:
        members = set(group._group_actions)
        if action in members and members & given:
            return True
    return False


# ---------------------------------------------------------------- the resolved configuration


#: Options of how a run went, not of what it trains: a configuration rebuilt with
#: ``--resume`` would reload the old checkpoint instead of training.
NOT_RECORDED = frozenset({"resume"})


def resolved_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every option of the subcommand as it took effect (file, command line or default), by
    canonical key, in TOML types; options left unset (None: "the default of each model")
    are omitted, which means the same when read back."""
    out: dict[str, Any] = {}
    for key, action in options_of(parser).items():
        value = getattr(args, action.dest, None)
        if value is None or key in NOT_RECORDED:
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def to_toml(options: dict[str, Any], comments: Sequence[str] = ()) -> str:
    """A flat TOML document of ``options`` (strings, numbers, booleans, lists of them),
    preceded by ``# comment`` lines; ``tomllib`` reads it back to the same values."""
    # a comment is one line whatever it quotes (a path may hold a line break)
    lines = [f"# {line}".replace("\r", "\\r").replace("\n", "\\n") for line in comments]
    lines += [f"{key} = {_toml_value(value)}" for key, value in options.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    # a TOML basic string is a JSON string, less the control characters JSON leaves bare
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


# ---------------------------------------------------------------- a model's configuration


def model_config_toml(directory: str | Path, parser: argparse.ArgumentParser) -> str:
    """The configuration a saved model was trained with, as a file ``train --config``
    accepts (what ``hybridrec info`` prints).

    Models saved before configurations were recorded get one rebuilt from their saved
    settings (data, training and model options); it lacks the data paths, said in a comment.
    """
    from hybridrec.artifact import load_artifact

    config = load_artifact(directory).config
    settings = config.get("settings") or {}
    saved = settings.get("run_config")
    about = f"model {directory}: {config.get('model')}, saved {config.get('created', '?')}"
    if isinstance(saved, dict) and isinstance(saved.get("options"), dict):
        command = saved.get("command", "train")
        sub = subparser(parser, str(command))
        order = list(options_of(sub)) if sub is not None else []
        options = saved["options"]
        ordered = {k: options[k] for k in order if k in options}
        ordered.update({k: v for k, v in options.items() if k not in ordered})
        return to_toml(
            ordered,
            [
                about,
                f"rerun with: hybridrec {command} --config FILE (flags given too override it)",
                f"relative paths are from {saved.get('cwd', '?')}, where it ran",
            ],
        )
    return to_toml(
        _rebuilt_options(config, parser),
        [
            about,
            "saved before hybridrec recorded configurations: rebuilt from its settings;",
            'add train = "PATH" (and out = "DIR") before: hybridrec train --config FILE',
        ],
    )


def _rebuilt_options(config: dict[str, Any], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``train`` options from an older artifact's saved settings and model options."""
    sub = subparser(parser, "train")
    options = options_of(sub) if sub is not None else {}
    key_of = {action.dest: key for key, action in options.items()}
    settings = config.get("settings") or {}
    found: dict[str, Any] = {"model": config.get("model")}
    parts = [settings.get("data"), settings.get("train"), config.get("model_config")]
    for part in parts:
        for name, value in (part or {}).items():
            if name in key_of and value is not None and name != "model":
                found[key_of[name]] = list(value) if isinstance(value, tuple) else value
    return {key: found[key] for key in options if key in found}
