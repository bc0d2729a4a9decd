"""The steps of one AutoKeras training: data, search, export, serving model, tracking.

`ak_remote.entry` runs them for `jobs/<job>.py`; the runtime knows no parallel search (that is
ak_remote.search, which gives its parts through `runtime.run.PartSource`) and no launcher.
Importing this package is cheap (no TensorFlow, AutoKeras or ClearML).
"""
