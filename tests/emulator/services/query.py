"""The ``*.get_all`` / ``*.get_all_ex`` query language: filters, ordering, paging, projection.

Reproduces clearml-server 2.0's ``GetMixin`` (``apiserver/database/model/base.py``) and
``ProjectionHelper`` (``apiserver/database/projection.py``) on in-memory documents:

- Each collection declares its query options (:class:`QueryOptions`, the server's
  ``get_all_query_options``): pattern fields are regular expressions (``re.search``); list
  fields take a list of values matching any of them, with the operators ``__$not`` (exclude
  the next value), ``__$all``/``__$and`` and ``__$any``/``__$or`` (the values after them must
  all / any match; the first operator also combines the groups), ``__$nop`` (back to "any"), a
  ``-x`` prefix excluding x until the first operator, and ``null`` matching an empty or missing
  field; ``filters`` (2.27) takes ``{field: {any|all: {include, exclude}, op}}`` for list
  fields; range fields take ``[min, max]`` (``null`` for open ends; a missing min also matches
  empty fields); datetime fields take strings with ``>``, ``>=``, ``<``, ``<=`` prefixes; plain
  fields must equal; ``_any_``/``_all_`` (``_or_``/``_and_``) match a case-insensitive pattern
  over several fields. Parameters none of these name are ignored, as on the server; a ``null``
  parameter is not a condition.
- ``order_by``: dotted paths, ``-`` for descending, ``id`` appended so paging is stable; empty
  values of the first order field sort last either way; hyperparameters and metrics compare
  numerically where they are numbers.
- Paging: ``page``/``page_size`` (500 when not given, at most 500), or ``scroll_id`` with
  ``size`` (an unknown or empty scroll id starts a new scroll at 0; ``refresh_scroll`` returns
  everything up to the scroll's position again); the answer then carries ``scroll_id``.
- Projection: ``only_fields`` (``-x`` excludes x) with the id always returned; the ``*_ex``
  reads go through references (``project.name``, ``parent.name``, ``models.output.model.name``,
  ``execution.queue.name``, ``user.name``), and every other reference they return becomes an
  ``{"id": ...}`` object, as the server's join does.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.emulator import errors
from tests.emulator.state import Doc, new_id

MAX_PAGE_SIZE = 500  # services._mongo.max_page_size
SCROLL_EXPIRATION_S = 600  # services._mongo.scroll_state_expiration_seconds
_MISSING = object()

Condition = Callable[[Doc], bool]


@dataclass(frozen=True)
class QueryOptions:
    """One collection's ``get_all_query_options`` and reference fields (path -> collection)."""

    pattern_fields: tuple[str, ...] = ("name",)
    list_fields: tuple[str, ...] = ("tags", "system_tags", "id")
    range_fields: tuple[str, ...] = ()
    datetime_fields: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)
    numeric_prefixes: tuple[str, ...] = ()


_ATTRIBUTED_REFS = {"company": "companies", "user": "users"}
TASK_QUERY = QueryOptions(
    pattern_fields=("name", "comment", "report"),
    list_fields=(
        "id",
        "user",
        "tags",
        "system_tags",
        "type",
        "status",
        "project",
        "parent",
        "hyperparams.*",
        "execution.queue",
        "models.input.model",
    ),
    range_fields=("created", "started", "active_duration", "last_metrics.*", "last_iteration"),
    datetime_fields=("status_changed", "last_update", "last_change"),
    fields=("runtime.*",),
    references={
        **_ATTRIBUTED_REFS,
        "parent": "tasks",
        "project": "projects",
        "models.input.model": "models",
        "models.output.model": "models",
        "execution.queue": "queues",
    },
    numeric_prefixes=("execution.parameters.", "last_metrics.", "hyperparams."),
)
MODEL_QUERY = QueryOptions(
    pattern_fields=("name", "comment"),
    fields=("ready",),
    list_fields=(
        "tags",
        "system_tags",
        "framework",
        "uri",
        "id",
        "user",
        "project",
        "task",
        "parent",
        "metadata.*",
    ),
    range_fields=("created", "last_metrics.*", "last_iteration"),
    datetime_fields=("last_update", "last_change"),
    references={**_ATTRIBUTED_REFS, "parent": "models", "project": "projects", "task": "tasks"},
)
PROJECT_QUERY = QueryOptions(
    pattern_fields=("name", "basename", "description"),
    list_fields=("tags", "system_tags", "id", "parent", "path"),
    range_fields=("last_update",),
    references={**_ATTRIBUTED_REFS, "parent": "projects"},
)
QUEUE_QUERY = QueryOptions(
    pattern_fields=("name",),
    list_fields=("tags", "system_tags", "id", "metadata.*"),
    references={"company": "companies", "user": "users", "entries.task": "tasks"},
)
USER_QUERY = QueryOptions(pattern_fields=(), list_fields=("id",), references={})
COLLECTIONS = {
    "tasks": TASK_QUERY,
    "models": MODEL_QUERY,
    "projects": PROJECT_QUERY,
    "queues": QUEUE_QUERY,
    "users": USER_QUERY,
}


