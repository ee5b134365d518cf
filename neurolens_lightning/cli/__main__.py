"""``python -m neurolens_lightning.cli``: the ``neurolens`` command."""

import sys

from neurolens_lightning.cli import main

sys.exit(main())
