"""`python -m linetwin`: the command line."""

from linetwin.cli.main import main

main()
