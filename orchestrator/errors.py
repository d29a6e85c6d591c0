"""Which errors are the user's to fix: every subclass of :class:`stages.errors.UserError`.

The entry point prints those as one line and exits 2. Everything else (our bugs, including a
failed frozen-weight audit) keeps its traceback.
"""

from __future__ import annotations

from stages.errors import UserError

__all__ = ["UserError"]
