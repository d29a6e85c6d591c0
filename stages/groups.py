"""Module groups resolved from a built ``FasterRCNNMetaArch``.

This is the one module that reads the meta-architecture's private sub-model attributes; the
names are listed once in ``GROUP_ATTRIBUTES`` and ``tests/stages/test_groups.py`` fails loudly
when an OD API release renames one. Groups come from the model objects, never from a regex
table, so they are right for every Keras feature extractor ("Module groups" in
``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stages.errors import UserError
from stages.spec import GROUPS

GROUP_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shared": ("_feature_extractor_for_proposal_features",),
    "rpn": ("_first_stage_box_predictor_first_conv", "_first_stage_box_predictor"),
    "detector_features": ("_feature_extractor_for_box_classifier_features",),
    "detector_head": ("_mask_rcnn_box_predictor",),
}


class GroupError(UserError):
    """The model's variables are not partitioned by the four groups."""


@dataclass(frozen=True)
class ModuleGroups:
    """The Keras sub-models and variables of each group of one built model."""

    modules: dict[str, tuple]
    variables: dict[str, tuple]

    def names(self, group: str) -> list[str]:
        return [v.name for v in self.variables[group]]

    def set_trainable(self, trained: Iterable[str]) -> None:
        """``trainable = False`` on every sub-model of a group not in ``trained``.

        Keras then drops its variables from ``model.trainable_variables`` and runs its
        BatchNorm layers in inference mode, which freezes the moving statistics too.
        """
        trained = set(trained)
        for group, modules in self.modules.items():
            for module in modules:
                module.trainable = group in trained

    def counts(self, trainable_variables: Iterable) -> dict[str, tuple[int, int]]:
        """Per group: (variables among ``trainable_variables``, all variables)."""
        trainable = {v.ref() for v in trainable_variables}
        return {g: (sum(v.ref() in trainable for v in vs), len(vs)) for g, vs in self.variables.items()}


def _module_variables(module) -> list:
    return list(module.variables) if hasattr(module, "variables") else []


def resolve_groups(model) -> ModuleGroups:
    """Map each group to its sub-models and variables; the model must have been called once.

    Raises :class:`GroupError` naming every variable that falls in no group or in two.
    """
    modules: dict[str, tuple] = {}
    for group in GROUPS:
        found = []
        for attr in GROUP_ATTRIBUTES[group]:
            if not hasattr(model, attr):
                raise GroupError(
                    f"FasterRCNNMetaArch has no attribute {attr!r} (group {group!r}); the OD API "
                    f"changed: update stages/groups.py GROUP_ATTRIBUTES."
                )
            module = getattr(model, attr)
            if module is None or not hasattr(module, "variables"):
                raise GroupError(
                    f"{attr} of group {group!r} is not a built Keras sub-model ({module!r}): call "
                    f"the model once (preprocess + predict, two stages) before resolving groups."
                )
            found.append(module)
        modules[group] = tuple(found)
    variables = {g: _unique(v for m in ms for v in _module_variables(m)) for g, ms in modules.items()}
    _check_partition(model, variables)
    return ModuleGroups(modules=modules, variables=variables)


def _unique(variables: Iterable) -> tuple:
    seen: dict = {}
    for v in variables:
        seen.setdefault(v.ref(), v)
    return tuple(seen.values())


def _check_partition(model, variables: dict[str, tuple]) -> None:
    owner: dict = {}
    doubled: list[str] = []
    for group, vs in variables.items():
        for v in vs:
            if v.ref() in owner:
                doubled.append(f"{v.name} ({owner[v.ref()]} and {group})")
            owner[v.ref()] = group
    stray = [v.name for v in model.variables if v.ref() not in owner]
    if stray or doubled:
        raise GroupError(
            "module groups do not partition the model: "
            + (f"in no group: {stray[:10]}{'...' if len(stray) > 10 else ''}; " if stray else "")
            + (f"in two groups: {doubled[:10]}" if doubled else "")
        )
