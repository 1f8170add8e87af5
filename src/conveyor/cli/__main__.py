"""``python -m conveyor.cli``: the same as the ``conveyor`` command."""

from conveyor.cli import main

main()
