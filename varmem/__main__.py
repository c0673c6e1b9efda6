"""``python -m varmem ...``: the same commands as the ``varmem`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
