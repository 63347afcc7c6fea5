"""Atomic writes: a reader sees the old file (or model directory) or the new one, never
half of one; and a lock so that two processes never write one directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from hybridrec.errors import ConfigError


class OutputBusyError(ConfigError):
    """Another process holds the lock of the output directory."""


def check_output_dir(path: str | Path, flag: str, *, model_ok: bool = True) -> Path:
    """Refuse, before any work, a directory path that cannot be written: empty, a file,
    under a file, or in a folder this process cannot create files in.

    Never inside a saved model's directory; ``model_ok=False`` (outputs that are not a
    model: reports, splits) also refuses a model's directory itself.

    Nothing is created (a run that fails leaves no empty directory); the nearest existing
    folder is probed by creating and removing a temporary file, which, unlike
    ``os.access``, also tells the truth for root, read-only mounts and ACLs.
    """
    if str(path) == "":
        raise ConfigError(f"{flag} must name a directory, got an empty path")
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{flag} {directory} is a file; give a directory")
    for parent in Path(os.path.abspath(directory)).parents:
        if _holds_model(parent):  # a saved model is never written into (README)
            raise ConfigError(
                f"{flag} {directory} lies inside the model directory {parent}; give a path "
                "outside it"
            )
    if not model_ok and _holds_model(directory):
        raise ConfigError(
            f"{flag} {directory} is a model directory; give a folder of its own for this output"
        )
    _probe(directory, flag, "directory")
    return directory


def _holds_model(directory: Path) -> bool:
    """Whether ``directory`` holds a saved model (a ``config.json`` listing checksums)."""
    config = directory / "config.json"
    if not config.is_file():
        return False
    try:
        return isinstance(json.loads(config.read_text()).get("sha256"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def check_output_file(path: str | Path, flag: str) -> Path:
    """:func:`check_output_dir` for a file that will be written (or replaced) at ``path``."""
    if str(path) == "":
        raise ConfigError(f"{flag} must name a file, got an empty path")
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {target} is a directory; give a file path")
    if target.name in ("", ".", ".."):
        raise ConfigError(f"{flag} {target} does not name a file")
    _not_a_model_file(target, flag)
    _probe(target, flag, "file")
    return target


def _not_a_model_file(target: Path, flag: str) -> None:
    """Refuse to replace a file of a saved model (its ``config.json`` or a file that lists
    a checksum for): the model would no longer load."""
    if not _holds_model(target.parent):
        return
    listed = json.loads((target.parent / "config.json").read_text())["sha256"]
    if target.name == "config.json" or target.name in listed:
        raise ConfigError(
            f"{flag} {target} is a file of the model in {target.parent}; writing it would "
            "break that model (give another path)"
        )


def _probe(path: Path, flag: str, kind: str) -> None:
    """The nearest existing folder of ``path`` (itself for an existing directory) must be
    a directory in which a file can be created."""
    existing = path if path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {path}: cannot create the {kind} ({existing} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hybridrec-probe.", dir=existing)
    except OSError as exc:
        raise ConfigError(
            f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(fileobj)`` on a temp file beside ``path``, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if hasattr(os, "fchmod"):  # as open() would: mkstemp makes 0600
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask, read without changing it where the OS tells it (Linux); else by
    setting and restoring it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def fsync_directory(path: str | Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_path(directory: Path, role: str) -> Path:
    """``.<name>.<role>`` beside ``directory``: where a replacement is built (``new``) or the
    replaced directory waits to be deleted (``old``)."""
    return directory.parent / f".{directory.name}.{role}"


def swap_in(new: Path, directory: Path, keep: Callable[[str], bool]) -> None:
    """Replace ``directory`` by the complete directory ``new``, never leaving a half of each.

    Entries of the old directory for which ``keep(name)`` is true and that ``new`` lacks
    (a checkpoint, progress files) are moved over first. Then ``directory`` is renamed to
    ``.<name>.old`` and ``new`` into its place, and the old one is deleted. A crash between
    the two renames leaves both complete directories on disk; :func:`recover` puts the new
    one in place.
    """
    for entry in list(directory.iterdir()):
        if keep(entry.name) and not (new / entry.name).exists():
            os.replace(entry, new / entry.name)
    fsync_directory(new)
    old = staging_path(directory, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(directory, old)
    os.replace(new, directory)
    fsync_directory(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(directory: str | Path, complete: Callable[[Path], bool]) -> None:
    """Finish or undo a :func:`swap_in` that a crash interrupted, and drop leftovers.

    When ``directory`` is missing, the replacement (if ``complete``) or else the replaced
    directory is moved back into place. Stale ``.<name>.new``/``.old`` directories and
    ``.*.tmp`` files of :func:`atomic_write` are removed. Call it only while holding
    :func:`exclusive` for ``directory``: another writer's files would look stale too.
    """
    directory = Path(directory)
    new, old = staging_path(directory, "new"), staging_path(directory, "old")
    if not directory.exists():
        for candidate in (new, old):
            if candidate.is_dir() and complete(candidate):
                os.replace(candidate, directory)
                fsync_directory(directory.parent)
                break
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    if directory.is_dir():
        for tmp in directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(directory: str | Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``directory`` for the block, or fail at once.

    Two trainings writing one ``--out`` would mix their files; the second is refused with
    the lock's path. The lock is an ``flock`` (released by the kernel if the process dies);
    where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    directory = Path(directory)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = staging_path(directory, "lock")
    try:
        handle = open(lock, "a+b")  # noqa: SIM115 - closed by the with block below
    except OSError as exc:
        raise ConfigError(f"cannot create the lock {lock} ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(
                f"another hybridrec process is writing {directory} (it holds {lock}); wait "
                "for it to finish or choose another --out"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
