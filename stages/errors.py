"""The one base class for errors that are the user's to fix.

The entry point (``orchestrator/__main__.py``) prints a :class:`UserError` as one line and
exits 2; every other exception is our bug and keeps its traceback. Raise a subclass (or
``UserError`` itself) only when the message names the key, file, record or annotation at
fault and says how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config value, a file, a record. One readable line, exit code 2."""
