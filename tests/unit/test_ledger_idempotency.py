"""idempotency: the canonical body hash and the keys."""

from __future__ import annotations

import hashlib

import pytest

from paystream.ledger import (
    Compensation,
    CreditLeg,
    Deposit,
    InvariantViolation,
    OpenAccount,
    Transfer,
    Withdrawal,
    body_sha256,
    idempotency_key,
    is_reserved_request_id,
)

TRANSFER = Transfer("cmd-1", "req-1", "p1", 1_700_000_000_000, "acc-1", "acc-2", 12345, "EUR")


def test_body_hash_is_pinned_for_encoding_version_1() -> None:
    """Changing this value changes every stored record: bump BODY_ENCODING_VERSION instead."""
    expected = "8017bf292802a72ff0db51b7f159783b74c343cb041da65a02691bd66fae74f1"
    assert body_sha256(TRANSFER) == expected


def test_body_hash_follows_the_documented_encoding() -> None:
    text = (
        "paystream.body/1\n"
        "s8:Transfer"
        "s10:account_id" "s5:acc-1"
        "s12:amount_minor" "i12345;"
        "s8:currency" "s3:EUR"
        "s22:destination_account_id" "s5:acc-2"
        "s10:partner_id" "s2:p1"
        "s10:request_id" "s5:req-1"
    )  # fmt: skip
    assert body_sha256(TRANSFER) == hashlib.sha256(text.encode()).hexdigest()


def test_body_hash_counts_code_points_and_encodes_utf8() -> None:
    command = OpenAccount("c", "r", "p1", 1, "acc-é", "EUR", True)
    text = (
        "paystream.body/1\ns11:OpenAccount"
        "s10:account_id" "s5:acc-é"
        "s15:allow_overdraft" "t"
        "s8:currency" "s3:EUR"
        "s10:partner_id" "s2:p1"
        "s10:request_id" "s1:r"
    )  # fmt: skip
    assert body_sha256(command) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_body_hash_ignores_command_id_and_issue_time() -> None:
    again = Transfer("cmd-9", "req-1", "p1", 42, "acc-1", "acc-2", 12345, "EUR")
    assert body_sha256(again) == body_sha256(TRANSFER)


def test_body_hash_includes_the_command_type() -> None:
    deposit = Deposit("c", "r", "p1", 0, "acc", 10, "EUR")
    withdrawal = Withdrawal("c", "r", "p1", 0, "acc", 10, "EUR")
    assert body_sha256(deposit) != body_sha256(withdrawal)


def test_body_hash_tells_booleans_apart() -> None:
    allowed = OpenAccount("c", "r", "p1", 0, "acc", "EUR", True)
    refused = OpenAccount("c", "r", "p1", 0, "acc", "EUR", False)
    assert body_sha256(allowed) != body_sha256(refused)


def test_body_hash_refuses_a_value_outside_the_encoding() -> None:
    with pytest.raises(InvariantViolation, match="unsupported"):
        body_sha256(Deposit("c", "r", "p1", 0, "acc", 1.5, "EUR"))  # type: ignore[arg-type]


def test_body_hash_refuses_a_non_input() -> None:
    with pytest.raises(InvariantViolation, match="not an input"):
        body_sha256("Deposit")  # type: ignore[arg-type]


def test_command_key_is_account_and_request_id() -> None:
    assert idempotency_key(TRANSFER) == ("acc-1", "req-1")


def test_credit_leg_key_is_destination_and_leg_prefix() -> None:
    leg = CreditLeg("t1", "p1", 0, "src", "dst", 5, "EUR")
    assert idempotency_key(leg) == ("dst", "leg:t1")


def test_compensation_key_is_source_and_compensation_prefix() -> None:
    leg = Compensation("t1", "p1", 0, "src", "dst", 5, "EUR", "account_closed")
    assert idempotency_key(leg) == ("src", "compensation:t1")


@pytest.mark.parametrize(
    ("request_id", "reserved"), [("leg:x", True), ("compensation:y", True), ("legs", False)]
)
def test_leg_prefixes_are_reserved_request_ids(request_id: str, reserved: bool) -> None:
    assert is_reserved_request_id(request_id) is reserved
