"""Measuring a resource monitor's source: local disk/memory/CPU (psutil), Azure Monitor metrics and log queries,
and application metrics (a queue's depth, the entities of a table matching a filter).

Checks run as one batch per tick (`check_batch`): one Azure credential for every resource monitor due, closed at
the end. psutil runs in a worker thread (CPU % blocks for its interval); the Azure SDK clients (async) ride on the
run's trusted aiohttp session and are closed after each check; the app's storage is read through the read-only
`ctx.app_storage` port.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from monitors.contract import CheckContext, CheckResult
from monitors.resource.config import (
    AppMetric,
    Config,
    ResourceAzureLogSource,
    ResourceAzureMetricSource,
    ResourceLimits,
    ResourceLocalSource,
    ResourceQueueDepthSource,
    ResourceTableCountSource,
    allowed_by,
    refusal,
)
from monitors.resource.evaluate import OUTCOMES, encode_metrics, summary, worst
from shared.errors import StorageError
from shared.text import clip, one_line

log = logging.getLogger("monitor.resource")

LOCAL_TIMEOUT = 20.0  # seconds psutil may take (a hung network file system), plus the CPU interval


# --------------------------------------------------------------------------------------------- check


class CheckError(Exception):
    """The check could not measure: its message is the ERROR the operator reads."""


class Cycle:
    """What the checks of one tick share: the run's sessions and storage port, and one Azure credential, made on
    first use and closed by `close`."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self._credential: Any = None

    def credential(self) -> Any:
        if self._credential is None:
            from monitors.resource import azure

            self._credential = azure.make_credential(self.ctx.settings)
        return self._credential

    async def close(self) -> None:
        if self._credential is not None:
            try:
                await self._credential.close()
            except Exception:
                log.warning("closing the Azure credential failed", exc_info=True)

    async def check(self, cfg: Config) -> CheckResult:
        src = cfg.source
        started = time.perf_counter()
        try:
            if isinstance(src, ResourceLocalSource):
                metrics = await _local(src)
            elif isinstance(src, ResourceAzureMetricSource):
                from monitors.resource import azure

                metrics = [await azure.azure_metric(src, self)]
            elif isinstance(src, ResourceAzureLogSource):
                from monitors.resource import azure

                metrics = [await azure.azure_log(src, self)]
            elif isinstance(src, ResourceQueueDepthSource):
                metrics = [await _queue_depth(src, self)]
            else:
                metrics = [await _table_count(src, self)]
        except CheckError as error:
            return CheckResult("error", _ms(started), clip(str(error), 1000), {"source": src.type})
        except Exception as error:
            log.exception("check of resource monitor %s (%s) failed", cfg.id, cfg.name)
            return CheckResult("error", _ms(started), clip(f"checker failed: {type(error).__name__}: {error}", 1000),
                               {"source": src.type})
        return result_of(src, metrics, _ms(started))


async def check(cfg: Config, ctx: CheckContext) -> CheckResult:
    cycle = Cycle(ctx)
    try:
        return await cycle.check(cfg)
    finally:
        await cycle.close()


async def check_batch(configs: list[Config], ctx: CheckContext) -> dict[str, CheckResult]:
    """Every resource monitor due in this tick, at most `ctx.concurrency` at once, sharing one credential."""
    cycle = Cycle(ctx)
    semaphore = asyncio.Semaphore(max(1, ctx.concurrency))

    async def one(cfg: Config) -> CheckResult:
        async with semaphore:
            return await cycle.check(cfg)

    try:
        results = await asyncio.gather(*(one(cfg) for cfg in configs))
    finally:
        await cycle.close()
    return {cfg.id or "": result for cfg, result in zip(configs, results, strict=True)}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def make_metric(name: str, value: float, unit: str, limits: ResourceLimits, **extra: Any) -> dict[str, Any]:
    value = round(float(value), 4)
    return {"name": name, "value": value, "unit": unit, "status": limits.level(value),
            "warn": limits.warn, "alert": limits.alert, "direction": limits.direction, **extra}


