"""Frozen/trained splits as regexes, for the ``freeze_variables`` a pipeline.config must state.

The OD API's TF2 loop ignores ``freeze_variables`` (the runner freezes by setting
``trainable = False`` on the frozen groups and audits them afterwards; "Freezing and the audit"
in ``docs/architecture.md``), so these regexes are documentation that must tell the truth:
:func:`freeze_patterns` builds them from the variable names of the frozen and trained sets, and
:func:`check_patterns` proves a pattern list matches exactly the frozen set and that every
pattern matches something.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_TOKEN = re.compile(r"[^_/]+[_/]?")


def _prefixes(name: str) -> Iterable[str]:
    """Token-boundary prefixes of a variable name, shortest first: ``conv1_``, ``conv1_conv/``..."""
    end = 0
    for match in _TOKEN.finditer(name):
        end = match.end()
        yield name[:end]


def freeze_patterns(frozen: Sequence[str], trained: Sequence[str]) -> list[str]:
    """Short ``^prefix`` regexes that match every name in ``frozen`` and none in ``trained``.

    For each frozen name, the shortest token-boundary prefix that no trained name starts with
    (e.g. ResNet-50 stage 3: ``^conv1_`` ... ``^conv4_``, ``^RPNConv/``).
    """
    trained_set = list(trained)
    patterns: list[str] = []
    covered: list[str] = []
    for name in frozen:
        if any(name.startswith(p) for p in covered):
            continue
        prefix = next((p for p in _prefixes(name) if not any(t.startswith(p) for t in trained_set)), None)
        if prefix is None:
            raise ValueError(f"variable {name!r} is frozen but a trained variable has the same name")
        covered.append(prefix)
        patterns.append("^" + re.escape(prefix))
    return patterns


def split_frozen(names: Iterable[str], patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """(frozen, trained): names matched by any pattern, and the rest (``re.search``)."""
    compiled = [re.compile(p) for p in patterns]
    frozen, trained = [], []
    for name in names:
        (frozen if any(c.search(name) for c in compiled) else trained).append(name)
    return frozen, trained


def check_patterns(
    patterns: Sequence[str], frozen: Sequence[str], trained: Sequence[str], where: str
) -> None:
    """Fail unless ``patterns`` match exactly ``frozen`` and each pattern matches something."""
    for i, pattern in enumerate(patterns):
        if not any(re.search(pattern, n) for n in frozen):
            raise ValueError(f"{where}.freeze_variables[{i}]={pattern!r} matched 0 variables")
    matched, unmatched = split_frozen(list(frozen) + list(trained), patterns)
    wrong = sorted(set(matched) - set(frozen))
    missed = sorted(set(unmatched) - set(trained))
    if wrong or missed:
        raise ValueError(
            f"{where}.freeze_variables do not match the frozen groups: "
            f"matched but trained: {wrong[:5]}; frozen but unmatched: {missed[:5]}"
        )
