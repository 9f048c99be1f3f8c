"""free_port and free_port_pair: below the ephemeral range, and never a port someone holds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from paystream.services import process
from paystream.services.process import LISTEN_PORT_LOW, free_port, free_port_pair


def _ephemeral_start() -> int:
    return int(process.EPHEMERAL_RANGE_FILE.read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    for _ in range(50):
        port = free_port()
        assert LISTEN_PORT_LOW <= port < _ephemeral_start()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


@pytest.fixture
def held() -> Iterator[int]:
    """A port of the listening range bound (not listening) by this test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        for port in range(LISTEN_PORT_LOW + 5_000, LISTEN_PORT_LOW + 6_000):
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            yield port
            return
    pytest.fail("no port to hold")


def test_a_bound_port_is_skipped(held: int, monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([held, held + 10])
    monkeypatch.setattr(process.random, "randint", lambda _low, _high: next(draws))
    assert free_port() == held + 10


def test_a_pair_whose_second_port_is_bound_is_skipped(
    held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([held - 1, held + 10])  # held - 1 is free, its neighbour is not
    monkeypatch.setattr(process.random, "randint", lambda _low, _high: next(draws))
    assert free_port_pair() == held + 10


def test_no_free_port_is_an_error(monkeypatch: pytest.MonkeyPatch, held: int) -> None:
    monkeypatch.setattr(process.random, "randint", lambda _low, _high: held)
    with pytest.raises(process.ServiceError, match="no free port"):
        free_port()