def result_of(src: Any, metrics: list[dict[str, Any]], latency: float) -> CheckResult:
    overall = worst(m["status"] for m in metrics)
    data: dict[str, Any] = {"source": src.type, "overall": overall, "metrics": encode_metrics(metrics),
                            "summary": summary(metrics)}
    if not isinstance(src, ResourceLocalSource):  # one metric
        data["value"] = metrics[0]["value"]
        data["unit"] = metrics[0]["unit"]
    else:  # the scalar fields of the local source (disk_pct, memory_pct, cpu_pct)
        disks = [m["value"] for m in metrics if m.get("path")]
        data["disk_pct"] = max(disks) if disks else None
        for m in metrics:
            if m["name"] in ("memory", "cpu"):
                data[f"{m['name']}_pct"] = m["value"]
    return CheckResult(OUTCOMES[overall], latency, None, {k: v for k, v in data.items() if v is not None})


# -- local (psutil)


def _disk(path: str, limits: ResourceLimits) -> dict[str, Any]:
    import psutil

    try:
        usage = psutil.disk_usage(path)
    except OSError as error:
        raise CheckError(f"disk {path}: {error.strerror or error}") from None
    return make_metric(f"disk {path}", usage.percent, "%", limits, path=path, used_bytes=usage.used,
                       free_bytes=usage.free, total_bytes=usage.total)


def _measure_local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    import psutil

    disk = src.disk  # each null: not watched
    metrics = [_disk(path, disk) for path in src.paths] if disk is not None else []
    if src.memory is not None:
        memory = psutil.virtual_memory()
        metrics.append(make_metric("memory", memory.percent, "%", src.memory, available_bytes=memory.available,
                                   total_bytes=memory.total))
    if src.cpu is not None:
        metrics.append(make_metric("cpu", psutil.cpu_percent(interval=src.cpu_interval_seconds), "%", src.cpu))
    return metrics


async def _local(src: ResourceLocalSource) -> list[dict[str, Any]]:
    """psutil in a worker thread: CPU % sleeps for its interval and a hung file system can block statvfs."""
    limit = LOCAL_TIMEOUT + (src.cpu_interval_seconds if src.cpu is not None else 0)
    try:
        return await asyncio.wait_for(asyncio.to_thread(_measure_local, src), timeout=limit)
    except TimeoutError:
        raise CheckError(f"psutil did not answer within {limit:g} s (a hung file system?)") from None


# -- application metrics (the app's storage account)


def _refuse_unlisted(cycle: Cycle, what: AppMetric, name: str) -> None:
    """Checked again before every read: a stored definition was allowed when written, perhaps no longer (or never,
    for one from before the allow-lists)."""
    problem = refusal(what, name, allowed_by(cycle.ctx.settings, what))
    if problem:
        raise CheckError(problem)


async def _queue_depth(src: ResourceQueueDepthSource, cycle: Cycle) -> dict[str, Any]:
    _refuse_unlisted(cycle, "queue", src.queue)
    try:
        count = await cycle.ctx.app_storage.queue_depth(src.queue)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"queue {src.queue}: {one_line(str(error), 1000)}") from None
    return make_metric(f"queue {src.queue}", count, "messages", src)


async def _table_count(src: ResourceTableCountSource, cycle: Cycle) -> dict[str, Any]:
    _refuse_unlisted(cycle, "table", src.table)
    try:
        count = await cycle.ctx.app_storage.count_entities(src.table, src.filter, src.max_count)
    except LookupError as error:
        raise CheckError(str(error)) from None
    except StorageError as error:
        raise CheckError(f"table {src.table}: {one_line(str(error), 1000)}") from None
    return make_metric(f"table {src.table}", count, "entities", src, capped=count >= src.max_count)
