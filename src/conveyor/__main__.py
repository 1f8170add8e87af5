"""``python -m conveyor``: the ``conveyor`` command (see :mod:`conveyor._start`)."""

from conveyor._start import main

main()
