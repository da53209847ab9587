"""Allow ``python -m cpuu_fleet`` where the console script is not on PATH."""

from cpuu_fleet.cli import main

main()
