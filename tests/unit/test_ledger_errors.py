"""errors: the always-on invariant check."""

from __future__ import annotations

import pytest

from paystream.ledger import InvariantViolation, ensure


def test_ensure_passes_silently_when_the_condition_holds() -> None:
    ensure(True, "never raised")


def test_ensure_raises_invariant_violation_with_the_message() -> None:
    with pytest.raises(InvariantViolation, match="broken"):
        ensure(False, "broken")
