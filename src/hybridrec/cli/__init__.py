"""Command line: ``hybridrec train | update | evaluate | recommend | serve | export | demo | split |
data`` and ``python RecSys.py``.

Options are generated from the config dataclasses, so flags, defaults and help text always
match the API. User mistakes (``HybridRecError``) print one clear line and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hybridrec.cli.data import cmd_data, cmd_demo, cmd_split
from hybridrec.cli.evaluating import cmd_evaluate, cmd_report
from hybridrec.cli.options import add_config_arguments, config_from_args
from hybridrec.cli.parser import build_parser, cached_parser, recsys_parser
from hybridrec.cli.serving import check_port, cmd_export, cmd_recommend, cmd_serve
from hybridrec.cli.training import cmd_info, cmd_train, cmd_tune, run_config
from hybridrec.config import INT64_MAX
from hybridrec.configfile import expand_config
from hybridrec.errors import ConfigError, HybridRecError
from hybridrec.update import command as update_command

__all__ = [
    "COMMANDS",
    "add_config_arguments",
    "build_parser",
    "check_port",
    "config_from_args",
    "main",
    "recsys_main",
    "run",
    "run_config",
]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "update": update_command.run,
    "evaluate": cmd_evaluate,
    "recommend": cmd_recommend,
    "serve": cmd_serve,
    "export": cmd_export,
    "info": cmd_info,
    "demo": cmd_demo,
    "split": cmd_split,
    "data": cmd_data,
    "tune": cmd_tune,
    "report": cmd_report,
}


def _show_warning(
    message: Any, category: Any, filename: str, lineno: int, *a: Any, **k: Any
) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; user errors become a message and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except HybridRecError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as cat does
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"cannot read or write{where}: {exc.strerror or exc}")
    except (MemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        sizes = "--users, --items, --positives, " if args.command == "demo" else ""
        return _fail(
            f"out of memory; lower {sizes}--batch-size, --embedding-dim, --mlp-layers, "
            "--negatives or --eval-batch-size"
        )
    except KeyboardInterrupt:
        print(f"interrupted; {_interrupted(args)}", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit does not fail on
    the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def check_integer_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse any integer option beyond 64 bits, whichever command took it: PyTorch and
    numpy take 64-bit integers, and a larger one would surface as an ``OverflowError``
    wherever it is first used (``--k``, ``--seed`` ...)."""
    flags = _flags(parser, getattr(args, "command", None))
    for name, value in vars(args).items():
        numbers = value if isinstance(value, (tuple, list)) else (value,)
        for number in numbers:
            if isinstance(number, int) and not isinstance(number, bool) and abs(number) > INT64_MAX:
                flag = flags.get(name, "--" + name.replace("_", "-"))
                raise ConfigError(f"{flag} must be a 64-bit integer (at most 2^63-1), got {number}")


def _flags(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """Each option's destination -> its long flag, in ``command``'s subparser if any."""
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            actions += action.choices[command]._actions
    return {a.dest: max(a.option_strings, key=len) for a in actions if a.option_strings}


#: Failures of the machine or the file system that the user fixes (space, permissions,
#: names), reported in one line rather than as a traceback wherever they surface.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EISDIR", "ENOTDIR", "ENAMETOOLONG",
        "EFBIG", "EMFILE", "ENFILE", "EIO", "ENOENT", "EEXIST", "ELOOP", "ETXTBSY", "EXDEV",
    )
    if hasattr(errno, name)
)  # fmt: skip


def _fail(message: str) -> int:
    """Print a user error as one line (a message never spans lines) and return status 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def _is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's out-of-memory errors (CPU allocator, CUDA, MPS)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return "can't allocate memory" in text or "out of memory" in text.lower()


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command left: training saves its model only at the end."""
    if args.command == "tune":
        return "finished trials are kept in the study's storage; rerun to resume"
    if args.command not in ("train", "demo", "update"):
        return "no output file was written (they appear only when complete)"
    every = getattr(args, "checkpoint_every", 0)
    kept = "a model already there is unchanged"
    if every:
        kept += "; the last checkpoint is kept for --resume"
    return f"no model was saved; {kept}"


def main(argv: Sequence[str] | None = None) -> int:
    """``hybridrec`` console entry point."""
    parser = cached_parser()
    try:
        args = parser.parse_args(expand_config(parser, sys.argv[1:] if argv is None else argv))
        check_integer_options(args, parser)
    except ConfigError as exc:  # a --config file, or a type= parser; argparse exits 2 itself
        return _fail(str(exc))
    return run(args)


def recsys_main(argv: Sequence[str] | None = None) -> int:
    """``python RecSys.py``: the seed's usage, i.e. ``train`` on ./train.csv and ./val.csv."""
    parser = recsys_parser()
    args = parser.parse_args(argv)
    try:
        check_integer_options(args, parser)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.val == "val.csv" and not Path("val.csv").exists():
        args.val = "auto"
        print("note: no val.csv here, holding validation rows out of train.csv", file=sys.stderr)
    args.command = "train"
    return run(args)
