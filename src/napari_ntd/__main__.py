"""``python -m napari_ntd`` runs the command line (see ``napari-ntd --help``)."""

import sys

from ._ui._cli import main

sys.exit(main())
