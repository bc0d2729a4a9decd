"""The model read path, shared by the worker and the laptop side.

- `decode`: raw outputs to AutoKeras' answers, from inference.json alone (numpy only);
- `serving`: the serving SavedModel's metadata, its raw inputs, calling and verifying it;
- `reload`: reloading exported models and checking they answer as the run did.
Imports no other part of ak_remote but `errors`; TensorFlow only inside functions.
"""
