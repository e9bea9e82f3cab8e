"""``python -m poncho_wq {analyze,create,cache} ...``: the same commands as the console scripts."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
