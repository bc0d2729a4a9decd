"""ak-remote: AutoKeras searches on ClearML GPU agents, tracked and reproducible."""

__version__ = "0.1.0"
