"""The command line (`linetwin ...`): the composition root.

It parses arguments, builds the pieces the other packages export and runs them; it holds no
domain logic. `main` is the console script's entry point.
"""

from linetwin.cli.main import main

__all__ = ["main"]
