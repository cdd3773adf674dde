"""`python -m nnrun ...` behaves as `nnrun ...`."""

import sys

from nnrun.cli import main

sys.exit(main())
