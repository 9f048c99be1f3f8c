"""A workload for a benchmark's platform: built, its accounts set up, its traffic published."""

from __future__ import annotations

import time
from dataclasses import replace

from paystream import workload
from paystream.runner import TRAFFIC_TIMEOUT_S, Platform
from paystream.workload import Workload

ACCOUNTS = 2_000


def set_up(platform: Platform, transfers: int, *, seed: int, run_id: str) -> Workload:
    """The workload's mix of ``transfers`` over ``ACCOUNTS`` accounts, its accounts opened."""
    mix = replace(workload.Mix(accounts=ACCOUNTS, transfers=transfers),
                  partitions=platform.settings.partitions)  # fmt: skip
    load = workload.build(seed=seed, mix=mix, run_id=run_id, now_ms=int(time.time() * 1000))
    if platform.run_setup(load):
        raise RuntimeError("setup commands without an answer")
    return load


def publish_and_wait(platform: Platform, load: Workload, *, per_second: int) -> None:
    """Publish the traffic at about ``per_second`` and wait for every answer."""
    platform.publish_paced(load, per_second=per_second).join()
    if platform.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S):
        raise RuntimeError("traffic without answers")
