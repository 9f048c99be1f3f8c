"""Pid files, detached processes and bounded waits, shared by the launchers."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.2
PORT_PAIR_TRIES_MAX = 50
LISTEN_PORT_LOW = 10_000
"""The lowest port free_port hands out (above the well-known defaults people run)."""
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_START_DEFAULT = 32_768


class ServiceError(RuntimeError):
    """A service could not be started, reached or stopped; the message says why."""


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still alive, else ``None``."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def spawn_detached(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in its own session (it outlives us), log to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Signal ``pid`` and wait for it to exit; SIGKILL its group after the timeout."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if wait_until(lambda: not pid_alive(pid), timeout_s=timeout_s):
        return
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        return
    if not wait_until(lambda: not pid_alive(pid), timeout_s=5.0):
        raise ServiceError(f"process {pid} survived SIGKILL")


def wait_until(condition: Callable[[], bool], *, timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody holds right now (for tests and one-off servers).

    Drawn below the kernel's ephemeral range, so the local end of some outgoing
    connection cannot take it between this check and the server's start (a port
    the kernel hands out for ``bind(0)`` can be). Checked by binding it.
    """
    return _free_port(host, pair=False)


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port p with p+1 free too (a service's second listener takes p+1)."""
    return _free_port(host, pair=True)


def _free_port(host: str, *, pair: bool) -> int:
    high = _ephemeral_start() - 2
    for _ in range(PORT_PAIR_TRIES_MAX):
        port = random.randint(LISTEN_PORT_LOW, high)
        if _bindable(host, port) and (not pair or _bindable(host, port + 1)):
            return port
    raise ServiceError(f"no free {'pair of ports' if pair else 'port'} on {host}")


def _ephemeral_start() -> int:
    try:
        start = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        start = EPHEMERAL_START_DEFAULT
    return max(start, LISTEN_PORT_LOW + 1_000)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, *, lines: int) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
