"""Errors that mean "your input is wrong": reported as one line, exit code 2, no traceback."""

from __future__ import annotations

from orchestrator.chain.chain import StageNotReady
from orchestrator.data.validate import DataValidationError
from orchestrator.engine.audit import AuditError
from orchestrator.engine.runner import NonFiniteLoss
from orchestrator.odapi.restore import RestoreError
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
