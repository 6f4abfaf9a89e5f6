"""``python -m layerfast.cli``."""

import sys

from . import main

sys.exit(main())
