"""``python -m rlfm``: the ``rlfm`` command (see :mod:`rlfm.cli`)."""

import sys

from rlfm.cli import main

if __name__ == "__main__":
    sys.exit(main())
