"""The seed's entry point: ``python RecSys.py`` trains on ./train.csv, validates on ./val.csv
every epoch and saves the model to ./model/. Same as ``hybridrec train``; see ``--help``.
``RecSysDataset`` and ``HybridRecSys`` can be imported from here, as in the seed."""

import sys
from pathlib import Path

try:
    from hybridrec.cli import recsys_main
except KeyboardInterrupt:  # Ctrl-C while PyTorch loads: no traceback, as once running
    print("interrupted while starting; nothing was done", file=sys.stderr)
    sys.exit(130)
except ImportError:  # run from a source checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    try:
        from hybridrec.cli import recsys_main
    except ImportError as exc:
        print(
            f"error: a dependency is missing ({exc}). Run `make setup` in the hybridrec "
            "checkout and use its .venv/bin/python, or `pip install -e .`",
            file=sys.stderr,
        )
        sys.exit(2)

#: The seed's classes, importable from here as in its design (``from RecSys import
#: RecSysDataset``); loaded on first use, so ``python RecSys.py --help`` stays quick.
SEED_NAMES = ("RecSysDataset", "HybridRecSys", "HybridRecSysConfig")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name in SEED_NAMES:
        import hybridrec

        return getattr(hybridrec, name)
    raise AttributeError(f"module 'RecSys' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(recsys_main())
