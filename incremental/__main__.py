"""``python -m incremental``: the ``incremental`` command line."""

import sys

from .cli import main

sys.exit(main())
