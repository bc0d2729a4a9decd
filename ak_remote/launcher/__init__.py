"""The laptop side: what the launcher does through the ClearML server.

Nothing here imports TensorFlow or AutoKeras at module level.
"""
