"""process_batch: OpenAccount, FreezeAccount, UnfreezeAccount, CloseAccount."""

from __future__ import annotations

from paystream.ledger import (
    Account,
    AccountStatus,
    BatchResult,
    CloseAccount,
    DirectoryEntry,
    Event,
    FreezeAccount,
    OpenAccount,
    UnfreezeAccount,
)
from tests.property.sim import OTHER_PARTNER, PARTNER, make_account, run

AT_MS = 1_700_000_000_123


def open_account(
    account_id: str = "acc-1", currency: str = "EUR", *, allow_overdraft: bool = False
) -> OpenAccount:
    return OpenAccount("c1", "r1", PARTNER, AT_MS, account_id, currency, allow_overdraft)


def completed(command_type: str, currency: str | None = None) -> Event:
    return Event(
        "c1:completed", "c1", "Completed", command_type, PARTNER, "acc-1", AT_MS, currency=currency
    )


def rejected(command_type: str, code: str, currency: str | None = None) -> Event:
    return Event(
        "c1:rejected", "c1", "Rejected", command_type, PARTNER, "acc-1", AT_MS,
        currency=currency, code=code,  # type: ignore[arg-type]
    )  # fmt: skip


def directory(status: AccountStatus) -> DirectoryEntry:
    return DirectoryEntry("acc-1", "EUR", PARTNER, status)


def status_command(
    kind: type[FreezeAccount | UnfreezeAccount | CloseAccount], partner_id: str = PARTNER
) -> FreezeAccount | UnfreezeAccount | CloseAccount:
    return kind("c1", "r1", partner_id, AT_MS, "acc-1")


def assert_rejected_without_change(result: BatchResult, command_type: str, code: str) -> None:
    assert result.accounts == {}
    assert result.outputs == (rejected(command_type, code),)


# --- OpenAccount ------------------------------------------------------------------------


def test_open_account_creates_an_open_no_overdraft_account_at_version_one() -> None:
    result = run([open_account()])
    assert result.accounts == {"acc-1": Account("acc-1", "EUR", PARTNER, "open", True, version=1)}


def test_open_account_emits_completed_then_the_directory_entry() -> None:
    result = run([open_account()])
    assert result.outputs == (completed("OpenAccount", "EUR"), directory("open"))


def test_open_account_with_overdraft_allows_debits_beyond_credits() -> None:
    result = run([open_account(allow_overdraft=True)])
    assert not result.accounts["acc-1"].debits_must_not_exceed_credits


def test_open_account_on_an_existing_id_is_account_exists() -> None:
    result = run([open_account()], accounts=[make_account("acc-1", partner_id=OTHER_PARTNER)])
    assert result.accounts == {}
    assert result.outputs == (rejected("OpenAccount", "account_exists", "EUR"),)


def test_open_account_on_a_system_id_is_account_exists() -> None:
    result = run([open_account("@transit:EUR:0")])
    assert result.accounts == {}
    assert result.outputs[0].code == "account_exists"  # type: ignore[union-attr]


def test_open_account_in_a_non_iso_currency_is_currency_mismatch() -> None:
    result = run([open_account(currency="EURO")])
    assert result.accounts == {}
    assert result.outputs == (rejected("OpenAccount", "currency_mismatch", "EURO"),)


# --- FreezeAccount / UnfreezeAccount -------------------------------------------------------


def test_freeze_freezes_an_open_account_and_bumps_its_version() -> None:
    result = run([status_command(FreezeAccount)], accounts=[make_account("acc-1")])
    assert (result.accounts["acc-1"].status, result.accounts["acc-1"].version) == ("frozen", 2)
    assert result.outputs == (completed("FreezeAccount"), directory("frozen"))


def test_freeze_of_a_frozen_account_completes_without_change() -> None:
    result = run([status_command(FreezeAccount)], accounts=[make_account("acc-1", status="frozen")])
    assert result.accounts == {}
    assert result.outputs == (completed("FreezeAccount"), directory("frozen"))


def test_unfreeze_reopens_a_frozen_account() -> None:
    result = run(
        [status_command(UnfreezeAccount)], accounts=[make_account("acc-1", status="frozen")]
    )
    assert result.accounts["acc-1"].status == "open"
    assert result.outputs == (completed("UnfreezeAccount"), directory("open"))


def test_unfreeze_of_an_open_account_completes_without_change() -> None:
    result = run([status_command(UnfreezeAccount)], accounts=[make_account("acc-1")])
    assert result.accounts == {}
    assert result.outputs == (completed("UnfreezeAccount"), directory("open"))


def test_freeze_of_a_closed_account_is_account_closed() -> None:
    result = run([status_command(FreezeAccount)], accounts=[make_account("acc-1", status="closed")])
    assert_rejected_without_change(result, "FreezeAccount", "account_closed")


def test_unfreeze_of_a_closed_account_is_account_closed() -> None:
    result = run(
        [status_command(UnfreezeAccount)], accounts=[make_account("acc-1", status="closed")]
    )
    assert_rejected_without_change(result, "UnfreezeAccount", "account_closed")


def test_freeze_of_a_missing_account_is_account_not_found() -> None:
    assert_rejected_without_change(
        run([status_command(FreezeAccount)]), "FreezeAccount", "account_not_found"
    )


def test_freeze_of_another_partners_account_is_account_not_found() -> None:
    result = run([status_command(FreezeAccount, OTHER_PARTNER)], accounts=[make_account("acc-1")])
    assert result.accounts == {}
    assert result.outputs[0].code == "account_not_found"  # type: ignore[union-attr]


# --- CloseAccount ---------------------------------------------------------------------------


def test_close_closes_an_empty_account() -> None:
    account = make_account("acc-1", credits_minor=50, debits_minor=50)
    result = run([status_command(CloseAccount)], accounts=[account])
    assert result.accounts["acc-1"].status == "closed"
    assert result.outputs == (completed("CloseAccount"), directory("closed"))


def test_close_with_a_balance_is_account_not_empty() -> None:
    result = run([status_command(CloseAccount)], accounts=[make_account("acc-1", credits_minor=1)])
    assert_rejected_without_change(result, "CloseAccount", "account_not_empty")


def test_close_with_a_negative_balance_is_account_not_empty() -> None:
    account = make_account("acc-1", debits_minor=1, no_overdraft=False)
    result = run([status_command(CloseAccount)], accounts=[account])
    assert_rejected_without_change(result, "CloseAccount", "account_not_empty")


def test_close_with_a_pending_amount_is_account_not_empty() -> None:
    account = Account("acc-1", "EUR", PARTNER, "open", True, 0, 40, 40, 0, 1)
    result = run([status_command(CloseAccount)], accounts=[account])
    assert_rejected_without_change(result, "CloseAccount", "account_not_empty")


def test_close_of_a_frozen_account_is_account_frozen() -> None:
    result = run([status_command(CloseAccount)], accounts=[make_account("acc-1", status="frozen")])
    assert_rejected_without_change(result, "CloseAccount", "account_frozen")


def test_close_of_a_closed_account_is_account_closed() -> None:
    result = run([status_command(CloseAccount)], accounts=[make_account("acc-1", status="closed")])
    assert_rejected_without_change(result, "CloseAccount", "account_closed")
