"""Datasets as the launcher and the worker name them (pure Python, nothing loaded here).

- `references`: what `dataset=` may be (bundled, local, URL, ClearML Dataset), checked cheaply;
- `secrets`: credentials in URLs (masked, refused in parameters, ${NAME} expanded by the worker);
- `reviews`: the bundled synthetic text set.
Loading data is ak_remote.runtime.data.
"""
