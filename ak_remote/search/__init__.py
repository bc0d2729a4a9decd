"""One AutoKeras search spread over many workers: the controller, its backends and its spec.

Nothing here imports TensorFlow, AutoKeras or Keras Tuner at module level: the oracle adapter
(`oracle.py`) imports Keras Tuner when a controller builds one.
"""
