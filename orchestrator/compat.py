"""The one place where third-party code is adapted to the installed stack.

Two supported stacks (``requirements/legacy`` and ``requirements/current``): Python 3.11 with
TensorFlow 2.15, and Python 3.12/3.13 with TensorFlow 2.21 + tf-keras. Every adaptation below
names the versions that need it and the OD API line it serves, and is applied only there.

Two entry points, both idempotent:

* :func:`prepare_environment` sets what TensorFlow reads *when it is imported*
  (``TF_USE_LEGACY_KERAS``). It imports nothing heavy; ``orchestrator/__init__.py`` calls it, so
  importing anything from ``orchestrator`` first is enough (``tests/conftest.py`` does).
* :func:`apply` patches TensorFlow, tf-slim and Pillow and imports the OD API modules that need a
  stand-in at import time. It must run before anything imports ``object_detection``
  (the ``object_detection.protos`` modules excepted: they are plain protobuf code);
  :mod:`orchestrator.odapi` calls it, so import the OD API through that module.

Stand-ins never run a fake: a stand-in module holds no attribute, raises
:class:`StandInError` (an ``AttributeError``) naming what is missing and why on any use, and is
visible in ``sys.modules`` only while the one OD API module that imports it loads.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator

_applied = False


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def installed_tensorflow() -> tuple[int, int] | None:
    """The installed TensorFlow's (major, minor), read from package metadata without importing it."""
    from importlib import metadata

    if importlib.util.find_spec("tensorflow") is None:
        return None
    # The usual distribution names first (milliseconds); scanning every installed distribution for
    # the one that ships ``tensorflow/`` takes ~0.3 s, paid on each ``import orchestrator``.
    known = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos")
    for names in (lambda: known, lambda: metadata.packages_distributions().get("tensorflow", [])):
        for dist in names():
            try:
                return _version(metadata.version(dist))
            except metadata.PackageNotFoundError:
                continue
    return None


def prepare_environment() -> None:
    """What must be in the environment before TensorFlow is imported (no TensorFlow import here).

    TensorFlow >= 2.16 (Keras 3 is ``tf.keras``; the OD API is Keras 2 code, e.g.
    ``object_detection/models/keras_models/resnet_v1.py:resnet_v1_50`` passes ``layers=`` to
    ``tf.keras.applications.resnet.ResNet50``, which Keras 3 removed): ``TF_USE_LEGACY_KERAS=1``
    makes ``tf.keras`` the tf-keras package. TensorFlow reads it once, in ``tensorflow/__init__.py``.
    On TF 2.15 it must stay unset: there it makes ``tf.keras`` import ``tf_keras``, which that stack
    does not install.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf_version = installed_tensorflow()
    if tf_version is not None and tf_version >= (2, 16):
        os.environ["TF_USE_LEGACY_KERAS"] = "1"


class StandInError(AttributeError):
    """Code used something a stand-in module does not provide."""


class StandIn(types.ModuleType):
    """A module that exists so an import succeeds, and raises on every other use."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name, f"frcnn-alt stand-in for {name}: {why}")
        self.__dict__["_why"] = why

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):  # introspection (inspect, pickle, copy)
            raise AttributeError(attr)
        raise StandInError(
            f"{self.__name__}.{attr} is not available: {self.__dict__['_why']} "
            "(frcnn-alt stand-in, orchestrator/compat.py)"
        )


