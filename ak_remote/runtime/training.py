"""Devices, distribution strategy and the AutoKeras search of one job."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ak_remote.catalog import Job
from ak_remote.errors import UsageError
from ak_remote.runtime.callbacks import ScalarSink, TensorBoard, readable_runs
from ak_remote.runtime.data import Dataset
from ak_remote.runtime.precision import with_precision
from ak_remote.runtime.search_state import SearchState
from ak_remote.runtime.settings import Settings

# Test hook: split the CPU into N logical devices so MirroredStrategy can run without GPUs.
LOGICAL_CPUS_ENV = "AK_REMOTE_LOGICAL_CPUS"
PROJECT_NAME = "search"  # the Keras Tuner project folder under <run>/autokeras


def configure_devices(gpus: int) -> None:
    """Apply device settings; must run before anything else touches TensorFlow's devices.

    Raises UsageError for a malformed AK_REMOTE_LOGICAL_CPUS.
    """
    import tensorflow as tf

    physical_gpus = tf.config.list_physical_devices("GPU")
    if gpus and physical_gpus:
        tf.config.set_visible_devices(physical_gpus[:gpus], "GPU")
    for gpu in physical_gpus[: gpus or None]:
        # Without this TensorFlow grabs all GPU memory up front, which starves anything else
        # the agent runs on the same card.
        tf.config.experimental.set_memory_growth(gpu, True)
    raw = os.environ.get(LOGICAL_CPUS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= 64:
            raise UsageError(f"{LOGICAL_CPUS_ENV}={raw!r}", "give a number of CPUs from 1 to 64")
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(raw))]
        )


def make_strategy(distribution: str, gpus: int) -> tuple[Any, list[str]]:
    """The tf.distribute strategy for `distribution` (None for none) and its device names."""
    import tensorflow as tf

    gpu_devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if gpus:
        gpu_devices = gpu_devices[:gpus]
    if distribution == "none" or (distribution == "auto" and len(gpu_devices) < 2):
        return None, gpu_devices[:1] or ["/CPU:0"]
    devices = gpu_devices or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices), devices


def prepare_devices(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """Devices, seed and strategy for a run; returns the strategy and the summary's record."""
    import keras

    from ak_remote.runtime import console
    from ak_remote.runtime.precision import device_warning

    configure_devices(settings.gpus)
    keras.utils.set_random_seed(settings.seed)
    strategy, devices = make_strategy(settings.distribution, settings.gpus)
    warning = device_warning(settings.precision, devices)
    if warning:
        console.say(f"Warning: {warning}")
    return strategy, {
        "strategy": type(strategy).__name__ if strategy is not None else "default",
        "devices": devices,
        "precision": settings.precision,
    }


@dataclass
class SearchResult:
    """What the search leaves behind: the AutoModel, the finally trained model and its fit."""

    automodel: Any
    final_model: Any
    history: Any
    final_epochs: int


# AutoKeras 3.0.0's only text candidate trains its embedding CNN from scratch at a fine-tuning
# rate (AdamW at 2e-5, decayed to 0): with 1-2 trials it stays at chance. The text jobs start from
# the same architecture with from-scratch rates instead, and search only such rates.
TEXT_LEARNING_RATES = (1e-2, 1e-3, 1e-4)


def text_candidates(head: str) -> list[dict[str, Any]]:
    """The first text candidates, for `head` ("classification_head_1" or "regression_head_1")."""
    from autokeras.tuners import task_specific

    base = {
        key: value
        for key, value in task_specific.TEXT_CLASSIFIER[0].items()
        if not key.startswith("classification_head_1/")
    }
    if head == "classification_head_1":
        base[f"{head}/dropout"] = 0
    # "Which word is here" (a keyword fixes the answer): an embedding, one convolution over
    # neighbouring words and max pooling over the whole text express it, and learn it within
    # the default 10 epochs when nothing hides the word: no dropout on the embedding (it blanks
    # the one word that matters in a quarter of the steps), no second convolution block after
    # an intermediate pooling. Measured on a generated keyword set (ten rating words, 2,000
    # filler words): AutoKeras' stack with global max pooling at 1e-2 reached 0.51 test
    # accuracy, without embedding dropout 0.75, this candidate 1.0 (README, "Text jobs learn").
    # Then AutoKeras' own flattening stack at Adam's usual rate.
    first = {
        **base,
        "text_block_1/embedding_1/dropout": 0.0,
        "text_block_1/conv_block_1/num_blocks": 1,
        "text_block_1/conv_block_1/num_layers": 1,
        "text_block_1/conv_block_1/max_pooling": False,
        "text_block_1/spatial_reduction_1/reduction_type": "global_max",
        "optimizer": "adam",
        "learning_rate": 1e-2,
    }
    second = {**base, "optimizer": "adam", "learning_rate": 1e-3}
    return [first, second]