# ---------------------------------------------------------------- paths
def values_at(doc: Any, path: str) -> Any:
    """The value at a dotted path, through lists as MongoDB does (a list of the values found
    in the list's items); ``_MISSING`` when the path is absent."""
    current: Any = doc
    parts = path.split(".")
    for index, part in enumerate(parts):
        if isinstance(current, list):
            found = [values_at(item, ".".join(parts[index:])) for item in current]
            flat: list[Any] = []
            for value in found:
                if value is _MISSING:
                    continue
                flat.extend(value if isinstance(value, list) else [value])
            return flat if found else _MISSING
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def dotted_get(doc: Any, path: str) -> Any:
    """The value at a dotted path, or None."""
    value = values_at(doc, path)
    return None if value is _MISSING else value


def _is_empty(value: Any) -> bool:
    return value is _MISSING or value is None or value == [] or value == ""


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise errors.InvalidRegexError(str(exc), pattern=pattern) from exc


def _matching_params(patterns: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    """The parameter names a list of field patterns (``x.*`` = any under x) names."""
    names: list[str] = []
    for pattern in patterns:
        if pattern.endswith("*"):
            names.extend(p for p in params if p.startswith(pattern[:-1]))
        elif pattern in params:
            names.append(pattern)
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- list fields
def _mongo_op(op: str, value: Any, wanted: list[Any]) -> bool:
    """MongoDB's $in/$nin/$all on a scalar or array field value."""
    present = [] if value is _MISSING or value is None else value
    items = present if isinstance(present, list) else [present]
    if op == "in":
        return any(item in wanted for item in items)
    if op == "nin":
        return not any(item in wanted for item in items)
    if op == "all":
        return bool(wanted) and all(w in items for w in wanted)
    if op == "not__all":
        return not (bool(wanted) and all(w in items for w in wanted))
    raise AssertionError(op)


def list_field_condition(name: str, data: Any) -> Condition:
    """The server's list-field query (``NewListFieldBucketHelper`` in legacy mode)."""
    values = data if isinstance(data, list) else [data]
    actions: dict[str, list[Any]] = {}
    allow_empty = False
    global_and: bool | None = None
    context_and = False  # the default context is "any"
    legacy = True
    unary_not = False
    for value in values:
        if value is None:
            unary_not = False
            allow_empty = True
            if global_and is None:
                global_and = True
            continue
        if not isinstance(value, str):
            raise errors.FieldsValueError(
                "invalid value type, string expected", field=name, value=str(value)
            )
        if value == "__$nop":
            unary_not = False
            context_and, legacy = False, True
            global_and = True if global_and is None else global_and
            continue
        if value.startswith("__$"):
            if unary_not:
                raise errors.FieldsValueError("Value is expected after", field=name)
            if value == "__$not":
                unary_not = True
                continue
            if value in ("__$all", "__$and"):
                context_and = True
            elif value in ("__$any", "__$or"):
                context_and = False
            else:
                raise errors.FieldsValueError("Unsupported operator", field=name, operator=value)
            legacy = False
            if global_and is None:
                global_and = context_and
            continue
        if global_and is None:
            global_and = True
        include = True
        if unary_not:
            include, unary_not = False, False
        elif legacy and value.startswith("-"):
            value = value[1:]
            if not value:
                raise errors.FieldsValueError(
                    "Missing value after the exclude prefix -", field=name
                )
            include = False
        op = ("all" if context_and else "in") if include else "nin"
        actions.setdefault(op, []).append(value)
    if unary_not:
        raise errors.FieldsValueError("Value is expected after", operator="__$not")
    combine = all if global_and is None or global_and else any

    def match(doc: Doc) -> bool:
        value = values_at(doc, name)
        if allow_empty and _is_empty(value):
            return True
        if not actions:
            return not allow_empty
        return combine(_mongo_op(op, value, wanted) for op, wanted in actions.items())

    return match


def list_filter_condition(name: str, data: Any) -> Condition:
    """The 2.27 ``filters`` form: ``{any|all: {include, exclude}, op: and|or}``."""
    if not isinstance(data, dict):
        raise errors.ValidationError(
            "invalid filter for field, dictionary expected", field=name, value=str(data)
        )
    op = data.get("op", "and")
    if op not in ("and", "or") or set(data) - {"any", "all", "op"}:
        raise errors.ValidationError(field=name, value=str(data))
    parts: list[Condition] = []
    for kind in ("any", "all"):
        spec = data.get(kind)
        if not spec:
            continue
        checks: list[tuple[str, list[Any], bool]] = []
        for key, include in (("include", True), ("exclude", False)):
            vals = list(spec.get(key) or [])
            if not vals:
                continue
            empty = None in vals
            vals = [v for v in vals if v is not None]
            if empty:
                checks.append(("size0" if include else "notsize0", [], include))
            if vals:
                modifier = {
                    ("any", True): "in",
                    ("any", False): "not__all",
                    ("all", True): "all",
                    ("all", False): "nin",
                }[(kind, include)]
                checks.append((modifier, vals, include))
        if not checks:
            continue
        joiner = any if kind == "any" else all

        def part(
            doc: Doc,
            checks: list[tuple[str, list[Any], bool]] = checks,
            joiner: Callable[[Iterable[bool]], bool] = joiner,
        ) -> bool:
            value = values_at(doc, name)
            results = []
            for modifier, vals, _ in checks:
                if modifier == "size0":
                    results.append(value == [])
                elif modifier == "notsize0":
                    results.append(value != [])
                else:
                    results.append(_mongo_op(modifier, value, vals))
            return joiner(results)

        parts.append(part)
    if not parts:
        return lambda doc: True
    combine = all if op == "and" else any
    return lambda doc: combine(p(doc) for p in parts)


# ---------------------------------------------------------------- ranges and dates
def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        # epoch seconds (the API's "epoch" form)
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _comparable(value: Any, like: Any) -> Any:
    """``value`` in a form comparable with ``like`` (dates with dates, numbers with numbers)."""
    if isinstance(like, datetime):
        return _as_datetime(value)
    if isinstance(like, (int, float)) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value


def range_condition(name: str, data: Any, dates: bool) -> Condition:
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        raise errors.ValidationError(
            f"Min and max values should be specified for range field {name}"
        )
    low, high = data
    if low is None and high is None:
        raise errors.ValidationError(
            f"At least one of min or max values should be provided for field {name}"
        )
    if dates:
        low = _as_datetime(low) if low is not None else None
        high = _as_datetime(high) if high is not None else None

    def match(doc: Doc) -> bool:
        value = values_at(doc, name)
        if _is_empty(value):
            return low is None
        bound = low if low is not None else high
        item = _comparable(value, bound)
        if item is None:
            return False
        try:
            return (low is None or item >= low) and (high is None or item <= high)
        except TypeError:
            return False

    return match


_ACCESS = re.compile(r"^(?P<prefix>>=|>|<=|<)?(?P<value>.*)$")


def dates_condition(name: str, data: Any) -> Condition:
    values = data if isinstance(data, list) else [data]
    if len(values) == 2 and not any(
        isinstance(v, str) and v.startswith((">", "<")) for v in values if v is not None
    ):
        return range_condition(name, values, dates=True)
    checks: list[tuple[str, datetime]] = []
    for value in values:
        found = _ACCESS.match(str(value))
        parsed = _as_datetime(found.group("value")) if found else None
        if found and parsed is not None:
            checks.append((found.group("prefix") or "==", parsed))

    def match(doc: Doc) -> bool:
        current = _as_datetime(dotted_get(doc, name))
        if current is None:
            return not checks
        ops: dict[str, Callable[[datetime, datetime], bool]] = {
            ">=": lambda a, b: a >= b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            "<": lambda a, b: a < b,
            "==": lambda a, b: a == b,
        }
        return all(ops[op](current, when) for op, when in checks)

    return match


# ---------------------------------------------------------------- the query
def _pattern(name: str, regex: re.Pattern[str]) -> Condition:
    def match(doc: Doc) -> bool:
        value = dotted_get(doc, name)
        return isinstance(value, str) and bool(regex.search(value))

    return match


def _equals(name: str, wanted: Any) -> Condition:
    return lambda doc: bool(dotted_get(doc, name) == wanted)


def _combined(parts: list[Condition], combine: Callable[[Iterable[bool]], bool]) -> Condition:
    return lambda doc: combine(p(doc) for p in parts)


def _text_search(words: list[str]) -> Condition:
    def match(doc: Doc) -> bool:
        texts = [str(doc.get(f) or "").lower() for f in ("name", "id", "comment", "description")]
        return any(w in text for w in words for text in texts)

    return match


def query_condition(req: Mapping[str, Any], options: QueryOptions) -> Condition:
    """All the conditions a ``get_all`` request sets, as one predicate."""
    params = {k: v for k, v in req.items() if v is not None}
    conditions: list[Condition] = []
    filters = params.pop("filters", {})
    if not isinstance(filters, dict):
        raise errors.FieldsValueError("invalid value type, string expected", field="filters")
    for name in options.pattern_fields:
        pattern = params.pop(name, None)
        if pattern:
            conditions.append(_pattern(name, _compile(str(pattern))))
    for name in _matching_params(options.list_fields, filters):
        data = filters[name]
        params.pop(name, None)
        if data:
            conditions.append(list_filter_condition(name, data))
    for name in _matching_params(options.list_fields, params):
        data = params.pop(name)
        if name.startswith("last_metrics."):
            data = _numeric(data)
        conditions.append(list_field_condition(name, data))
    for name in _matching_params(options.range_fields, params):
        data = params.pop(name)
        if name.startswith("last_metrics."):
            data = _numeric(data)
        dates = name in ("created", "started", "last_update")
        conditions.append(range_condition(name, data, dates=dates))
    for name in _matching_params(options.fields, params):
        wanted = params.pop(name)
        conditions.append(_equals(name, wanted))
    for name in options.datetime_fields:
        data = params.pop(name, None)
        if data is not None:
            conditions.append(dates_condition(name, data))
    for key in ("_any_", "_or_", "_all_", "_and_"):
        spec = params.get(key)
        if spec is None:
            continue
        if not isinstance(spec, dict) or not (
            (spec.get("pattern") is None) ^ (spec.get("datetime") is None)
        ):
            raise errors.APIError(400, 16, "incorrect field format", field=key)
        fields = list(spec.get("fields") or [])
        if not fields:
            continue
        combine = any if key in ("_any_", "_or_") else all
        if spec.get("pattern") is not None:
            regex = _compile(str(spec["pattern"]), re.IGNORECASE)
            conditions.append(_combined([_pattern(f, regex) for f in fields], combine))
        else:
            date_fields = [f for f in fields if f in options.datetime_fields]
            if date_fields:
                parts = [dates_condition(f, spec["datetime"]) for f in date_fields]
                conditions.append(_combined(parts, combine))
    search = req.get("search_text")
    if search:
        conditions.append(_text_search([w.lower() for w in str(search).split() if w]))
    return _combined(conditions, all)


def _numeric(value: Any) -> Any:
    def convert(item: Any) -> Any:
        if isinstance(item, str):
            try:
                return float(item)
            except ValueError:
                return item
        return item

    return [convert(v) for v in value] if isinstance(value, list) else convert(value)


# ---------------------------------------------------------------- ordering
_TYPE_RANK = {type(None): 0, int: 1, float: 1, str: 2, dict: 3, list: 4, bool: 5}


def _sort_value(value: Any, numeric: bool) -> tuple[int, Any]:
    if value is _MISSING or value is None:
        return (0, 0)
    if numeric and isinstance(value, str):
        try:
            return (1, float(value))
        except ValueError:
            pass
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, (dict, list)):
        return (_TYPE_RANK[type(value)], str(value))
    return (_TYPE_RANK.get(type(value), 6), value)


