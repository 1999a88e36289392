"""``python -m vatt.data.prepare``: see the package docstring."""

from . import main

main()
