"""``python -m vkscraper``: the same command as the installed ``vkscraper``."""

import sys

from vkscraper.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
