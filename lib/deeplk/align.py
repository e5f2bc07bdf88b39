"""The target of ``deeplk-align`` scripts installed before the command moved to
`deeplk.alignment` (their entry point is ``deeplk.align:main``); reinstalling the package
(``pip install -e .``) points the command at `deeplk.alignment` directly.

Not for import: ``deeplk.align`` is the function `deeplk.alignment.align`, and importing this
module would put the module in its place on the package.
"""

from deeplk.alignment import main

__all__ = ["main"]
