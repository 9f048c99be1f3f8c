"""What ``paystream services status`` reports for one service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: Literal["kafka", "postgres", "clickhouse", "keycloak"]
    address: str
    pid: int | None
    version: str | None
    healthy: bool
    detail: str = ""

    def line(self) -> str:
        health = "healthy" if self.healthy else "DOWN"
        pid = str(self.pid) if self.pid is not None else "-"
        version = self.version or "-"
        text = f"{self.name:<11} {health:<8} pid={pid:<8} version={version:<12} {self.address}"
        return f"{text}  ({self.detail})" if self.detail else text
