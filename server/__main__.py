"""``python -m server``: the only place that reads argv and the environment."""

import sys

from server.cli import main

sys.exit(main())
