"""Starting ``hookstream`` in a child process (``hookstream dev``, ``hookstream replay``)."""

from __future__ import annotations

import sys


def hookstream_argv(*args: str) -> list[str]:
    """The command line that runs ``hookstream ARGS`` with this interpreter.

    ``-P``: the child's import path does not begin with the working directory, so a
    ``schemas.py`` or ``deploy/`` of the user's own (any FastAPI project has a
    ``schemas.py``) cannot shadow hookstream's packages.
    """
    return [sys.executable, "-P", "-m", "deploy.cli", *args]
