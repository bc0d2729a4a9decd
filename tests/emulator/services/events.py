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
import time
from typing import Any

from tests.emulator import errors
from tests.emulator.services.base import PUBLISHED, PUBLISHING, Service
from tests.emulator.state import Doc, ServerState, now_iso

# The iteration the SDK uses for single-value scalars (report_single_value).
SINGLE_SCALAR_ITERATION = -(2**31)


def md5_key(name: str) -> str:
    """The key clearml-server uses for a metric or variant name inside ``last_metrics``."""
    return hashlib.md5(name.encode("utf-8")).hexdigest()


class EventsService(Service):
    """events.add/add_batch/... (see README.md for the list)."""

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        # (task, metric, variant) -> (iteration, timestamp) of the event behind last_metrics' value
        self._last_value_position: dict[tuple[str, str, str], tuple[int, int]] = {}

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
                self._update_last_metrics(self.state.tasks[owner], event)
            self.state.events.setdefault(owner, []).append(event)
            touched.add(owner)
            added += 1
        for owner in touched:
            doc = self.state.models.get(owner) or self.state.tasks[owner]
            if owner in max_iter:
                doc["last_iteration"] = max(doc.get("last_iteration") or 0, max_iter[owner])
            doc["last_update"] = now_iso()
        if not added:
            raise errors.APIError(400, 131, "Events not added", **errors_info)
        return {"added": added, "errors": sum(errors_info.values()), "errors_info": errors_info}

    def _accepts_events(self, owner: str, model_event: bool, allow_locked: bool) -> bool:
        """The server takes events only for existing, unlocked (unpublished) tasks and models."""
        if model_event:
            model = self.state.models.get(owner)
            return model is not None and (allow_locked or not model.get("ready"))
        task = self.state.tasks.get(owner)
        return task is not None and (allow_locked or task["status"] not in (PUBLISHING, PUBLISHED))

    def _update_last_metrics(self, task: Doc, event: Doc) -> None:
        """Fold one scalar event into the task's last_metrics, as the server's event ingest does."""
        metric, variant = str(event["metric"]), str(event["variant"])
        value, iteration = float(event["value"]), int(event.get("iter", 0))
        order = (iteration, int(event["timestamp"]))
        metrics = task.setdefault("last_metrics", {}).setdefault(md5_key(metric), {})
        entry = metrics.get(md5_key(variant))
        position_key = (task["id"], metric, variant)
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
            self._last_value_position[position_key] = order
        # "value" is the latest by (iteration, timestamp); "first_value" the lowest iteration.
        if order >= self._last_value_position[position_key]:
            entry["value"] = value
            self._last_value_position[position_key] = order
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

    def _scalars(self, task_id: str) -> list[Doc]:
        return self.state.task_events(task_id, "training_stats_scalar")

    def ep_events__scalar_metrics_iter_histogram(self, req: dict[str, Any]) -> dict[str, Any]:
        """Scalar series per metric/variant: one point per x (the mean of its values).

        The server aggregates in Elasticsearch: a histogram over ``key`` (iter by default) with
        the average value per bucket, single-value scalars (iter -2**31) left out.
        """
        self._task(req["task"])
        key = req.get("key", "iter")
        wanted = {m["metric"]: set(m.get("variants") or []) for m in req.get("metrics") or []}
        buckets: dict[str, dict[str, dict[Any, list[float]]]] = {}
        for event in self._scalars(req["task"]):
            metric, variant = event["metric"], event["variant"]
            if wanted and (
                metric not in wanted or (wanted[metric] and variant not in wanted[metric])
            ):
                continue
            iteration = event.get("iter", 0)
            if iteration == SINGLE_SCALAR_ITERATION:
                continue
            x = iteration if key == "iter" else event["timestamp"]
            buckets.setdefault(metric, {}).setdefault(variant, {}).setdefault(x, []).append(
                float(event["value"])
            )
        out: dict[str, dict[str, Any]] = {}
        for metric in sorted(buckets):
            out[metric] = {}
            for variant in sorted(buckets[metric]):
                points = sorted(buckets[metric][variant].items())
                out[metric][variant] = {
                    "name": variant,
                    "x": [x for x, _ in points],
                    "y": [sum(values) / len(values) for _, values in points],
                }
        return out

    def ep_events__get_scalar_metrics_and_variants(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        metrics: dict[str, dict[str, Any]] = {}
        for event in self._scalars(req["task"]):
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
        return {"metrics": [{"name": k, "variants": v} for k, v in grouped.items()]}

    def ep_events__get_task_metrics(self, req: dict[str, Any]) -> dict[str, Any]:
        event_type = req.get("event_type")
        result = []
        for task_id in req["tasks"]:
            self._task(task_id)
            names = sorted(
                {e["metric"] for e in self.state.task_events(task_id, event_type) if "metric" in e}
            )
            result.append({"task": task_id, "metrics": names})
        return {"metrics": result}

    def ep_events__get_task_log(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        logs = sorted(self.state.task_events(req["task"], "log"), key=lambda e: e["timestamp"])
        batch = req.get("batch_size", 500)
        start = req.get("from_timestamp")
        earlier = req.get("navigate_earlier", True)
        if earlier:  # newest first, before from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] < start]
            page = list(reversed(logs[-batch:])) if batch else []
        else:  # oldest first, after from_timestamp
            if start is not None:
                logs = [e for e in logs if e["timestamp"] > start]
            page = logs[:batch]
        order = req.get("order")
        if (earlier and order == "asc") or (not earlier and order == "desc"):
            page.reverse()
        total = len(self.state.task_events(req["task"], "log"))
        return {"events": copy.deepcopy(page), "returned": len(page), "total": total}

    def ep_events__get_task_events(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        events = self.state.task_events(req["task"], req.get("event_type"))
        if req.get("metrics"):
            wanted = {m["metric"] for m in req["metrics"]}
            events = [e for e in events if e.get("metric") in wanted]
        events.sort(key=lambda e: (e.get("iter", 0), e["timestamp"]))
        if req.get("order") == "desc":
            events.reverse()
        offset = int(req.get("scroll_id") or 0)
        size = req.get("batch_size", 500)
        page = events[offset : offset + size]
        return {
            "events": copy.deepcopy(page),
            "returned": len(page),
            "total": len(events),
            "scroll_id": str(offset + len(page)),
        }

    def ep_events__debug_images(self, req: dict[str, Any]) -> dict[str, Any]:
        metrics = []
        for spec in req["metrics"]:
            self._task(spec["task"])
            images = [
                e
                for e in self.state.task_events(spec["task"], "training_debug_image")
                if not spec.get("metric") or e.get("metric") == spec["metric"]
            ]
            by_iter: dict[int, list[Doc]] = {}
            for event in images:
                by_iter.setdefault(event.get("iter", 0), []).append(copy.deepcopy(event))
            iterations = [
                {"iter": it, "events": evs}
                for it, evs in sorted(by_iter.items(), reverse=True)[: req.get("iters", 1)]
            ]
            metrics.append(
                {"task": spec["task"], "metric": spec.get("metric"), "iterations": iterations}
            )
        return {"metrics": metrics, "scroll_id": "0"}

    def ep_events__delete_for_task(self, req: dict[str, Any]) -> dict[str, Any]:
        self._task(req["task"])
        return {"deleted": len(self.state.events.pop(req["task"], []))}