def text_hyperparameters() -> Any:
    """The learning rates the text search may pick (AutoKeras' own list ends at 1e-5)."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Choice("learning_rate", list(TEXT_LEARNING_RATES), default=1e-3)
    return hp


def tuner_for(job: Job, name: str) -> Any:
    """The tuner AutoKeras gets for `tuner=name`.

    `greedy` means AutoKeras' task-specific greedy tuner (what AutoKeras picks when no tuner is
    given): it starts from curated candidates (a small vanilla CNN for images), where plain
    `Greedy` starts from random values that can pick an ImageNet-pretrained ResNet and then
    fails on hosts without internet. AutoKeras has none for image regression; it starts from the
    classifier's first candidate with the head renamed. Text jobs start from `text_candidates`.
    """
    if name != "greedy":
        return name
    from autokeras.tuners import greedy, task_specific

    own = {
        "ImageClassifier": task_specific.ImageClassifierTuner,
        "StructuredDataClassifier": task_specific.StructuredDataClassifierTuner,
        "StructuredDataRegressor": task_specific.StructuredDataRegressorTuner,
    }
    if job.autokeras_class in own:
        return own[job.autokeras_class]
    if job.family == "text":
        initial = text_candidates(
            "classification_head_1" if job.is_classifier else "regression_head_1"
        )
    else:
        initial = [
            {
                key.replace("classification_head_1/", "regression_head_1/"): value
                for key, value in task_specific.IMAGE_CLASSIFIER[0].items()
                if "spatial_reduction" not in key or not key.startswith("classification_head_1/")
            }
        ]

    class InitialTuner(greedy.Greedy):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(initial_hps=initial, **kwargs)

    return InitialTuner


def tuner_class(tuner: Any) -> Any:
    """The AutoKeras tuner class for a tuner name (AutoKeras' own names), or `tuner` itself."""
    if not isinstance(tuner, str):
        return tuner
    from autokeras import tuners

    classes = {
        "greedy": tuners.Greedy,
        "bayesian": tuners.BayesianOptimization,
        "hyperband": tuners.Hyperband,
        "random": tuners.RandomSearch,
    }
    if tuner not in classes:
        raise UsageError(f"unknown tuner {tuner!r}", f"use one of {', '.join(classes)}")
    return classes[tuner]


def fixed_hyperparameters(values: dict[str, Any]) -> Any:
    """A `keras_tuner.HyperParameters` with every value of the candidate `Fixed`."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def build_automodel(
    job: Job,
    settings: Settings,
    data: Dataset,
    directory: str,
    strategy: Any,
    state: SearchState | None = None,
    candidate: Mapping[str, Any] | None = None,
    trial: str | None = None,
) -> Any:
    """The AutoKeras task object for `job`, configured from the parameters.

    With a `state`, the tuner snapshots the search after every trial, and a restored state is
    reloaded (overwrite=False) instead of wiped. With a `candidate` (a parallel search's trial
    or final fit) it trains exactly those values: every one Fixed, no new entries tuned, one
    trial, whose TensorBoard run is named after the search's `trial` when given.
    """
    import autokeras as ak

    cls = getattr(ak, job.autokeras_class)
    tuner = with_precision(
        readable_runs(tuner_class(tuner_for(job, settings.tuner))), settings.precision
    )
    kwargs: dict[str, Any] = {
        "max_trials": settings.max_trials,
        "tuner": state.tuner_class(tuner) if state is not None else tuner,
        "objective": settings.objective,
        "seed": settings.seed,
        "directory": directory,
        "project_name": PROJECT_NAME,
        "overwrite": not (state is not None and state.resumed),
    }
    if settings.tuner == "hyperband" and candidate is None:
        # Hyperband's brackets run up to max_epochs per model: the job's `epochs`. AutoKeras'
        # own default (1000) makes the first bracket hundreds of 2-epoch trials, so max_trials
        # ends a search before any promotion.
        kwargs["max_epochs"] = settings.epochs
    if candidate is not None:
        # Random search over a space where every value is Fixed: exactly the candidate.
        fixed = with_precision(readable_runs(tuner_class("random"), trial), settings.precision)
        kwargs.update(
            max_trials=1,
            tuner=state.tuner_class(fixed) if state is not None else fixed,
            hyperparameters=fixed_hyperparameters(dict(candidate)),
            tune_new_entries=False,
            overwrite=True,
        )
    if strategy is not None:
        kwargs["distribution_strategy"] = strategy
    if job.family == "text" and candidate is None:  # a candidate's own values are all Fixed
        kwargs["hyperparameters"] = text_hyperparameters()
    if job.family == "structured":
        kwargs["column_names"] = data.columns
        kwargs["column_types"] = data.column_types
    return cls(**kwargs)


def search(
    job: Job,
    settings: Settings,
    data: Dataset,
    x: Any,
    y: Any,
    validation_split: float,
    run_dir: str,
    strategy: Any,
    sink: ScalarSink | None,
    state: SearchState | None = None,
    candidate: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Run the AutoKeras search and final fit; returns the retrained model with the AutoModel."""
    import keras

    automodel = build_automodel(
        job, settings, data, os.path.join(run_dir, "autokeras"), strategy, state, candidate
    )
    log_dir = os.path.join(run_dir, "tensorboard")
    callbacks: list[Any] = [
        TensorBoard(
            log_dir,
            settings.histogram_freq,
            os.path.join(run_dir, "checkpoints"),
            sink,
        )
    ]
    patience = settings.early_stopping_patience
    if patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(patience=patience, min_delta=1e-4))
    epochs = settings.epochs
    # AutoKeras' final fit has no validation data but keeps a copy of EarlyStopping, which then
    # warns every epoch; expected, so not worth the user's attention.
    warnings.filterwarnings("ignore", message="Early stopping conditioned on metric `val_")
    # validation_split (not validation_data) is what makes AutoKeras retrain the best
    # candidate on train+validation at the end; the split is the tail, as data.Split records.
    history = automodel.fit(
        x,
        y,
        epochs=epochs,
        batch_size=settings.batch_size,
        validation_split=validation_split,
        callbacks=callbacks,
        verbose=2,
    )
    if history is None or getattr(history, "model", None) is None:
        raise RuntimeError("AutoKeras returned no final fit; the retrained model is unknown")
    final_epochs = len(history.history.get("loss", []))
    return SearchResult(automodel, history.model, history, final_epochs)
