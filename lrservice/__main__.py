"""``python -m lrservice`` is the ``lrservice`` command."""

import sys

from lrservice.cli import main

sys.exit(main())
