"""Mixed precision for AutoKeras searches (the `precision` job parameter).

Setting Keras' global dtype policy before `AutoModel.fit` does nothing: Keras Tuner calls
`keras.backend.clear_session()` before building each trial's model, and that resets the global
policy to float32. So the tuner builds every model (each trial and the final fit) under the policy
itself, then gives the model float32 outputs, as Keras' mixed precision guide asks: the heads'
softmax/sigmoid/last Dense run in float32, so losses are computed from float32 values and the
exported model's outputs are float32 whatever the training precision.
"""

from __future__ import annotations

import contextlib
from typing import Any

FLOAT32 = "float32"
POLICIES = (FLOAT32, "mixed_float16", "mixed_bfloat16")


def with_precision(base: type, policy: str) -> type:
    """`base` (a Keras Tuner/AutoKeras tuner class) building its models under `policy`."""
    if policy == FLOAT32:
        return base

    class MixedPrecision(base):  # type: ignore[misc,valid-type]
        def _build_hypermodel(self, hp: Any) -> Any:
            import keras

            keras.mixed_precision.set_global_policy(policy)
            try:
                model = super()._build_hypermodel(hp)
                # The new output layers' weights belong in the strategy's scope too.
                strategy = getattr(self, "distribution_strategy", None)
                with strategy.scope() if strategy is not None else contextlib.nullcontext():
                    return float32_outputs(model)
            finally:
                # Nothing else in the process (serving export, evaluation) sees the policy.
                keras.mixed_precision.set_global_policy(FLOAT32)

    MixedPrecision.__name__ = MixedPrecision.__qualname__ = f"MixedPrecision{base.__name__}"
    return MixedPrecision


def float32_outputs(model: Any) -> Any:
    """`model` with each output layer that computes in a lower precision rebuilt in float32.

    The layer keeps its name, so the losses and metrics AutoKeras compiled per head (keyed by
    output name) still apply; the model is compiled again with the same arguments, under the
    global mixed policy, so Keras wraps the optimizer for loss scaling (mixed_float16).
    """
    import keras

    outputs = []
    for tensor in model.outputs:
        layer = tensor._keras_history.operation
        if layer.dtype_policy.compute_dtype == FLOAT32:
            outputs.append(tensor)
            continue
        config = layer.get_config()
        config["dtype"] = FLOAT32
        outputs.append(type(layer).from_config(config)(layer.input))
    rebuilt = keras.Model(model.inputs, outputs, name=model.name)
    # Keras keeps the arguments `compile` got (the optimizer before loss-scale wrapping). The
    # loss-scale optimizer is passed as such, so the saved `.keras` file names it and reloads
    # with its state (a plain Adam would skip the saved loss-scale variables).
    arguments = dict(model._compile_config.config)
    optimizer = arguments.get("optimizer")
    if rebuilt.dtype_policy.name == "mixed_float16" and not isinstance(
        optimizer, (keras.optimizers.LossScaleOptimizer, type(None))
    ):
        arguments["optimizer"] = keras.optimizers.LossScaleOptimizer(optimizer)
    rebuilt.compile(**arguments)
    return rebuilt


def output_dtypes(model: Any) -> list[str]:
    """The dtypes of a Keras model's outputs (`float32` for every model this project exports)."""
    return [str(getattr(tensor, "dtype", "")) for tensor in model.outputs]


def device_warning(policy: str, devices: list[str]) -> str | None:
    """What to tell a user who trains in mixed precision where it cannot pay off, else None."""
    if policy == FLOAT32 or any("GPU" in device.upper() for device in devices):
        return None
    return (
        f"precision={policy} on a CPU: Keras emulates the low precision there, so training is "
        "slower than in float32; use it on GPUs (or set precision=float32)"
    )
