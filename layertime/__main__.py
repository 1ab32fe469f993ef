"""``python -m layertime`` (also how torchrun starts it)."""

import sys

from layertime.cli import main

sys.exit(main())
