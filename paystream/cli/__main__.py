"""``python -m paystream.cli``: what supervisors and tests run."""

import sys

from paystream.cli import main

sys.exit(main())
