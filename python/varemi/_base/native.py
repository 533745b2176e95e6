"""The native/pure switch: ``VAREMI_PURE_PYTHON=1`` runs every kernel on its pure-Python twin.

Read once, at import: set the variable before importing varemi. Every module that
chooses between a native kernel and its twin reads :data:`PURE_PYTHON` from here.
"""

import os

PURE_PYTHON: bool = os.environ.get("VAREMI_PURE_PYTHON", "") not in ("", "0")
"""True when ``VAREMI_PURE_PYTHON`` is set to anything but empty or ``0``."""
