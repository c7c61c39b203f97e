"""``python -m incremental``: the ``incremental`` command line."""

import sys

from incremental.cli import main

sys.exit(main())
