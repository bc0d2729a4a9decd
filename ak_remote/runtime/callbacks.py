"""The job's training callback: TensorBoard per trial, clean ClearML series, and checkpoints.

TensorBoard layout (`<run>/tensorboard`): one run per trial and split, `trial-00/train`,
`trial-00/validation`, ..., and `final/train` for AutoKeras' final fit. `trial-00` and `final`
also hold the HParams session (the trial's hyperparameters; the final fit's are the best
trial's), so the HParams tab lists every trial and the final fit. Each `train` run holds:
- epoch scalars (`epoch_loss`, ...);
- one histogram per trainable weight, tagged by layer (`dense_1/kernel`, `conv2d/bias`), every
  `histogram_freq` epochs. Non-trainable statistics (normalization mean/variance/count, batch
  norm moving averages) are not weights and are left out;
- the model graph, written here because Keras 3's own is unreadable in TensorBoard 2.21 (an
  op graph of the train step that fails to render, and a conceptual graph that is one opaque
  `functional` node): an op graph of the forward pass traced as a `tf.function` (ops grouped
  by layer), and a conceptual graph (tag `keras`) with one node per layer, no model wrapper.

Series naming route (ClearML's TensorBoard capture names per-trial series
inconsistently): the job turns ClearML's TensorBoard auto-capture off and reports every epoch's
logs itself through the ClearML Logger from this callback, one series per trial and split, named
as the TensorBoard runs: title `epoch_<metric>` (the tag TensorBoard shows), series
`trial-00/train`, `trial-00/validation`, ..., and `final/train`. The test suite reads them back
from the offline session's metrics.jsonl.

Why one callback instead of TensorBoard + ModelCheckpoint + a reporter:
- Keras Tuner gives each trial its own TensorBoard folder (`readable_runs` names it
  `<log_dir>/trial-00`) only for a callback whose class is *named* `TensorBoard`; that same
  patched `log_dir` is how this callback knows which trial it is in, so reporting and
  checkpointing live in it.
- AutoKeras 3.0.0 builds the final fit's callbacks as one deep copy of *all* callbacks per
  non-EarlyStopping callback (`AutoTuner._remove_early_stopping`), so with three callbacks every
  event of the final fit would be written and reported twice. With exactly one
  non-EarlyStopping callback the final fit gets each callback once.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import keras

from ak_remote.runtime import console, signals


class ScalarSink(Protocol):
    """Where epoch scalars go (the ClearML tracker, or nothing)."""

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None: ...


FINAL = "final"
TRIAL_PREFIX = "trial-"
# Checkpoint at most this often, and after the last epoch of every fit. Saving weights costs
# about 40 ms (measured, small CNN): every epoch of a tiny run, that alone was 6 % of the time.
CHECKPOINT_INTERVAL_S = 30.0


def trial_run(trial_id: str, execution: int = 0) -> str:
    """The TensorBoard run (folder) of a Keras Tuner trial: `trial-00`."""
    name = f"{int(trial_id):02d}" if str(trial_id).isdigit() else str(trial_id)
    return f"{TRIAL_PREFIX}{name}" + (f"-execution{execution}" if execution else "")


def phase_of(base_log_dir: str, log_dir: str) -> str:
    """`trial-00` for a trial folder under `base_log_dir`, else `final` (the final fit)."""
    relative = os.path.relpath(log_dir, base_log_dir)
    if relative == "." or relative.startswith(".."):
        return FINAL
    return Path(relative).parts[0]


def readable_runs(base: type, trial: str | None = None) -> type:
    """`base` (a Keras Tuner/AutoKeras tuner class) writing TensorBoard runs with readable names.

    Keras Tuner names a trial's folder `<trial_id>/execution0` and writes its HParams session
    there; this names it `trial-00`, or after `trial` (a parallel search's trial, trained as this
    tuner's only one), so a search's logs read as one search's. The final fit, which Keras Tuner
    knows nothing of, gets the best trial's hyperparameters for its own HParams session.
    """

    def name(trial_id: Any, execution: Any) -> str:
        return trial_run(trial if trial is not None else str(trial_id), int(execution))

    class ReadableRuns(base):  # type: ignore[misc,valid-type]
        def _get_tensorboard_dir(self, logdir: Any, trial_id: Any, execution: Any) -> str:
            return os.path.join(str(logdir), name(trial_id, execution))

        def _configure_tensorboard_dir(
            self, callbacks: Any, trial: Any, execution: Any = 0
        ) -> None:
            super()._configure_tensorboard_dir(callbacks, trial, execution)
            # The HParams table's "Trial ID" column: the run's name, not Keras Tuner's `0`.
            for callback in callbacks:
                if type(callback).__module__.startswith("tensorboard.plugins.hparams") and hasattr(
                    callback, "_trial_id"
                ):
                    callback._trial_id = name(trial.trial_id, execution)

        def final_fit(self, **kwargs: Any) -> Any:
            from keras_tuner.src.engine import tuner_utils
            from tensorboard.plugins.hparams import api as hparams_api

            best = self.oracle.get_best_trials(1)[0].hyperparameters
            values = tuner_utils.convert_hyperparams_to_hparams(best, hparams_api)
            for callback in _flatten(kwargs.get("callbacks")):
                if isinstance(callback, TensorBoard):
                    callback.hparams = values
            return super().final_fit(**kwargs)

    ReadableRuns.__name__ = ReadableRuns.__qualname__ = f"ReadableRuns{base.__name__}"
    return ReadableRuns


def _flatten(items: Any) -> list[Any]:
    if isinstance(items, (list, tuple)):
        return [leaf for item in items for leaf in _flatten(item)]
    return [] if items is None else [items]


def conceptual_graph(model: Any) -> str:
    """The model as the JSON TensorBoard's conceptual graph reads (tag `keras`): one node per
    layer (a nested model is one node), edges from the layers' inbound nodes in this model.

    The top level has an empty name: TensorBoard scopes every layer under the model's name,
    which it draws as one collapsed `functional` node.
    """
    from keras.src.ops.function import make_node_key

    own_nodes = getattr(model, "_nodes", None)
    layers: list[dict[str, Any]] = []
    for operation in getattr(model, "operations", None) or model.layers:
        args = []
        for index, node in enumerate(getattr(operation, "_inbound_nodes", [])):
            if own_nodes is not None and make_node_key(operation, index) not in own_nodes:
                continue  # a call of the layer in another model
            args.append(
                [
                    {"config": {"keras_history": [parent.operation.name, 0, 0]}}
                    for parent in node.parent_nodes
                ]
            )
        config: dict[str, Any] = {"name": operation.name}
        dtype = getattr(operation, "compute_dtype", None)
        if isinstance(dtype, str):
            config["dtype"] = dtype
        layers.append(
            {
                "class_name": type(operation).__name__,
                "config": config,
                "inbound_nodes": [{"args": args, "kwargs": {}}],
            }
        )
    return json.dumps(
        {"class_name": type(model).__name__, "config": {"name": "", "layers": layers}}
    )


def op_graph(model: Any) -> Any:
    """The GraphDef of the model's forward pass (inference), traced as a `tf.function`, its ops
    grouped by layer under the layers' own names (`dense_1/MatMul`).

    Traced layer by layer: a plain `model(x)` puts every op under the model's name scope
    (`functional/`), and Keras 3 opens each layer's scope twice (build, then call), so in a
    graph the call's scope of layer `dense` is named `dense_1`; a layer computing in another
    precision than its input (mixed precision's float32 head) opens one more, for the cast. The
    ops each layer call added are recorded and all their top scopes renamed to the layer's name.
    """
    import tensorflow as tf

    specs = [tf.TensorSpec(shape=t.shape, dtype=t.dtype) for t in model.inputs]
    scopes: dict[str, tuple[str, int]] = {}  # top scope -> (layer, which call of it)
    calls: dict[str, int] = {}

    def forward(*inputs: Any) -> Any:
        graph = tf.compat.v1.get_default_graph()

        def operation_fn(operation: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                before = len(graph.get_operations())
                outputs = operation(*args, **kwargs)
                number = calls.get(operation.name, 0)
                calls[operation.name] = number + 1
                for op in graph.get_operations()[before:]:
                    scopes.setdefault(op.name.split("/")[0], (operation.name, number))
                return outputs

            return call

        return model._run_through_graph(list(inputs), operation_fn=operation_fn)

    graph_def = tf.function(forward).get_concrete_function(*specs).graph.as_graph_def()
    # Scopes that keep their name first: ops outside any layer, and layer scopes already named
    # after their layer; then a layer's first call takes its name (a second call of a shared
    # layer keeps Keras' own `dense_2`), unless another group holds that name.
    owner: dict[str, Any] = {
        node.name.split("/")[0]: None
        for node in graph_def.node
        if node.name.split("/")[0] not in scopes
    }
    for scope, (layer, number) in scopes.items():
        if scope == layer:
            owner.setdefault(scope, (layer, number))
    rename: dict[str, str] = {}
    for scope, (layer, number) in scopes.items():
        if scope == layer:
            continue
        target = layer if number == 0 else scope
        if owner.setdefault(target, (layer, number)) != (layer, number):
            target = scope
            owner.setdefault(scope, (layer, number))
        if target != scope:
            rename[scope] = target

    def renamed(name: str) -> str:
        prefix = "^" if name.startswith("^") else ""
        head, sep, rest = name.removeprefix(prefix).partition("/")
        if sep:
            return f"{prefix}{rename.get(head, head)}/{rest}"
        base, colon, port = head.partition(":")
        return f"{prefix}{rename.get(base, base)}{colon}{port}"

    for node in graph_def.node:
        node.name = renamed(node.name)
        node.input[:] = [renamed(name) for name in node.input]
    return graph_def


# The last traced op graph, by the model's architecture: AutoKeras' final fit rebuilds the best
# trial's model with the same layers and names, and tracing costs about 0.4 s on a CPU.
_graph_cache: dict[str, Any] = {}


def _cached_op_graph(model: Any) -> Any:
    """`op_graph(model)`, traced once per architecture (the model's JSON config)."""
    key = model.to_json()
    if key not in _graph_cache:
        _graph_cache.clear()  # one architecture kept: a trial's, for its final fit
        _graph_cache[key] = op_graph(model)
    return _graph_cache[key]


class TensorBoard(keras.callbacks.TensorBoard):  # type: ignore[misc]
    """Keras' TensorBoard callback with readable runs, per-layer histograms and graphs that
    render, which also reports clean ClearML series and checkpoints.

    The class name must stay `TensorBoard`: Keras Tuner recognises it by name.
    """

    def __init__(
        self,
        log_dir: str,
        histogram_freq: int,
        checkpoint_dir: str,
        sink: ScalarSink | None,
        base_log_dir: str | None = None,
        series_phase: str | None = None,
    ) -> None:
        # Keras' own graphs do not render (module docstring): this callback writes its own.
        super().__init__(log_dir=log_dir, histogram_freq=histogram_freq, write_graph=False)
        self.base_log_dir = base_log_dir or log_dir
        # The first part of the ClearML series names when it is not the run folder's (`trial`
        # for a parallel search's trial task: the same series in every trial, so the Web UI's
        # comparison draws the trials' curves in one graph).
        self.series_phase = series_phase
        self.checkpoint_dir = checkpoint_dir
        self.sink = sink
        # The final fit's hyperparameters for the HParams tab (set by `readable_runs`); Keras
        # Tuner writes the trials' own.
        self.hparams: dict[Any, Any] | None = None
        self._checkpoint: keras.callbacks.ModelCheckpoint | None = None
        self._last_save = 0.0
        self._unsaved: tuple[int, dict[str, Any]] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> TensorBoard:
        # Keras Tuner and AutoKeras deep-copy callbacks for every trial and the final fit. A
        # fresh callback with the same settings is that copy; the sink (the ClearML task's
        # logger) must be shared, never copied.
        return type(self)(
            self.log_dir,
            self.histogram_freq,
            self.checkpoint_dir,
            self.sink,
            self.base_log_dir,
            self.series_phase,
        )

    @property
    def phase(self) -> str:
        return phase_of(self.base_log_dir, self.log_dir)

    @property
    def run_dir(self) -> str:
        """This fit's TensorBoard run folder: `<base>/trial-00` or `<base>/final`."""
        if self.phase == FINAL:
            return os.path.join(self.base_log_dir, FINAL)
        return str(self.log_dir)

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        # The final fit runs with the unpatched log_dir, which would give runs named `train`.
        self._log_write_dir = self.run_dir
        self._train_dir = os.path.join(self.run_dir, "train")
        self._val_dir = os.path.join(self.run_dir, "validation")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._write_graphs()
        if self.hparams is not None:
            self._write_hparams(self.hparams)
        slug = self.phase.replace("-", "_")
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        # The latest weights of each trial and of the final fit, to resume or inspect.
        self._checkpoint = keras.callbacks.ModelCheckpoint(
            filepath=os.path.join(self.checkpoint_dir, f"{slug}.weights.h5"),
            save_weights_only=True,
        )
        self._checkpoint.set_model(self.model)
        self._last_save = time.monotonic()
        self._unsaved = None

    def _write_graphs(self) -> None:
        """The op graph and the conceptual graph (tag `keras`) into the train run.

        A model the tracer cannot handle costs a warning, never the search.
        """
        import tensorflow as tf
        from tensorboard.compat.proto.summary_pb2 import SummaryMetadata

        try:
            graph_def = _cached_op_graph(self.model)
            concept = conceptual_graph(self.model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure; training is unaffected
            console.say(f"warning: no model graph for {self.phase}: {exc}".splitlines()[0])
            return
        metadata = SummaryMetadata()
        metadata.plugin_data.plugin_name = "graph_keras_model"
        metadata.plugin_data.content = b"1"
        with self._train_writer.as_default():
            tf.summary.graph(graph_def)
            tf.summary.write(tag="keras", tensor=tf.constant(concept), step=0, metadata=metadata)
            self._train_writer.flush()

    def _write_hparams(self, values: dict[Any, Any]) -> None:
        """The HParams session of this fit, in its run folder (where Keras Tuner puts a
        trial's), so its `train` run's metrics belong to it."""
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hparams_api

        writer = tf.summary.create_file_writer(self.run_dir)
        with writer.as_default():
            hparams_api.hparams(values, trial_id=self.phase)
        writer.close()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._checkpoint is not None and self._unsaved is not None:
            self._save_checkpoint(*self._unsaved)
            self._unsaved = None
        super().on_train_end(logs)

    def _save_checkpoint(self, epoch: int, logs: dict[str, Any]) -> None:
        # h5py segfaults when the disk fills while it closes the file: check the space first.
        from ak_remote.runtime.diskspace import ensure_space, weights_bytes

        assert self._checkpoint is not None
        ensure_space(self.checkpoint_dir, weights_bytes(self.model))
        self._checkpoint.on_epoch_end(epoch, logs)

    # Keras may run batch-end hooks on its callback thread (CallbackList's async dispatch):
    # this one does nothing there with update_freq="epoch" and no profiling. A callback that is
    # not async-safe makes Keras turn every step's logs into Python numbers before the next
    # step starts, a device sync per step (Keras' own TensorBoard callback is not marked safe).
    async_safe = True

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # A stop signal whose exception was dropped (runtime/signals.py) stops training here,
        # on the training thread: here, not in a callback of its own, since AutoKeras' final
        # fit copies the callback list once per callback (autokeras 3.0.0
        # `_remove_early_stopping`); at a batch's begin, since batch ends may run elsewhere.
        signals.raise_if_stopped()
        super().on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras 3.12 calls tf.summary.scalar for every metric of every batch even with
        # update_freq="epoch", where no writer records them (about 1 ms a batch, measured).
        super().on_train_batch_end(batch, None if self.update_freq == "epoch" else logs)

    def _log_weights(self, epoch: int) -> None:
        """One histogram per trainable weight, tagged by layer (`dense_1/kernel`).

        Keras' own uses the same tag for every layer's kernel (`kernel/histogram`), so one layer
        survives per run, and builds each with about ten eager TensorFlow ops (~70 ms an epoch
        for a small CNN, measured); TensorBoard's numpy `histogram_pb` builds the same summary
        (histograms plugin, 30 buckets) in a fraction of that.
        """
        import numpy as np
        import tensorflow as tf
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb

        # One summary holding every weight's histogram: one write (an eager op, ~1 ms) an
        # epoch instead of one per weight.
        summary = Summary()
        for tag, weight in trainable_weights(self.model):
            summary.value.extend(histogram_pb(tag, np.asarray(weight)).value)
        with self._train_writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=epoch)
            self._train_writer.flush()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self._checkpoint is not None:
            if time.monotonic() - self._last_save >= CHECKPOINT_INTERVAL_S:
                self._save_checkpoint(epoch, dict(logs or {}))
                self._last_save, self._unsaved = time.monotonic(), None
            else:
                self._unsaved = (epoch, dict(logs or {}))
        if self.sink is None:
            return
        phase = self.series_phase or self.phase
        for key, raw in (logs or {}).items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue
            split, metric = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            # Iterations are epochs, counted from 1: the Web UI shows a task's last iteration
            # as "N iterations" (a 1-epoch run must not read "0"), and the x axis as epochs.
            self.sink.report_scalar(f"epoch_{metric}", f"{phase}/{split}", value, epoch + 1)


def trainable_weights(model: Any) -> list[tuple[str, Any]]:
    """(tag, variable) for each trainable weight: `<layer>/<weight>` (Keras 3's variable path,
    which nests for layers inside a nested model), each once."""
    seen: set[str] = set()
    found: list[tuple[str, Any]] = []
    for weight in model.trainable_weights:
        tag = str(getattr(weight, "path", None) or weight.name).replace(":", "_")
        if tag not in seen:
            seen.add(tag)
            found.append((tag, weight))
    return found
