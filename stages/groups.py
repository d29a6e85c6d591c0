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
        """``trainable = False`` on every sub-model of a group not in ``trained``, BatchNorm pinned.

        Keras then drops the group's variables from ``model.trainable_variables``. Its
        BatchNorm layers are pinned to inference mode too (:func:`pin_batch_norm`): a frozen
        group computes a fixed function of its input, with the statistics evaluation uses.
        """
        trained = set(trained)
        for group, modules in self.modules.items():
            for module in modules:
                module.trainable = group in trained
                pin_batch_norm(module, frozen=group not in trained)

    def counts(self, trainable_variables: Iterable) -> dict[str, tuple[int, int]]:
        """Per group: (variables among ``trainable_variables``, all variables)."""
        trainable = {v.ref() for v in trainable_variables}
        return {g: (sum(v.ref() in trainable for v in vs), len(vs)) for g, vs in self.variables.items()}


_PIPELINE_SETTING = "_frcnn_alt_pipeline_training"  # a layer's own ``training`` before any pin


def batch_norm_layers(module) -> list:
    """The BatchNorm layers inside a Keras sub-model (those with moving statistics)."""
    found = [module, *getattr(module, "submodules", ())]
    return [m for m in found if hasattr(m, "moving_mean") and hasattr(m, "moving_variance")]


def pin_batch_norm(module, frozen: bool) -> None:
    """Frozen: every BatchNorm layer of ``module`` normalises with its moving statistics.

    Keras 2's own BatchNorm does this when ``trainable`` is False, but the OD API's
    ``FreezableBatchNorm`` subclasses the TF1 layer (``tensorflow.compat.v1``), which keeps
    normalising with the *batch's* statistics in training mode (measured: a frozen layer's
    output moved by 12.3 on a batch of four). Frozen weights would then still compute features
    that depend on the rest of the batch, and differ from what evaluation (moving statistics)
    sees. Its ``_training`` override (read when the layer is called, so before the train step
    is traced) pins it; training the group again restores the pipeline's own setting
    (``batch_norm_trainable``). A BatchNorm layer that can be neither pinned nor relied on is
    an error, not a silent difference.
    """
    for layer in batch_norm_layers(module):
        if hasattr(layer, "_training"):  # FreezableBatchNorm
            if not hasattr(layer, _PIPELINE_SETTING):
                setattr(layer, _PIPELINE_SETTING, layer._training)
            layer._training = False if frozen else getattr(layer, _PIPELINE_SETTING)
        elif frozen and not getattr(layer, "_USE_V2_BEHAVIOR", True):
            raise GroupError(
                f"BatchNorm layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}) "
                "keeps using batch statistics when frozen and cannot be pinned to inference mode; "
                "use the OD API's FreezableBatchNorm or Keras 2's BatchNormalization in the extractor."
            )


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