def _sort_key(path: str, numeric: bool, descending: bool) -> Callable[[Doc], tuple[int, Any]]:
    """MongoDB's sort key: an array sorts by its smallest (largest, descending) element."""

    def one(value: Any) -> tuple[int, Any]:
        return _sort_value(value, numeric)

    def key(doc: Doc) -> tuple[int, Any]:
        value = values_at(doc, path)
        if isinstance(value, list) and value:
            value = max(value, key=one) if descending else min(value, key=one)
        return one(value)

    return key


def order(docs: list[Doc], order_by: Any, options: QueryOptions, search_text: Any) -> list[Doc]:
    """Sort as ``_get_many_override_none_ordering``: empty first-field values last."""
    fields = [f for f in as_list(order_by) if f]
    if not fields:
        return docs
    if "@text_score" in fields and not search_text:
        raise errors.FieldsValueError(
            "text score cannot be used in order_by when search text is not used"
        )
    fields = [f for f in fields if f != "@text_score"]
    if not any(f in ("id", "-id") for f in fields):
        fields.append("id")
    result = list(docs)
    for spec in reversed(fields):
        descending = spec.startswith("-")
        path = spec.lstrip("-+")
        numeric = path.startswith(options.numeric_prefixes) if options.numeric_prefixes else False

        result.sort(key=_sort_key(path, numeric, descending), reverse=descending)
    first = fields[0].lstrip("-+")
    # The first order field's empty values go last, ascending or descending.
    filled = [d for d in result if not _is_empty(values_at(d, first))]
    empty = [d for d in result if _is_empty(values_at(d, first))]
    return filled + empty


