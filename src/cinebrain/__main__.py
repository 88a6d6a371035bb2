"""``python -m cinebrain``: the command line (as ``torchrun -m cinebrain`` runs it)."""

import sys

from cinebrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
