"""events.*: event ingest with ``last_metrics``, and the scalar/log/debug-image queries.

Reproduces clearml-server's ``apiserver/services/events.py`` and ``bll/event``: a bad event
(no or unknown type, unknown or locked task/model) is skipped and counted in ``errors_info``,
a batch with nothing added answers 400/131; scalar events keep the task's
``last_metrics[md5(metric)][md5(variant)]`` (value at the highest iteration, min/max, first,
count, mean) and ``last_iteration`` up to date. Queries are answered from memory where the
server asks Elasticsearch (no down-sampling; see README.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from datetime import datetime, timezone
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import PUBLISHED, PUBLISHING, Service
from tests.emulator.services.query import Scrolls
from tests.emulator.state import Doc, ServerState, now_iso

# The iteration the SDK uses for single-value scalars (report_single_value).
SINGLE_SCALAR_ITERATION = -(2**31)


def metric_variants(metrics: Any) -> dict[str, list[str]]:
    """A request's ``metrics`` (``[{metric, variants}]``) as metric -> variants ([] = all)."""
    return {
        m["metric"]: list(m.get("variants") or [])
        for m in metrics or []
        if isinstance(m, dict) and m.get("metric") is not None
    }


def _samples(req: dict[str, Any]) -> int:
    samples = req.get("samples", 2000)
    if not isinstance(samples, int) or not 1 <= samples <= 6000:
        raise errors.ValidationError("samples: 1 to 6000 expected")
    return samples


