"""The jobs ak-remote knows: the names users type, their scripts and their parameters.

Pure data: importing this never imports TensorFlow or AutoKeras.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ak_remote.errors import UsageError
from ak_remote.params import ParamSet, common_params, param_set

# The checkout (or image) root holding jobs/; the package sits right under it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Job:
    """One AutoKeras job: its CLI name, entry script, AutoKeras task and parameters."""

    name: str
    family: str  # "image", "text" or "structured"
    kind: str  # "classifier" or "regressor"
    autokeras_class: str
    description: str
    params: ParamSet

    @property
    def script(self) -> str:
        """The entry script, relative to the project root (what templates point agents at)."""
        return f"jobs/{self.name.replace('-', '_')}.py"

    @property
    def script_path(self) -> Path:
        return PROJECT_ROOT / self.script

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"


def _job(name: str, family: str, kind: str, cls: str, dataset: str, description: str) -> Job:
    # What a search can optimise: the metrics AutoKeras logs for this kind of head (a name
    # outside them only failed inside Keras Tuner, after the data was loaded).
    metric = "accuracy" if kind == "classifier" else "mean_squared_error"
    objectives = (f"val_{metric}", "val_loss", metric, "loss")
    objective = "val_accuracy" if kind == "classifier" else "val_loss"
    params = common_params(dataset, objective, objectives)
    return Job(name, family, kind, cls, description, param_set(params))


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        _job(
            "image-classifier",
            "image",
            "classifier",
            "ImageClassifier",
            "digits",
            "classify images (default data: scikit-learn's 8x8 handwritten digits)",
        ),
        _job(
            "image-regressor",
            "image",
            "regressor",
            "ImageRegressor",
            "digits",
            "predict a number from an image (default: the digit's value)",
        ),
        _job(
            "text-classifier",
            "text",
            "classifier",
            "TextClassifier",
            "reviews",
            "classify short texts (default: the bundled synthetic product reviews, by sentiment)",
        ),
        _job(
            "text-regressor",
            "text",
            "regressor",
            "TextRegressor",
            "reviews",
            "predict a number from a text (default: the bundled reviews' star rating)",
        ),
        _job(
            "structured-classifier",
            "structured",
            "classifier",
            "StructuredDataClassifier",
            "wine",
            "classify table rows (default: scikit-learn's wine data)",
        ),
        _job(
            "structured-regressor",
            "structured",
            "regressor",
            "StructuredDataRegressor",
            "diabetes",
            "predict a number from table rows (default: scikit-learn's diabetes data)",
        ),
    )
}


def get_job(name: str) -> Job:
    """The job called `name`; raises UsageError listing the known jobs."""
    key = name.strip().lower().replace("_", "-")
    if key not in JOBS:
        raise UsageError(f"unknown job {name!r}", f"known jobs: {', '.join(JOBS)}")
    return JOBS[key]
