"""`python -m mmsample`: the same command as the `mmsample` console script."""

import sys

from .cli import main

sys.exit(main())
