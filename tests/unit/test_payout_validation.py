"""The shell's structural checks of payout commands (``topology.validation``): what makes a
record meaningless is a poison message (``invalid_field``); shapes the core judges (an IBAN's
pattern, the rules' content) pass here with their size bounded."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import Command
from paystream.ledger.screening import RULES_JSON_LENGTH_MAX
from paystream.topology.dlq import PoisonMessage
from paystream.topology.validation import validate_command
from tests.support.ledger import (
    configure_screening,
    decide,
    fail_payout,
    request_payout,
)

PAYOUT = request_payout(1)


@pytest.mark.parametrize(
    "command",
    [
        PAYOUT,
        request_payout(2, iban="not an iban at all"),  # the core's call: invalid_beneficiary
        decide(3, PAYOUT, "override", "a reason"),
        fail_payout(4, PAYOUT),
        configure_screening(5, "{}", key="@screening:17"),
        configure_screening(6, "not json"),  # the core's call: invalid_rules
    ],
)
def test_well_formed_payout_commands_pass(command: Command) -> None:
    validate_command(command)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (dataclasses.replace(PAYOUT, account_id="@payouts-clearing:EUR:0"), "account_id"),
        (dataclasses.replace(PAYOUT, currency="XXQ"), "currency"),
        (dataclasses.replace(PAYOUT, batch_id=""), "batch_id"),
        (dataclasses.replace(PAYOUT, beneficiary_iban="D" * 36), "beneficiary_iban"),
        (dataclasses.replace(PAYOUT, beneficiary_name="n" * 141), "beneficiary_name"),
        (dataclasses.replace(PAYOUT, reference="nul\x00"), "reference"),
        (dataclasses.replace(decide(7, PAYOUT, "approve"), decision="destroy"), "decision"),
        (decide(8, PAYOUT, "reject", "r" * 501), "reason"),
        (decide(9, PAYOUT, "approve", officer=""), "officer"),
        (dataclasses.replace(decide(10, PAYOUT, "approve"), payout_id=""), "payout_id"),
        (fail_payout(11, PAYOUT, reason_code="C" * 36), "reason_code"),
        (configure_screening(12, "{}", key="src"), "account_id"),
        (configure_screening(13, "x" * (RULES_JSON_LENGTH_MAX + 1)), "rules_json"),
    ],
)
def test_malformed_payout_commands_are_poison(command: Command, field: str) -> None:
    with pytest.raises(PoisonMessage) as refused:
        validate_command(command)
    assert refused.value.code == "invalid_field"
    assert refused.value.detail.startswith(f"{field}:")
