"""``python -m rlfm.speed``: the ``rlfm speed`` command (see :mod:`rlfm.speed`)."""

import sys

from rlfm.speed import speed_main

if __name__ == "__main__":
    sys.exit(speed_main())
