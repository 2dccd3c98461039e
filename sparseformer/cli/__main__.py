"""``python -m sparseformer.cli``: the ``sparseformer`` command."""

import sys

from . import main

sys.exit(main())
