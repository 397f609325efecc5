"""``python -m ghostsync``: the ghostsync command."""

import sys

from ghostsync.cli import main

sys.exit(main())
