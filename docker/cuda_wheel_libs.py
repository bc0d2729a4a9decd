"""Print the library folders of the NVIDIA CUDA wheels installed for this interpreter.

The GPU image writes them to /etc/ld.so.conf.d/ so the dynamic linker finds the CUDA and cuDNN
versions TensorFlow was built with (pinned in requirements/worker-gpu.lock) first, before any
system copies a base image might ship. Standard library only.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def cuda_library_dirs() -> list[Path]:
    """`<site-packages>/nvidia/<component>/lib` for every installed nvidia-* wheel, sorted."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = {
        lib
        for base in spec.submodule_search_locations
        for lib in Path(base).glob("*/lib")
        if lib.is_dir()
    }
    return sorted(found)


def main() -> int:
    dirs = cuda_library_dirs()
    if not dirs:
        print("no nvidia-* CUDA wheel is installed", file=sys.stderr)
        return 1
    for lib in dirs:
        print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
