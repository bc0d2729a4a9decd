"""The README's settings table is the configuration's: every key, its variable and default."""

from __future__ import annotations

import dataclasses
import re

from ak_remote.catalog import PROJECT_ROOT
from ak_remote.config import Config

README = PROJECT_ROOT / "README.md"


def test_every_setting_is_documented_with_its_variable_and_default() -> None:
    section = README.read_text(encoding="utf-8").split("## Settings and environment variables")[1]
    section = section.split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `(AK_REMOTE_\w+)` \| ([^|]+) \|", section, re.M)
    documented = {key: (variable, default.strip()) for key, variable, default in rows}
    assert set(documented) == {f.name for f in dataclasses.fields(Config)}
    for field in dataclasses.fields(Config):
        variable, default = documented[field.name]
        assert variable == f"AK_REMOTE_{field.name.upper()}"
        value = getattr(Config(), field.name)
        if value is not None:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert default.strip("`") == shown, (field.name, default, shown)
