"""`python -m tcpmax` runs the command line."""

from tcpmax.cli import main

main()