# ---------------------------------------------------------------- paging
@dataclass
class Scrolls:
    """Scroll states by id (the server keeps them in Redis for 10 minutes)."""

    positions: dict[str, tuple[int, float]] = field(default_factory=dict)

    def take(self, scroll_id: str | None) -> tuple[str, int]:
        now = time.time()
        self.positions = {
            k: v for k, v in self.positions.items() if now - v[1] < SCROLL_EXPIRATION_S
        }
        if scroll_id and scroll_id in self.positions:
            return scroll_id, self.positions[scroll_id][0]
        return new_id(), 0

    def put(self, scroll_id: str, position: int) -> None:
        self.positions[scroll_id] = (position, time.time())


def page(docs: list[Doc], req: Mapping[str, Any], scrolls: Scrolls) -> tuple[list[Doc], Doc]:
    """Apply paging (page/page_size, or scroll_id/size); return the page and extra answer
    fields (``scroll_id``)."""
    extra: Doc = {}
    if "scroll_id" in req:
        size = req.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise errors.ValidationError(
                "Integer size parameter greater than 1 should be provided when working with scroll"
            )
        scroll_id, position = scrolls.take(req.get("scroll_id"))
        if req.get("refresh_scroll"):
            size, position = max(position, size), 0
        result = docs[position : position + size]
        scrolls.put(scroll_id, position + len(result))
        extra["scroll_id"] = scroll_id
        return result, extra
    number = req.get("page")
    number = 0 if number is None else number
    size = req.get("page_size")
    size = MAX_PAGE_SIZE if size is None else size
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (number, size)):
        raise errors.ValidationError("page and page_size must be integers")
    if number < 0:
        raise errors.ValidationError("page must be >=0", field="page")
    if size < 1:
        raise errors.ValidationError("page_size must be >0", field="page_size")
    size = min(size, MAX_PAGE_SIZE)
    return docs[number * size : (number + 1) * size], extra


