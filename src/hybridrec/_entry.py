"""The ``hybridrec`` command's first step, before PyTorch and pandas are loaded.

Loading them takes seconds; a Ctrl-C in that time used to print a KeyboardInterrupt
traceback from deep inside an import. Here it is an ordinary interruption (status 130),
as it is once a command runs.
"""

from __future__ import annotations

import sys


def main() -> int:
    """``hybridrec`` console entry point: :func:`hybridrec.cli.main` once it is loaded."""
    try:
        from hybridrec.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    return cli_main()
