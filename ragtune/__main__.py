"""``python -m ragtune`` (also what ``torchrun -m ragtune`` runs)."""

import sys

from ragtune.cli import main

sys.exit(main())
