"""``python -m simsiam`` (also what ``torchrun -m simsiam`` runs)."""

import sys

from simsiam.cli import main

sys.exit(main())
