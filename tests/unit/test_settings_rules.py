"""Settings build the money core's rules; every process of the platform gets the same."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paystream.ledger import AMOUNT_MAX_MINOR, Rules
from paystream.runner import child_env
from paystream.settings import Settings


def test_by_default_the_rules_are_the_cores_defaults_with_the_retention() -> None:
    settings = Settings()
    assert settings.rules == Rules(retention_ms=settings.idempotency_retention_s * 1000)
    assert settings.rules.amount_max_minor == AMOUNT_MAX_MINOR


def test_the_amount_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSTREAM_AMOUNT_MAX_MINOR", "250000")
    assert Settings().rules.amount_max_minor == 250_000


@pytest.mark.parametrize("limit", [0, -1, AMOUNT_MAX_MINOR + 1])
def test_an_amount_limit_out_of_range_is_refused(limit: int) -> None:
    with pytest.raises(ValidationError, match="amount_max_minor"):
        Settings(amount_max_minor=limit)


def test_child_processes_get_the_amount_limit() -> None:
    settings = Settings(amount_max_minor=7)
    env = child_env(settings, log_level="warn")
    assert env["PAYSTREAM_AMOUNT_MAX_MINOR"] == "7"
