"""Prometheus metrics (the optional extra ``mnsched[metrics]``): a ``prometheus_client``
collector that reads ``Runtime.stats()`` of every live runtime at scrape time.

    import prometheus_client, mnsched.metrics
    mnsched.metrics.register()            # prometheus_client's default registry
    prometheus_client.start_http_server(9100, addr="127.0.0.1")

Exported (label ``runtime``: the runtime's number in this process; ``p``: the P):
``mnsched_goroutines``, ``mnsched_goroutines_spawned_total``, ``mnsched_procs``,
``mnsched_idle_procs``, ``mnsched_global_queue``, ``mnsched_local_queue{p}``,
``mnsched_steps_total{p}``, ``mnsched_busy_seconds_total{p}``, ``mnsched_parks_total{p}``,
``mnsched_steals_total{p}``, ``mnsched_handoffs_total``, ``mnsched_syscalls_total``,
``mnsched_m_threads``, and two histograms in seconds, sampled (every 64th readying, every
64th step): ``mnsched_sched_latency_seconds`` (runnable to running, Go's
``/sched/latencies:seconds``) and ``mnsched_step_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .sched import live_scheds

if TYPE_CHECKING:
    from .runtime import Runtime

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY

    _default_registry: Any = REGISTRY
except ImportError:  # reported when register() is called
    _default_registry = None


class Collector:
    """Reads the runtimes' stats() at each scrape (nothing is kept in between)."""

    def __init__(self, rt: Runtime | None = None) -> None:
        self.rt = rt

    def _runtimes(self) -> list[tuple[str, Runtime]]:
        if self.rt is not None:
            return [("0", self.rt)]
        rts = sorted((s.rt for s in live_scheds()), key=id)
        return [(str(i), rt) for i, rt in enumerate(rts) if not rt.closed]

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "goroutines": ("goroutines", "Live goroutines."),
            "running_procs": ("procs", "Running Ps (spares included)."),
            "idle_procs": ("idle_procs", "Ps parked with nothing to run."),
            "global_queue": ("global_queue", "Goroutines in the global run queue."),
            "m_threads": ("m_threads", "M threads for blocking calls."),
        }
        counters = {
            "spawned": ("goroutines_spawned", "Goroutines spawned."),
            "handoffs": ("handoffs", "Goroutines and timers sysmon moved off stuck Ps."),
            "syscalls": ("syscalls", "Blocking calls run on M threads."),
        }
        per_p = {
            "ticks": ("steps", "Goroutine steps run by the P."),
            "busy": ("busy_seconds", "Seconds the P spent running goroutines."),
            "parks": ("parks", "Goroutines that parked or waited on the P."),
            "steals_per_p": ("steals", "Successful steals by the P."),
        }
        rts = [(label, rt.stats()) for label, rt in self._runtimes()]
        for key, (name, doc) in gauges.items():
            g = GaugeMetricFamily(f"mnsched_{name}", doc, labels=["runtime"])
            for label, st in rts:
                g.add_metric([label], st[key])
            yield g
        for key, (name, doc) in counters.items():
            c = CounterMetricFamily(f"mnsched_{name}", doc, labels=["runtime"])
            for label, st in rts:
                c.add_metric([label], st[key])
            yield c
        lq = GaugeMetricFamily("mnsched_local_queue", "Goroutines queued on the P.",
                               labels=["runtime", "p"])  # fmt: skip
        for label, st in rts:
            for i, n in enumerate(st["local_queues"]):
                lq.add_metric([label, str(i)], n)
        yield lq
        for key, (name, doc) in per_p.items():
            c = CounterMetricFamily(f"mnsched_{name}", doc, labels=["runtime", "p"])
            for label, st in rts:
                for i, v in enumerate(st[key]):
                    c.add_metric([label, str(i)], v)
            yield c
        for key, name, doc in (
            ("sched_latency", "sched_latency_seconds",
             "Time a runnable goroutine waited for a P (sampled: every 64th readying)."),
            ("step_time", "step_seconds", "Duration of a goroutine's step (every 64th step)."),
        ):  # fmt: skip
            h = HistogramMetricFamily(f"mnsched_{name}", doc, labels=["runtime"])
            for label, st in rts:
                h.add_metric([label], *_buckets(st[key]))
            yield h


def _buckets(hist: dict[str, Any]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs in seconds, and an estimated sum (each bucket's
    count at its midpoint: the histogram keeps no exact sum)."""
    out: list[tuple[str, float]] = []
    total = 0
    est = 0.0
    lower = 0.0
    for bound, n in zip(hist["bounds_us"], hist["counts"], strict=True):
        total += n
        le = "+Inf" if math.isinf(bound) else repr(bound / 1e6)
        out.append((le, float(total)))
        mid = lower if math.isinf(bound) else (lower + bound) / 2
        est += n * mid / 1e6
        lower = bound
    return out, est


def register(registry: Any = None, rt: Runtime | None = None) -> Collector:
    """Register a collector for every live runtime (or only ``rt``) with ``registry``
    (prometheus_client's default one if None). Returns it (``registry.unregister`` it
    to stop)."""
    if _default_registry is None:
        raise ImportError("mnsched.metrics needs prometheus_client: pip install 'mnsched[metrics]'")
    collector = Collector(rt)
    target = _default_registry if registry is None else registry
    target.register(collector)
    return collector
