"""What a benchmark's figures were measured on: one description of the machine for every
scenario's results (cores, processor, memory, system, Python and Kafka client versions, the
load on the machine when the run began)."""

from __future__ import annotations

import os
import platform as host
from pathlib import Path
from typing import Any

import confluent_kafka


def facts(**extra: Any) -> dict[str, Any]:
    """The machine, plus what a scenario adds (the broker's or Postgres's version, ...)."""
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        host.processor(),
    )  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": host.platform(),
        "python": host.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        **extra,
    }
