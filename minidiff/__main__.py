"""``python -m minidiff`` is the ``minidiff`` command."""

from minidiff.cli import main

raise SystemExit(main())
