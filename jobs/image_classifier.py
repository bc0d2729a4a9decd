"""AutoKeras job `image-classifier`: search, export, verify, track (ak_remote.entry)."""

import sys
from pathlib import Path

# An agent runs this file from the checkout root; make the package importable without install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ak_remote.entry import main

if __name__ == "__main__":
    raise SystemExit(main("image-classifier"))
