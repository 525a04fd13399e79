"""``python -m benchbone.cli``: the ``benchbone`` command."""
import sys

from benchbone.cli import main

sys.exit(main())
