"""Putting a saved model to use: ``hybridrec recommend`` (a file of top-k lists), ``serve``
(an HTTP service) and ``export`` (a TorchScript or ONNX scorer)."""

from __future__ import annotations

import argparse
import errno
import math
import socket
import sys
from pathlib import Path

from hybridrec.config import MAX_THREADS
from hybridrec.errors import ConfigError
from hybridrec.files import check_output_file


def cmd_recommend(args: argparse.Namespace) -> int:
    from hybridrec.recommend import (
        Recommender,
        check_id_kind,
        output_format,
        read_user_ids,
        write_recommendations,
    )
    from hybridrec.recommend.checks import positive_int

    output_format(args.output)  # a bad suffix or path fails before the model is loaded
    check_output_file(args.output, "--output")
    positive_int(args.k, "--k", name_value=False)  # the flags' names, not the API's
    if args.chunk_users is not None:  # None: sized to the model
        positive_int(args.chunk_users, "--chunk-users", name_value=False)
    if isinstance(args.num_candidates, int):
        positive_int(args.num_candidates, "--two-stage", name_value=False)
    rec = Recommender.load(args.model)
    # the users file names its column like the training data did (--user-col at training)
    trained_col = rec.config.get("settings", {}).get("data", {}).get("user_col", "userId")
    if args.all:
        users = rec.users.ids
    else:
        column = args.user_col or trained_col
        users = read_user_ids(args.users, column)
        check_id_kind(rec.users, users, args.users, column)
        import pandas as pd

        first = pd.Series(users).map(str).str.strip().drop_duplicates().index.to_numpy()
        if len(first) < len(users):  # one block per user: (userId, rank) stays a key
            print(f"note: {len(users) - len(first):,} repeated user id(s) in {args.users} "
                  "are written once", file=sys.stderr)  # fmt: skip
            users = users[first]
    rows = write_recommendations(
        rec,
        users,
        args.output,
        k=args.k,
        exclude_seen=not args.include_seen,
        chunk_users=args.chunk_users,
        show_progress=not args.no_progress,
        num_candidates=args.num_candidates,
    )
    print(f"{args.output}: {rows:,} recommendations for {len(users):,} users")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hybridrec.artifact import load_artifact
    from hybridrec.runtime import set_num_threads
    from hybridrec.serve import serve

    if args.cache_top is not None and args.cache_top < 0:
        raise ConfigError(f"--cache-top must be >= 0, got {args.cache_top}")
    if not 0 <= args.threads <= MAX_THREADS:
        raise ConfigError(
            f"--threads must be in 0..{MAX_THREADS} (0 = PyTorch default), got {args.threads}"
        )
    if not (math.isfinite(args.header_timeout) and 0 < args.header_timeout <= 3600):
        raise ConfigError(f"--header-timeout must be in (0, 3600] s, got {args.header_timeout}")
    for flag, value in (("--max-connections", args.max_connections),
                        ("--max-pending", args.max_pending)):  # fmt: skip
        if not 1 <= value <= 1_000_000:
            raise ConfigError(f"{flag} must be in 1..1000000, got {value}")
    check_port(args.host, args.port)  # before the model is loaded and its cache built
    set_num_threads(args.threads)
    load_artifact(args.model)  # fail here, with a clear error, before the server starts
    serve(
        args.model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        cache_top=args.cache_top,
        access_log=args.access_log,
        admin_token=args.admin_token,
        models_root=args.models_root,
        header_timeout=args.header_timeout,
        max_connections=args.max_connections,
        max_pending=args.max_pending,
        events=args.events,
        events_sync=args.events_sync.upper(),
        fold_in_process=args.fold_in_process,
    )
    return 0


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range, or one that cannot be listened on now (taken, not an
    address of this machine, privileged), by binding it as uvicorn will and letting go.

    Checked before the model is loaded, so a busy port is a one-line error in a moment
    rather than after seconds of loading (uvicorn would log it and exit with status 1).
    Another process could still take the port in between; uvicorn reports that itself.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address ({exc.strerror})") from None
    except (OSError, OverflowError, UnicodeError) as exc:
        reason = (
            "the port is in use"
            if getattr(exc, "errno", None) == errno.EADDRINUSE
            else (getattr(exc, "strerror", None) or str(exc))
        )
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from hybridrec.export import FORMATS, export_model
    from hybridrec.recommend import Recommender

    if args.format is None:  # the suffix of --out says which, as a user writes it
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        given = Path(args.out).suffix.lower() if args.out else ""
        args.format = by_suffix.get(given, "torchscript")
    if args.out is not None:
        check_output_file(args.out, "--out")
        suffix = FORMATS.get(args.format)
        if suffix is not None and Path(args.out).suffix.lower() != suffix:
            # an explicit --out of another kind (an event log, a data file) would be lost
            raise ConfigError(
                f"--out {args.out}: a {args.format} export is a {suffix} file; give a path "
                f"ending in {suffix}"
            )
    rec = Recommender.load(args.model)
    out = Path(args.out) if args.out else Path(args.model) / f"model{FORMATS[args.format]}"
    check_output_file(out, "--out")
    export_model(rec.model, out, args.format)
    print(f"wrote {out}: {args.format} scorer of (user_idx, item_idx) -> logits")
    return 0
