"""The ``*.get_all`` query language: filters, ordering, paging and ``only_fields``.

Reproduces clearml-server's GetMixin (``apiserver/database/model/base.py``): pattern fields are
regular expressions (``re.search``); list fields such as tags match any given value, ``-x``
excludes x and ``__$all``/``__$and`` require all; ``_any_``/``_all_`` search several fields;
``order_by`` takes dotted paths with ``-`` for descending; ``page``/``page_size`` or ``size``
page the result; ``only_fields`` projects dotted paths (the id is always returned).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from tests.emulator import errors
from tests.emulator.state import Doc


def dotted_get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _dotted_set(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        doc = doc.setdefault(part, {})
    doc[parts[-1]] = value


def _project_fields(doc: Doc, only_fields: list[str] | None) -> Doc:
    """Return ``doc`` restricted to ``only_fields`` (dotted paths), id always included."""
    if not only_fields:
        return copy.deepcopy(doc)
    out: Doc = {"id": doc["id"]}
    for path in only_fields:
        value = dotted_get(doc, path)
        if value is not None:
            _dotted_set(out, path, copy.deepcopy(value))
    return out


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise errors.InvalidRegexError(str(exc), pattern=pattern) from exc


def _tags_match(doc_tags: list[str], wanted: list[str]) -> bool:
    """clearml-server's list-field filter: plain values match any, ``-x`` excludes x."""
    include = [t for t in wanted if not t.startswith("-") and not t.startswith("__$")]
    exclude = [t[1:] for t in wanted if t.startswith("-")]
    if any(t in doc_tags for t in exclude):
        return False
    if "__$all" in wanted or "__$and" in wanted:
        return all(t in doc_tags for t in include)
    return not include or any(t in doc_tags for t in include)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, str(value))


def select(
    docs: Iterable[Doc],
    req: dict[str, Any],
    *,
    pattern_fields: tuple[str, ...] = ("name",),
    list_fields: tuple[str, ...] = ("id", "tags", "system_tags"),
    value_fields: tuple[str, ...] = (),
) -> list[Doc]:
    """Filter, order, page and project documents the way ``*.get_all`` does."""
    result = list(docs)
    for name in pattern_fields:
        pattern = req.get(name)
        if pattern:
            regex = _compile(pattern)
            result = [d for d in result if regex.search(str(d.get(name) or ""))]
    for name in list_fields:
        wanted = as_list(req.get(name))
        if not wanted:
            continue
        if name in ("tags", "system_tags"):
            result = [d for d in result if _tags_match(d.get(name) or [], wanted)]
        else:
            result = [d for d in result if dotted_get(d, name) in wanted]
    for name in value_fields:
        if name in req:
            wanted = as_list(req[name])
            result = [d for d in result if dotted_get(d, name) in wanted]
    for key in ("_any_", "_all_"):
        spec = req.get(key)
        if isinstance(spec, dict) and spec.get("pattern"):
            regex = _compile(spec["pattern"])
            fields = spec.get("fields") or list(pattern_fields)
            combine = any if key == "_any_" else all
            result = [
                d
                for d in result
                if combine(regex.search(str(dotted_get(d, f) or "")) for f in fields)
            ]
    for order in reversed(as_list(req.get("order_by"))):
        descending = order.startswith("-")
        path = order.lstrip("-+")

        def by_path(doc: Doc, path: str = path) -> tuple[int, Any]:
            return _sort_key(dotted_get(doc, path))

        result.sort(key=by_path, reverse=descending)
    page, page_size = req.get("page"), req.get("page_size")
    if page is not None and page_size:
        result = result[page * page_size : (page + 1) * page_size]
    elif req.get("size"):
        result = result[: req["size"]]
    return [_project_fields(d, req.get("only_fields")) for d in result]
