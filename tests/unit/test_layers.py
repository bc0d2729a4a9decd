"""The package's import rule, checked on every import statement (module level or in functions).

Each part of ak_remote (a top-level module or folder) may import only the parts listed for it:
the CLI on top; the job entry; the fleet and the search, each over the launcher; the launcher and
the runtime side by side (neither imports the other); the model read path, the ClearML client
and ak-remote's configuration below them; the shared vocabulary at the bottom. The README's
"Layout" (docs/layout.md) states the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ak_remote.catalog import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "ak_remote"

# The shared vocabulary, each entry importing only those after it.
SHARED = (
    "ui",
    "process",
    "catalog",
    "datasets",
    "params",
    "summary",
    "contract",
    "errors",
    "__init__",
)
BELOW = {name: set(SHARED[i + 1 :]) for i, name in enumerate(SHARED)}
CLIENT = {"clearml_api", "config"}
ALLOWED: dict[str, set[str]] = {
    **BELOW,
    "config": set(SHARED),
    "clearml_api": {"config", *SHARED},
    "model": set(SHARED),
    "runtime": {"model", *SHARED},
    "launcher": {"model", *CLIENT, *SHARED},
    "search": {"launcher", "runtime", "model", *CLIENT, *SHARED},
    "fleet": {"launcher", *CLIENT, *SHARED},
    "entry": {"search", "runtime", *SHARED},
    "commands": {"fleet", "search", "launcher", "runtime", "model", *CLIENT, *SHARED},
    "cli": {"commands", *SHARED},
    "__main__": {"cli"},
}


def part_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    """The parts of ak_remote that `path` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ak_remote":  # `from ak_remote import ui` names a part
                names = [f"ak_remote.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            head, _, rest = name.partition(".")
            if head == "ak_remote":
                part = rest.partition(".")[0]
                found.add(
                    part
                    if (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").is_file()
                    else "__init__"
                )
    return found


def test_every_part_has_a_rule() -> None:
    parts = {part_of(p) for p in PACKAGE.rglob("*.py")}
    assert parts == set(ALLOWED)


def test_imports_follow_the_table() -> None:
    offenders = sorted(
        f"{path.relative_to(PACKAGE)} imports ak_remote.{part}"
        for path in PACKAGE.rglob("*.py")
        for part in imported_parts(path) - {part_of(path)}
        if part not in ALLOWED[part_of(path)]
    )
    assert offenders == []


def test_the_table_has_no_loops() -> None:
    """Depth-first over the allowed edges: no part can reach itself."""

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in ALLOWED[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [part for part in ALLOWED if part in reach(part)] == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text(
        "def f():\n    from ak_remote.launcher import pull\n    import ak_remote.search.read\n"
    )
    assert imported_parts(sample) == {"launcher", "search"}