# ---------------------------------------------------------------- projection and joins
def _split_projection(only_fields: Any) -> tuple[list[str], list[str]]:
    fields = [f for f in as_list(only_fields) if isinstance(f, str) and f]
    include = [f[:-2] if f.endswith(".*") else f for f in fields if not f.startswith("-")]
    exclude = [f[1:] for f in fields if f.startswith("-")]
    return include, exclude


def _copy_path(source: Any, target: Doc, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if not isinstance(source, dict) or head not in source:
        return
    value = source[head]
    if not rest:
        target[head] = copy.deepcopy(value)
        return
    if isinstance(value, dict):
        _copy_path(value, target.setdefault(head, {}), rest)
    elif isinstance(value, list):
        existing = target.get(head)
        if not isinstance(existing, list) or len(existing) != len(value):
            existing = target[head] = [{} for _ in value]
        for item, out in zip(value, existing, strict=True):
            _copy_path(item, out, rest)


def _drop_path(doc: Any, parts: list[str]) -> None:
    if isinstance(doc, list):
        for item in doc:
            _drop_path(item, parts)
        return
    if not isinstance(doc, dict) or parts[0] not in doc:
        return
    if len(parts) == 1:
        del doc[parts[0]]
    else:
        _drop_path(doc[parts[0]], parts[1:])


def project(doc: Doc, only_fields: Any) -> Doc:
    """``doc`` restricted to ``only_fields`` (dotted paths, ``-x`` excludes), id included."""
    include, exclude = _split_projection(only_fields)
    if include:
        out: Doc = {"id": doc["id"]}
        for path in include:
            _copy_path(doc, out, path.split("."))
    else:
        out = copy.deepcopy(doc)
    for path in exclude:
        _drop_path(out, path.split("."))
    return out


Resolver = Callable[[str, list[str]], dict[str, Doc]]


def _replace_refs(doc: Any, parts: list[str], replace: Callable[[Any], Any]) -> None:
    """Replace the value(s) at a dotted path (through lists) with ``replace(value)``."""
    if isinstance(doc, list):
        for item in doc:
            _replace_refs(item, parts, replace)
        return
    if not isinstance(doc, dict) or parts[0] not in doc:
        return
    if len(parts) == 1:
        doc[parts[0]] = replace(doc[parts[0]])
    else:
        _replace_refs(doc[parts[0]], parts[1:], replace)


def join(docs: list[Doc], only_fields: Any, options: QueryOptions, resolve: Resolver) -> list[Doc]:
    """Project ``docs`` for a ``*_ex`` read: through references, the rest as ``{"id": ...}``.

    ``resolve(collection, ids)`` returns the referenced documents by id (absent ids missing).
    """
    include, exclude = _split_projection(only_fields)
    ref_subfields: dict[str, list[str]] = {}
    plain: list[str] = []
    for path in include:
        for ref in sorted(options.references, key=len, reverse=True):
            if path.startswith(ref + "."):
                ref_subfields.setdefault(ref, []).append(path[len(ref) + 1 :])
                break
        else:
            plain.append(path)
    fields = [*plain, *ref_subfields] if include else []
    projected = [project(d, fields + [f"-{e}" for e in exclude]) for d in docs]
    for ref, subfields in ref_subfields.items():
        ids: list[str] = []
        for doc in projected:
            value = values_at(doc, ref)
            ids.extend(v for v in as_list(value) if isinstance(v, str) and v)
        collection = options.references[ref]
        found = resolve(collection, list(dict.fromkeys(ids)))
        inner = [x for x in subfields if x and x != "*"]
        # The referenced documents are joined in turn (parent.project.name), as the server's
        # get_many_with_join does for each reference's projection.
        joined = join(
            list(found.values()),
            None if "*" in subfields or not inner else inner,
            COLLECTIONS.get(collection, QueryOptions(references={})),
            resolve,
        )
        by_id = {d["id"]: d for d in joined}

        def expand(value: Any, by_id: dict[str, Doc] = by_id) -> Any:
            if not isinstance(value, str) or not value:
                return value
            target = by_id.get(value)
            return {"id": value} if target is None else copy.deepcopy(target)

        for doc in projected:
            _replace_refs(doc, ref.split("."), expand)
    for ref in options.references:
        if ref in ref_subfields:
            continue
        for doc in projected:
            _replace_refs(
                doc,
                ref.split("."),
                lambda v: {"id": v} if isinstance(v, str) and v else v,
            )
    return projected


def select(
    docs: Iterable[Doc],
    req: Mapping[str, Any],
    options: QueryOptions,
    scrolls: Scrolls,
    *,
    condition: Condition | None = None,
    resolve: Resolver | None = None,
) -> tuple[list[Doc], Doc]:
    """Filter, order, page and project documents as ``get_all`` (or, with ``resolve``, as
    ``get_all_ex``) does; return them and the extra answer fields (``scroll_id``)."""
    match = query_condition(req, options)
    result = [d for d in docs if match(d) and (condition is None or condition(d))]
    result = order(result, req.get("order_by"), options, req.get("search_text"))
    result, extra = page(result, req, scrolls)
    only = req.get("only_fields")
    if resolve is not None:
        return join(result, only, options, resolve), extra
    return [project(d, only) for d in result], extra


def sorted_tags(docs: list[Doc]) -> list[Doc]:
    """Tags are returned sorted (the server's conform_output_tags)."""
    for doc in docs:
        for name in ("tags", "system_tags"):
            if isinstance(doc.get(name), list):
                doc[name] = sorted(doc[name])
    return docs
