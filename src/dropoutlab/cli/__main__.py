"""``python -m dropoutlab.cli``."""

import sys

from dropoutlab.cli import main

sys.exit(main())