@contextlib.contextmanager
def _visible(name: str, module: types.ModuleType) -> Iterator[None]:
    """``module`` importable as ``name`` only inside the block (never replaces a real module)."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = module
    try:
        yield
    finally:
        if sys.modules.get(name) is module:
            del sys.modules[name]


def _check_keras(tf, tf_version: tuple[int, int]) -> None:
    """TF >= 2.16: ``tf.keras`` must be tf-keras (Keras 2); see :func:`prepare_environment`."""
    if tf_version < (2, 16):
        return
    if importlib.util.find_spec("tf_keras") is None:
        raise ImportError(
            f"TensorFlow {tf.__version__} needs the tf-keras package (Keras 2) for the OD API: "
            f"pip install --no-deps tf-keras=={tf_version[0]}.{tf_version[1]}.* (requirements/current/nodeps.txt)"
        )
    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            f"TensorFlow {tf.__version__} was imported with Keras 3 as tf.keras ({tf.keras.__name__}); "
            "the OD API needs Keras 2. Set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, or import "
            "orchestrator before tensorflow."
        )


def _patch_tf_slim(tf, tf_version: tuple[int, int]) -> None:
    """TF >= 2.15 moved ``control_flow_ops.case`` / ``cond``; tf-slim 1.1.0 (its last release)
    still calls them in ``tf_slim/data/tfexample_decoder.py`` (``BackupHandler.tensors_to_item``,
    ``Image._decode``), which the OD API's ``object_detection/data_decoders/tf_example_decoder.py``
    uses for every record. Put the two functions back."""
    if tf_version < (2, 15):
        return
    from tensorflow.python.ops import control_flow_ops

    if not hasattr(control_flow_ops, "case"):
        control_flow_ops.case = tf.case
    if not hasattr(control_flow_ops, "cond"):
        control_flow_ops.cond = tf.compat.v1.cond


def _patch_pillow() -> None:
    """Pillow >= 10 removed ``FreeTypeFont.getsize`` / ``ImageFont.getsize`` (Pillow 9 has no wheel
    for Python >= 3.12); ``object_detection/utils/visualization_utils.py:draw_bounding_box_on_image``
    calls ``font.getsize`` (lines 219 and 229) on ``ImageFont.truetype`` / ``load_default`` fonts.
    Restore them with Pillow 9.5's result: the bottom-right corner of the text's box anchored at
    ``la``, plus the stroke width (Pillow 9.5 ``FreeTypeFont.getsize``)."""
    import PIL
    from PIL import ImageFont

    if _version(PIL.__version__) < (10, 0):
        return

    def freetype_getsize(self, text, direction=None, features=None, language=None, stroke_width=0):
        _, _, right, bottom = self.getbbox(
            text, direction=direction, features=features, language=language, stroke_width=stroke_width
        )
        return right + stroke_width, bottom + stroke_width

    def bitmap_getsize(self, text, *args, **kwargs):
        _, _, right, bottom = self.getbbox(text, *args, **kwargs)
        return right, bottom

    if not hasattr(ImageFont.FreeTypeFont, "getsize"):
        ImageFont.FreeTypeFont.getsize = freetype_getsize
    if not hasattr(ImageFont.ImageFont, "getsize"):
        ImageFont.ImageFont.getsize = bitmap_getsize


def _import_with_stand_ins(tf_version: tuple[int, int]) -> None:
    """OD API modules that import, at module level, a package this stack lacks: imported once here
    with a stand-in for it (they keep their reference; nothing imported later sees the stand-in)."""
    stand_ins: list[StandIn] = []
    modules: list[str] = []
    if tf_version >= (2, 16):
        # TF >= 2.16 ships no Estimator (tensorflow-estimator ended at 2.15): ``tf.compat.v1.estimator``
        # is gone, and ``object_detection/inputs.py:24`` and ``object_detection/model_lib.py:26`` import
        # it at module level. We use neither module's Estimator code (inputs.train_input/eval_input,
        # model_lib.provide_groundtruth/unstack_batch); inputs.create_predict_input_fn and
        # model_lib.create_model_fn / create_estimator_and_inputs (model_main.py) raise StandInError.
        stand_ins.append(
            StandIn(
                "tensorflow.compat.v1.estimator",
                f"TensorFlow {tf_version[0]}.{tf_version[1]} has no Estimator; the OD API's TF1 Estimator "
                "path (model_lib.create_model_fn, model_main.py) does not run on this stack, use model_lib_v2",
            )
        )
        modules += ["object_detection.inputs", "object_detection.model_lib"]
    if tf_version >= (2, 16) and importlib.util.find_spec("tensorflow_io") is None:
        # tensorflow-io's last release (0.37.1) is built for TF 2.16 and has no Python 3.13 wheel;
        # ``object_detection/meta_architectures/deepmac_meta_arch.py:28`` imports it at module level
        # (``model_builder`` imports that module) and uses it only in
        # ``DeepMACMetaArch._get_lab_image`` (color-consistency loss), which raises StandInError.
        stand_ins.append(
            StandIn(
                "tensorflow_io",
                "tensorflow-io is not installed (no release for this TensorFlow); DeepMAC's "
                "color-consistency loss (deepmac_meta_arch._get_lab_image) needs it",
            )
        )
        modules.append("object_detection.meta_architectures.deepmac_meta_arch")
    with contextlib.ExitStack() as stack:
        for stand_in in stand_ins:
            stack.enter_context(_visible(stand_in.__name__, stand_in))
        for name in modules:
            importlib.import_module(name)


def apply() -> None:
    """Apply every adaptation the installed stack needs, once."""
    global _applied
    if _applied:
        return
    prepare_environment()
    import tensorflow as tf

    tf_version = _version(tf.__version__)
    _check_keras(tf, tf_version)
    _patch_tf_slim(tf, tf_version)
    _patch_pillow()
    _import_with_stand_ins(tf_version)
    _applied = True


# ---------------------------------------------------------------- multi-worker coordination
# TensorFlow has no public API for these (2.15 and 2.21 alike): the eager context's coordination
# service, which MultiWorkerMirroredStrategy itself starts (collective_all_reduce_strategy.py,
# ``_initialize_multi_worker``: it configures one only when none is configured yet), and its
# key-value store (eager/context.py ``set_config_key_value`` / ``get_config_key_value``).


def eager_context_started() -> bool:
    """Whether TensorFlow already ran something (collective ops can no longer be configured)."""
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None


def configure_coordination(resolver, heartbeat_timeout_s: int, register_timeout_s: int) -> None:
    """The coordination service MultiWorkerMirroredStrategy would start, with our timeouts.

    A worker that stops sending heartbeats for ``heartbeat_timeout_s`` fails every pending
    collective and key-value wait of the others (they exit with a clear error instead of hanging);
    ``register_timeout_s`` bounds the wait for all workers to start.
    """
    from tensorflow.python.distribute import multi_worker_util

    # Its proto module moved (TF 2.15: tensorflow.tsl.protobuf; 2.21:
    # tensorflow.compiler.xla.tsl.protobuf); the strategy's own import finds it on both.
    from tensorflow.python.distribute.collective_all_reduce_strategy import coordination_config_pb2
    from tensorflow.python.eager import context

    spec = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
        for job in ("chief", "worker")
        if job in spec.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=heartbeat_timeout_s * 1000,
        cluster_register_timeout_in_ms=register_timeout_s * 1000,
        shutdown_barrier_timeout_in_ms=30_000,
        coordinated_jobs=jobs,
    )


def publish(key: str, value: str) -> None:
    from tensorflow.python.eager import context

    context.context().set_config_key_value(key, value)


def barrier(name: str, timeout_s: int) -> None:
    """Wait until every worker reached ``name`` (eager/context.py ``wait_at_barrier``)."""
    from tensorflow.python.eager import context

    context.context().wait_at_barrier(name, timeout_s * 1000)


def receive(key: str) -> str:
    """Blocks until the key is published (a dead publisher fails it through the heartbeat)."""
    from tensorflow.python.eager import context

    return context.context().get_config_key_value(key)


def slurm_cluster_resolver(port_base: int, gpus_on_node: int):
    """TensorFlow's SlurmClusterResolver, also on nodes without GPUs.

    It pairs each task of a node with a slice of the node's GPUs (``cluster_spec``: ``zip`` over
    ``range(num_tasks)`` and ``range(0, gpus_per_node, gpus_per_task)``), so with no GPU it
    lists no task at all, and with ``gpus_per_node=None`` it runs ``nvidia-smi``. On a CPU node
    we give it one notional GPU per task and keep it from setting ``CUDA_VISIBLE_DEVICES``.
    """
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SlurmClusterResolver
    if gpus_on_node:
        return resolver(port_base=port_base, gpus_per_node=gpus_on_node)
    cpu_only = resolver(port_base=port_base, gpus_per_node=1024, gpus_per_task=1, auto_set_gpu=False)
    # ... and its notional GPUs must not reach the strategy, which would place replicas on them.
    cpu_only.num_accelerators = lambda *args, **kwargs: {}
    return cpu_only