def _iso_time(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# The fields of an event's id on the server (EventBLL.event_id_fields).
EVENT_ID_FIELDS = ("task", "iter", "metric", "variant", "key")


def event_id(event: Doc) -> str:
    """The id the server stores a (non-log) event under: equal ids overwrite."""
    values = (str(event[f]) for f in EVENT_ID_FIELDS if f in event)
    return hashlib.md5("-".join(values).encode()).hexdigest()


def md5_key(name: str) -> str:
    """The key clearml-server uses for a metric or variant name inside ``last_metrics``."""
    return hashlib.md5(name.encode("utf-8")).hexdigest()


class EventsService(Service):
    """events.add/add_batch/... (see README.md for the list)."""

    def __init__(self, state: ServerState, scrolls: Scrolls) -> None:
        super().__init__(state, scrolls)
        # sample navigation states (debug image / plot history) by scroll id
        self.state_of_samples: dict[str, Doc] = {}
        # owner -> (its event list, position of each non-log event by id, the list's length)
        self._indexes: dict[str, tuple[list[Doc], dict[str, int], int]] = {}

    EVENT_TYPES = (
        "training_stats_scalar",
        "training_stats_vector",
        "training_debug_image",
        "plot",
        "log",
    )

    def add_events(self, events: list[Any]) -> dict[str, Any]:
        """events.add_batch (and events.add): store events, keep last_metrics up to date.

        Like the server, a bad event is counted in ``errors_info`` and skipped; the call fails
        (400/131) only when no event was added.
        """
        if not events:
            raise errors.BatchContainsNoItems()
        added = 0
        errors_info: dict[str, int] = {}

        def reject(reason: str) -> None:
            errors_info[reason] = errors_info.get(reason, 0) + 1

        max_iter: dict[str, int] = {}
        touched: set[str] = set()
        for raw in events:
            if not isinstance(raw, dict):
                raise errors.ValidationError("event must be an object")
            event = {k: v for k, v in raw.items() if v is not None}
            x_axis_label = event.pop("x_axis_label", None)
            allow_locked = bool(event.pop("allow_locked", False))
            model_event = bool(event.get("model_event", False))
            if model_event and "model" in event:
                event["task"] = event.pop("model")
            event["model_event"] = model_event
            event_type = event.get("type")
            if event_type is None:
                reject("Event must have a 'type' field")
                continue
            event_type = event["type"] = str(event_type).replace(" ", "_")
            if event_type not in self.EVENT_TYPES:
                reject(f"Invalid event type {event_type}")
                continue
            if model_event and event_type == "log":
                reject("Task log events are not supported for models")
                continue
            owner = event.get("task")
            if owner is None:
                reject("Event must have a 'task' field")
                continue
            if not self._accepts_events(owner, model_event, allow_locked):
                reject(f"Invalid {'model' if model_event else 'task'} id {owner}")
                continue
            if "ts" in event:
                event["timestamp"] = event.pop("ts")
            event.setdefault("timestamp", int(time.time() * 1000))
            event.setdefault("worker", "")
            if "iter" in event:
                event["iter"] = int(event["iter"])
                max_iter[owner] = max(max_iter.get(owner, 0), event["iter"])
            event["metric"] = event.get("metric") or ""
            event["variant"] = event.get("variant") or ""
            if (
                event_type == "training_stats_scalar"
                and not model_event
                and event.get("value") is not None
            ):
                self._update_last_metrics(self.state.tasks[owner], event, x_axis_label)
            self._store(owner, event)
            touched.add(owner)
            added += 1
        for owner in touched:
            doc = self.state.models.get(owner) or self.state.tasks[owner]
            if owner in max_iter:
                doc["last_iteration"] = max(doc.get("last_iteration") or 0, max_iter[owner])
            if owner in self.state.tasks:
                self.set_last_update(doc)
            else:
                doc["last_update"] = now_iso()
        if not added:
            raise errors.APIError(400, 131, "Events not added", **errors_info)
        return {"added": added, "errors": sum(errors_info.values()), "errors_info": errors_info}

    def _store(self, owner: str, event: Doc) -> None:
        """Keep an event; one that has the id of an earlier one replaces it.

        The server indexes every event but a log line under md5(task-iter-metric-variant[-key])
        with "index" (overwrite): a plot or scalar reported again for the same iteration
        replaces the earlier one (ClearML's optimizer redraws its summary table this way).
        """
        events = self.state.events.setdefault(owner, [])
        if event["type"] == "log":
            events.append(event)
            return
        index = self._event_index(owner, events)
        key = event_id(event)
        position = index.get(key)
        if position is None:
            index[key] = len(events)
            events.append(event)
            self._indexes[owner] = (events, index, len(events))
        else:
            events[position] = event

    def _event_index(self, owner: str, events: list[Doc]) -> dict[str, int]:
        """Positions of an owner's non-log events by id (rebuilt when the list changed by other
        means: deleted, reset, loaded from a state directory)."""
        cached = self._indexes.get(owner)
        if cached is not None and cached[0] is events and cached[2] == len(events):
            return cached[1]
        index = {event_id(e): i for i, e in enumerate(events) if e.get("type") != "log"}
        self._indexes[owner] = (events, index, len(events))
        return index

    def _accepts_events(self, owner: str, model_event: bool, allow_locked: bool) -> bool:
        """The server takes events only for existing, unlocked (unpublished) tasks and models."""
        if model_event:
            model = self.state.models.get(owner)
            return model is not None and (allow_locked or not model.get("ready"))
        task = self.state.tasks.get(owner)
        return task is not None and (allow_locked or task["status"] not in (PUBLISHING, PUBLISHED))

    def _update_last_metrics(self, task: Doc, event: Doc, x_axis_label: Any = None) -> None:
        """Fold one scalar event into the task's last_metrics, as the server's event ingest does."""
        metric, variant = str(event["metric"]), str(event["variant"])
        value, iteration = float(event["value"]), int(event.get("iter", 0))
        order = [iteration, int(event["timestamp"])]
        metrics = task.setdefault("last_metrics", {}).setdefault(md5_key(metric), {})
        entry = metrics.get(md5_key(variant))
        position_key = json.dumps([task["id"], metric, variant])
        positions = self.state.metric_positions
        if entry is None:
            entry = {
                "metric": metric,
                "variant": variant,
                "value": value,
                "min_value": value,
                "min_value_iteration": iteration,
                "max_value": value,
                "max_value_iteration": iteration,
                "first_value": value,
                "first_value_iteration": iteration,
                "count": 0,
                "mean_value": 0.0,
            }
            metrics[md5_key(variant)] = entry
            positions[position_key] = order
        if x_axis_label is not None:
            entry["x_axis_label"] = x_axis_label
        # "value" is the latest by (iteration, timestamp); "first_value" the lowest iteration.
        if order >= positions[position_key]:
            entry["value"] = value
            positions[position_key] = order
        if iteration < entry["first_value_iteration"]:
            entry.update(first_value=value, first_value_iteration=iteration)
        if value < entry["min_value"]:
            entry.update(min_value=value, min_value_iteration=iteration)
        if value > entry["max_value"]:
            entry.update(max_value=value, max_value_iteration=iteration)
        entry["mean_value"] = (entry["mean_value"] * entry["count"] + value) / (entry["count"] + 1)
        entry["count"] += 1

    def ep_events__add(self, req: dict[str, Any]) -> dict[str, Any]:
        self.add_events([req])
        return {}

    # ------------------------------------------------------------ reads
    def _owner(self, owner_id: str, model_events: bool = False) -> Doc:
        """The task (or, for model events, the model) the events belong to."""
        if model_events:
            return self._model(owner_id)
        return self._task(owner_id)

    def _owners(self, ids: list[str], model_events: bool = False) -> dict[str, Doc]:
        source = self.state.models if model_events else self.state.tasks
        missing = [i for i in dict.fromkeys(ids) if i not in source]
        if missing:
            if model_events:
                raise errors.InvalidModelId(ids=missing)
            raise errors.InvalidTaskId(ids=missing)
        return {i: source[i] for i in ids}

    def _events(self, owner: str, event_type: str | None, metrics: Any = None) -> list[Doc]:
        """One task's events of a type ("*"/None: all), restricted to ``metrics``
        (``[{metric, variants}]``: a metric with no variants means all of its variants)."""
        kind = None if event_type in (None, "*") else event_type
        events = self.state.task_events(owner, kind)
        wanted = metric_variants(metrics)
        if wanted:
            events = [
                e
                for e in events
                if e.get("metric") in wanted
                and (not wanted[e["metric"]] or e.get("variant") in wanted[e["metric"]])
            ]
        return events

    def _histogram(
        self, owner: Doc, samples: int, key: str, metrics: Any
    ) -> dict[str, dict[str, Any]]:
        """Scalars per metric/variant as the server aggregates them: single values left out,
        at most ``samples`` points (a histogram over ``key`` with the mean value per bucket)."""
        series: dict[tuple[str, str], list[Doc]] = {}
        for event in self._events(owner["id"], "training_stats_scalar", metrics):
            if event.get("iter", 0) == SINGLE_SCALAR_ITERATION or event.get("value") is None:
                continue
            series.setdefault((event["metric"], event["variant"]), []).append(event)
        labels = {
            (entry["metric"], entry["variant"]): entry.get("x_axis_label")
            for variants in (owner.get("last_metrics") or {}).values()
            for entry in variants.values()
        }
        out: dict[str, dict[str, Any]] = {}
        for (metric, variant), events in sorted(series.items()):
            field = "iter" if key == "iter" else "timestamp"
            xs = [int(e.get(field, 0)) for e in events]
            interval = 1
            if len(xs) >= samples:
                interval = max(1, math.ceil((max(xs) - min(xs) + 1) / samples))
            buckets: dict[int, list[float]] = {}
            for x, event in zip(xs, events, strict=True):
                buckets.setdefault(math.floor(x / interval) * interval, []).append(
                    float(event["value"])
                )
            points = sorted(buckets.items())
            data: dict[str, Any] = {
                "name": variant,
                "x": [_iso_time(x) if key == "iso_time" else x for x, _ in points],
                "y": [sum(values) / len(values) for _, values in points],
            }
            if labels.get((metric, variant)) is not None:
                data["x_axis_label"] = labels[(metric, variant)]
            out.setdefault(metric, {})[variant] = data
        return out

    def ep_events__scalar_metrics_iter_histogram(self, req: dict[str, Any]) -> dict[str, Any]:
        owner = self._owner(req["task"], bool(req.get("model_events")))
        return self._histogram(owner, _samples(req), req.get("key", "iter"), req.get("metrics"))

    def ep_events__multi_task_scalar_metrics_iter_histogram(
        self, req: dict[str, Any]
    ) -> dict[str, Any]:
        tasks = req.get("tasks") or []
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",")]
        if not 1 <= len(tasks) <= 100:
            raise errors.ValidationError("tasks: 1 to 100 tasks expected")
        owners = self._owners(tasks, bool(req.get("model_events")))
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for task_id, owner in owners.items():
            histogram = self._histogram(
                owner, _samples(req), req.get("key", "iter"), req.get("metrics")
            )
            for metric, variants in histogram.items():
                for variant, data in variants.items():
                    data["name"] = owner["name"]
                    out.setdefault(metric, {}).setdefault(variant, {})[task_id] = data
        return {"metrics": out}

    def ep_events__get_scalar_metrics_and_variants(self, req: dict[str, Any]) -> dict[str, Any]:
        owner = self._owner(req["task"], bool(req.get("model_events")))
        metrics: dict[str, dict[str, Any]] = {}
        for event in self._events(owner["id"], "training_stats_scalar"):
            metrics.setdefault(event["metric"], {})[event["variant"]] = {"name": event["variant"]}
        return {"metrics": metrics}

    def ep_events__get_task_latest_scalar_values(self, req: dict[str, Any]) -> dict[str, Any]:
        task = self._task(req["task"])
        grouped: dict[str, list[Doc]] = {}
        for variants in task.get("last_metrics", {}).values():
            for entry in variants.values():
                grouped.setdefault(entry["metric"], []).append(
                    {
                        "name": entry["variant"],
                        "last_value": entry["value"],
                        "last_100_value": entry["value"],
                    }
                )
        events = self.state.task_events(task["id"])
        iters = [e["iter"] for e in events if "iter" in e]
        return {
            "metrics": [{"name": k, "variants": v} for k, v in grouped.items()],
            "last_iter": max(iters) if iters else 0,
            "name": task["name"],
            "status": task["status"],
            "last_timestamp": max((e["timestamp"] for e in events), default=0),
        }

    def ep_events__get_task_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        owners = self._owners(req["tasks"], bool(req.get("model_events")))
        event_type = req.get("event_type")
        result = []
        for task_id in owners:
            names = sorted(
                {
                    e["metric"]
                    for e in self._events(task_id, event_type)
                    if e.get("iter", 0) != SINGLE_SCALAR_ITERATION
                }
            )
            result.append({"task": task_id, "metrics": names})
        return {"metrics": result}

    def ep_events__get_multi_task_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        owners = self._owners(req["tasks"], bool(req.get("model_events")))
        found: dict[str, set[str]] = {}
        for task_id in owners:
            for event in self._events(task_id, req.get("event_type", "*")):
                found.setdefault(event["metric"], set()).add(event["variant"])
        return {
            "metrics": [
                {"metric": metric, "variants": sorted(variants)}
                for metric, variants in sorted(found.items())
            ]
        }

    def ep_events__get_task_single_value_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        owners = self._owners(req["tasks"], bool(req.get("model_events")))
        tasks = []
        for task_id, owner in owners.items():
            values = [
                {k: e.get(k) for k in ("metric", "variant", "value", "timestamp")}
                for e in self._events(task_id, "training_stats_scalar", req.get("metrics"))
                if e.get("iter") == SINGLE_SCALAR_ITERATION
            ]
            if values:
                tasks.append({"task": task_id, "task_name": owner.get("name"), "values": values})
        return {"tasks": tasks}

    def ep_events__get_task_log(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        all_logs = self._events(req["task"], "log", req.get("metrics"))
        logs = sorted(all_logs, key=lambda e: e["timestamp"])
        batch = req.get("batch_size", 5000)
        start = req.get("from_timestamp") or None  # 0: from the newest (oldest), as unset
        earlier = req.get("navigate_earlier", True)
        if earlier:  # newest first, before from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] < start]
            ordered = list(reversed(logs))
        else:  # oldest first, after from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] > start]
            ordered = logs
        page = ordered[:batch]
        if page:
            # Every line of the batch's last timestamp comes along, beyond the batch size, so
            # the next page (strictly before/after that timestamp) loses none of them.
            last = page[-1]["timestamp"]
            page += [e for e in ordered[batch:] if e["timestamp"] == last]
        order = req.get("order")
        if (earlier and order == "asc") or (not earlier and order == "desc"):
            page.reverse()
        return {"events": copy.deepcopy(page), "returned": len(page), "total": len(all_logs)}

    def ep_events__get_task_events(self, req: dict[str, Any]) -> dict[str, Any]:
        self._owner(req["task"], bool(req.get("model_events")))
        events = self._events(req["task"], req.get("event_type"), req.get("metrics"))
        events.sort(key=lambda e: (e.get("iter", 0), e["timestamp"]))
        if req.get("order") == "desc":
            events.reverse()
        scroll_id, position = self.scrolls.take(req.get("scroll_id"))
        size = req.get("batch_size", 500)
        page = events[position : position + size]
        self.scrolls.put(scroll_id, position + len(page))
        return {
            "events": copy.deepcopy(page),
            "returned": len(page),
            "total": len(events),
            "scroll_id": scroll_id,
        }

    def _last_iterations(self, events: list[Doc], iters: int, group: tuple[str, ...]) -> list[Doc]:
        """Events of the last ``iters`` iterations of each group (task, or task+metric+variant)."""
        by_group: dict[tuple[Any, ...], set[int]] = {}
        for event in events:
            by_group.setdefault(tuple(event.get(k) for k in group), set()).add(event.get("iter", 0))
        keep = {k: set(sorted(v, reverse=True)[:iters]) for k, v in by_group.items()}
        return [e for e in events if e.get("iter", 0) in keep[tuple(e.get(k) for k in group)]]

    def ep_events__get_task_plots(self, req: dict[str, Any]) -> dict[str, Any]:
        owner = self._owner(req["task"], bool(req.get("model_events")))
        iters = req.get("iters", 1)
        plots = [
            e
            for e in self._events(owner["id"], "plot", req.get("metrics"))
            if e.get("valid_plot", True)
        ]
        plots = self._last_iterations(plots, iters, ("metric", "variant"))
        plots.sort(key=lambda e: (e["metric"], e["variant"], -e.get("iter", 0)))
        return {
            "plots": copy.deepcopy(plots),
            "returned": len(plots),
            "total": len(plots),
            "scroll_id": None,
        }

    def ep_events__get_multi_task_plots(self, req: dict[str, Any]) -> dict[str, Any]:
        owners = self._owners(req["tasks"], bool(req.get("model_events")))
        iters = req.get("iters", 1)
        per_metric = req.get("last_iters_per_task_metric", True)
        events: list[Doc] = []
        for task_id in owners:
            events += self._events(task_id, "plot", req.get("metrics"))
        group = ("task", "metric", "variant") if per_metric else ("task",)
        events = self._last_iterations(events, iters, group)
        events.sort(
            key=lambda e: (e["metric"], e["variant"], e["task"], e.get("iter", 0)), reverse=True
        )
        # Scrolled in batches (services.events.events_retrieval.multi_plots_batch_size): the
        # Web UI asks again with the scroll id until a batch comes back empty.
        scroll_id, position = self.scrolls.take(req.get("scroll_id"))
        if req.get("no_scroll"):
            position = 0
        batch = events[position : position + 1000]
        self.scrolls.put(scroll_id, position + len(batch))
        plots: dict[str, Any] = {}
        for event in batch:
            leaf = (
                plots.setdefault(event["metric"], {})
                .setdefault(event["variant"], {})
                .setdefault(event["task"], {})
                .setdefault(
                    str(event.get("iter", 0)),
                    {"name": owners[event["task"]].get("name"), "plots": []},
                )
            )
            leaf["plots"].append(copy.deepcopy(event))
        return {
            "plots": plots,
            "returned": len(batch),
            "total": len(events),
            "scroll_id": scroll_id,
        }

    def ep_events__debug_images(self, req: dict[str, Any]) -> dict[str, Any]:
        """The 2.7+ form: the last ``iters`` iterations of each requested task/metric, each
        iteration with its latest event per variant."""
        iters = req.get("iters", 1)
        result = []
        for spec in req["metrics"]:
            self._owner(spec["task"], bool(req.get("model_events")))
            images = [
                e
                for e in self.state.task_events(spec["task"], "training_debug_image")
                if not spec.get("metric") or e.get("metric") == spec["metric"]
            ]
            by_iter: dict[int, dict[tuple[str, str], Doc]] = {}
            for event in sorted(images, key=lambda e: e["timestamp"]):
                by_iter.setdefault(event.get("iter", 0), {})[
                    (event["metric"], event["variant"])
                ] = copy.deepcopy(event)
            chosen = sorted(by_iter.items(), reverse=bool(req.get("navigate_earlier", True)))
            iterations = [
                {
                    "iter": it,
                    "events": sorted(evs.values(), key=lambda e: (e["metric"], e["variant"])),
                }
                for it, evs in chosen[:iters]
            ]
            result.append({"task": spec["task"], "iterations": iterations})
        scroll_id, _ = self.scrolls.take(req.get("scroll_id"))
        return {"metrics": result, "scroll_id": scroll_id}

    def _sample(
        self, task: str, event_type: str, metric: str, variant: str | None, iteration: Any
    ) -> dict[str, Any]:
        events = [
            e
            for e in self.state.task_events(task, event_type)
            if e.get("metric") == metric and (variant is None or e.get("variant") == variant)
        ]
        iterations = sorted({e.get("iter", 0) for e in events})
        if not events:
            return {"events": [], "min_iteration": None, "max_iteration": None, "iteration": None}
        chosen = iteration if iteration in iterations else iterations[-1]
        at = [e for e in events if e.get("iter", 0) == chosen]
        return {
            "events": copy.deepcopy(at),
            "min_iteration": iterations[0],
            "max_iteration": iterations[-1],
            "iteration": chosen,
        }

    def ep_events__get_debug_image_sample(self, req: dict[str, Any]) -> dict[str, Any]:
        self._owner(req["task"], bool(req.get("model_events")))
        found = self._sample(
            req["task"], "training_debug_image", req["metric"], req["variant"], req.get("iteration")
        )
        scroll_id, _ = self.scrolls.take(req.get("scroll_id"))
        self.state_of_samples[scroll_id] = {
            "task": req["task"], "type": "training_debug_image", "metric": req["metric"],
            "variant": req["variant"], "iteration": found["iteration"],
        }  # fmt: skip
        return {
            "scroll_id": scroll_id,
            "event": found["events"][-1] if found["events"] else None,
            "min_iteration": found["min_iteration"],
            "max_iteration": found["max_iteration"],
        }

    def ep_events__next_debug_image_sample(self, req: dict[str, Any]) -> dict[str, Any]:
        state = self.state_of_samples.get(req.get("scroll_id") or "")
        if state is None or state["task"] != req["task"]:
            raise errors.APIError(400, 140, "Invalid scroll id", scroll_id=req.get("scroll_id"))
        events = [
            e
            for e in self.state.task_events(req["task"], "training_debug_image")
            if e.get("metric") == state["metric"] and e.get("variant") == state["variant"]
        ]
        iterations = sorted({e.get("iter", 0) for e in events})
        current = state["iteration"]
        earlier = req.get("navigate_earlier", True)
        options = [i for i in iterations if (i < current if earlier else i > current)]
        result: dict[str, Any] = {"scroll_id": req["scroll_id"], "event": None}
        if options:
            state["iteration"] = options[-1] if earlier else options[0]
            at = [e for e in events if e.get("iter", 0) == state["iteration"]]
            result["event"] = copy.deepcopy(at[-1])
        result.update(
            min_iteration=iterations[0] if iterations else None,
            max_iteration=iterations[-1] if iterations else None,
        )
        return result

    def ep_events__get_plot_sample(self, req: dict[str, Any]) -> dict[str, Any]:
        self._owner(req["task"], bool(req.get("model_events")))
        found = self._sample(req["task"], "plot", req["metric"], None, req.get("iteration"))
        scroll_id, _ = self.scrolls.take(req.get("scroll_id"))
        self.state_of_samples[scroll_id] = {
            "task": req["task"], "type": "plot", "metric": req["metric"], "variant": None,
            "iteration": found["iteration"],
        }  # fmt: skip
        return {
            "scroll_id": scroll_id,
            "events": found["events"],
            "min_iteration": found["min_iteration"],
            "max_iteration": found["max_iteration"],
        }

    def ep_events__delete_for_task(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        return {"deleted": len(self.state.events.pop(req["task"], []))}
