"""Errors that mean "your input is wrong": reported as one line, exit code 2, no traceback."""

from __future__ import annotations

from orchestrator.audit import AuditError
from orchestrator.chain import StageNotReady
from orchestrator.restore import RestoreError
from orchestrator.runner import NonFiniteLoss
from orchestrator.validate import DataValidationError
from stages.groups import GroupError
from stages.spec import SpecError

USER_ERRORS: tuple[type[BaseException], ...] = (
    AuditError,
    DataValidationError,
    FileNotFoundError,
    GroupError,
    NonFiniteLoss,
    RestoreError,
    SpecError,
    StageNotReady,
)
