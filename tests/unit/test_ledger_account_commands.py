"""process_batch: OpenAccount, FreezeAccount, UnfreezeAccount, CloseAccount (and finding 3)."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.ledger import (
    Account,
    AccountStatus,
    BatchResult,
    CloseAccount,
    Compensation,
    Confirmation,
    CreditLeg,
    DirectoryEntry,
    Event,
    FreezeAccount,
    RejectionCode,
    UnfreezeAccount,
)
from tests.support.ledger import (
    OTHER_PARTNER,
    PARTNER,
    T0_MS,
    Cluster,
    StatusCommand,
    cid,
    events,
    make_account,
    of_type,
    open_account,
    run,
    status_command,
    step_3_leg,
    transfer,
    withdrawal,
)


def completed(command_type: str, currency: str | None = None) -> Event:
    return Event(
        event_id=f"{cid(1)}:completed",
        payment_id=cid(1),
        type="Completed",
        command_type=command_type,
        partner_id=PARTNER,
        account_id="acc-1",
        issued_at_ms=T0_MS,
        currency=currency,
    )


def rejected(command_type: str, code: RejectionCode, currency: str | None = None) -> Event:
    return Event(
        event_id=f"{cid(1)}:rejected",
        payment_id=cid(1),
        type="Rejected",
        command_type=command_type,
        partner_id=PARTNER,
        account_id="acc-1",
        issued_at_ms=T0_MS,
        currency=currency,
        code=code,
    )


def directory(status: AccountStatus) -> DirectoryEntry:
    return DirectoryEntry("acc-1", "EUR", PARTNER, status)


def command(kind: type[StatusCommand], partner_id: str = PARTNER) -> StatusCommand:
    return status_command(kind, 1, "acc-1", partner_id=partner_id)


def assert_rejected_without_change(result: BatchResult, command_type: str, code: str) -> None:
    assert result.accounts == {}
    assert result.outputs == (rejected(command_type, code),)  # type: ignore[arg-type]


# --- OpenAccount ------------------------------------------------------------------------


def test_open_account_creates_an_open_no_overdraft_account_at_version_one() -> None:
    result = run([open_account(1)])
    assert result.accounts == {"acc-1": make_account("acc-1")}


def test_open_account_emits_completed_then_the_directory_entry() -> None:
    result = run([open_account(1)])
    assert result.outputs == (completed("OpenAccount", "EUR"), directory("open"))


def test_open_account_with_overdraft_allows_debits_beyond_credits() -> None:
    result = run([open_account(1, allow_overdraft=True)])
    assert not result.accounts["acc-1"].debits_must_not_exceed_credits


def test_open_account_on_an_existing_id_is_account_exists() -> None:
    result = run([open_account(1)], accounts=[make_account("acc-1", partner_id=OTHER_PARTNER)])
    assert result.accounts == {}
    assert result.outputs == (rejected("OpenAccount", "account_exists", "EUR"),)


def test_open_account_on_a_system_id_is_account_exists() -> None:
    result = run([open_account(1, "@transit:EUR:0")])
    assert result.accounts == {}
    assert events(result)[0].code == "account_exists"


def test_open_account_in_a_non_iso_currency_is_currency_mismatch() -> None:
    result = run([open_account(1, currency="EURO")])
    assert result.accounts == {}
    assert result.outputs == (rejected("OpenAccount", "currency_mismatch", "EURO"),)


def test_the_same_account_opened_twice_in_one_batch_is_account_exists() -> None:
    result = run([open_account(1), open_account(2, currency="USD")])
    assert [e.code for e in events(result)] == [None, "account_exists"]
    assert result.accounts["acc-1"].currency == "EUR"


# --- FreezeAccount / UnfreezeAccount -------------------------------------------------------


def test_freeze_freezes_an_open_account_and_bumps_its_version() -> None:
    result = run([command(FreezeAccount)], accounts=[make_account("acc-1")])
    assert (result.accounts["acc-1"].status, result.accounts["acc-1"].version) == ("frozen", 2)
    assert result.outputs == (completed("FreezeAccount"), directory("frozen"))


def test_freeze_of_a_frozen_account_completes_without_change() -> None:
    result = run([command(FreezeAccount)], accounts=[make_account("acc-1", status="frozen")])
    assert result.accounts == {}
    assert result.outputs == (completed("FreezeAccount"), directory("frozen"))


def test_unfreeze_reopens_a_frozen_account() -> None:
    result = run([command(UnfreezeAccount)], accounts=[make_account("acc-1", status="frozen")])
    assert result.accounts["acc-1"].status == "open"
    assert result.outputs == (completed("UnfreezeAccount"), directory("open"))


def test_unfreeze_of_an_open_account_completes_without_change() -> None:
    result = run([command(UnfreezeAccount)], accounts=[make_account("acc-1")])
    assert result.accounts == {}
    assert result.outputs == (completed("UnfreezeAccount"), directory("open"))


@pytest.mark.parametrize("kind", [FreezeAccount, UnfreezeAccount, CloseAccount])
def test_a_status_command_on_a_closed_account_is_account_closed(
    kind: type[StatusCommand],
) -> None:
    result = run([command(kind)], accounts=[make_account("acc-1", status="closed")])
    assert_rejected_without_change(result, kind.__name__, "account_closed")


@pytest.mark.parametrize("kind", [FreezeAccount, UnfreezeAccount, CloseAccount])
def test_a_status_command_on_a_missing_account_is_account_not_found(
    kind: type[StatusCommand],
) -> None:
    assert_rejected_without_change(run([command(kind)]), kind.__name__, "account_not_found")


@pytest.mark.parametrize("kind", [FreezeAccount, UnfreezeAccount, CloseAccount])
def test_a_status_command_on_another_partners_account_is_account_not_found(
    kind: type[StatusCommand],
) -> None:
    result = run([command(kind, OTHER_PARTNER)], accounts=[make_account("acc-1")])
    assert result.accounts == {}
    assert events(result)[0].code == "account_not_found"


@pytest.mark.parametrize("kind", [FreezeAccount, UnfreezeAccount, CloseAccount])
def test_a_status_command_on_a_system_account_is_account_not_found(
    kind: type[StatusCommand],
) -> None:
    shard = make_account("@settlement:EUR:0", partner_id=PARTNER, no_overdraft=False)
    result = run([status_command(kind, 1, "@settlement:EUR:0")], accounts=[shard])
    assert result.accounts == {}
    assert events(result)[0].code == "account_not_found"


def test_freeze_is_allowed_while_money_is_pending() -> None:
    account = make_account("acc-1", credits_minor=100, pending_debits_minor=40)
    result = run([command(FreezeAccount)], accounts=[account])
    assert result.accounts["acc-1"].status == "frozen"


# --- CloseAccount ---------------------------------------------------------------------------


def test_close_closes_an_empty_account() -> None:
    account = make_account("acc-1", credits_minor=50, debits_minor=50)
    result = run([command(CloseAccount)], accounts=[account])
    assert result.accounts["acc-1"].status == "closed"
    assert result.outputs == (completed("CloseAccount"), directory("closed"))


def test_close_with_a_balance_is_account_not_empty() -> None:
    result = run([command(CloseAccount)], accounts=[make_account("acc-1", credits_minor=1)])
    assert_rejected_without_change(result, "CloseAccount", "account_not_empty")


def test_close_with_a_negative_balance_is_account_not_empty() -> None:
    account = make_account("acc-1", debits_minor=1, no_overdraft=False)
    result = run([command(CloseAccount)], accounts=[account])
    assert_rejected_without_change(result, "CloseAccount", "account_not_empty")


@pytest.mark.parametrize(
    "account",
    [
        make_account("acc-1", credits_minor=40, pending_debits_minor=40),
        make_account("acc-1", no_overdraft=False, pending_credits_minor=5),
        make_account("acc-1", credits_minor=100, pending_debits_minor=40),
    ],
    ids=["pending debit, zero available", "pending credit", "pending and a balance"],
)
def test_close_with_anything_pending_is_account_has_pending(account: Account) -> None:
    result = run([command(CloseAccount)], accounts=[account])
    assert_rejected_without_change(result, "CloseAccount", "account_has_pending")


def test_close_of_a_frozen_account_is_account_frozen() -> None:
    result = run([command(CloseAccount)], accounts=[make_account("acc-1", status="frozen")])
    assert_rejected_without_change(result, "CloseAccount", "account_frozen")


# --- finding 3: a source closed while its transfer is in flight ------------------------------


def in_flight(destination: str = "dst") -> tuple[Cluster, CreditLeg]:
    """``src`` (100) has sent all of it to ``destination``: step 1 done, the leg not yet."""
    world = Cluster.of([make_account("src", credits_minor=100), make_account("dst")])
    step_1 = world.apply([transfer(1, "src", destination, 100)], partition=0)
    assert [e.type for e in events(step_1)] == ["Debited"]
    (leg,) = of_type(step_1.outputs, CreditLeg)
    return world, leg


def close_src(world: Cluster, n: int) -> RejectionCode | None:
    return events(world.apply([status_command(CloseAccount, n, "src")], partition=0))[0].code


def test_finding_3_close_while_a_transfer_is_in_flight_is_account_has_pending() -> None:
    """Finding 3: ``CloseAccount`` ignored in-flight money. Step 1 now reserves it on the
    source (a pending debit), and the source cannot close until the saga settles; after
    its Confirmation (balance 0, nothing pending) it closes."""
    world, leg = in_flight()
    source = world.account("src")
    assert (source.pending_debits_minor, source.balance_minor) == (100, 100)
    assert close_src(world, 2) == "account_has_pending"
    confirmation = step_3_leg(world.apply([leg], partition=1))
    assert close_src(world, 3) == "account_has_pending"
    world.apply([confirmation], partition=0)
    assert close_src(world, 4) is None
    assert world.account("src").status == "closed"


def test_finding_3_after_a_compensation_the_source_can_close_once_emptied() -> None:
    """Finding 3: after the Compensation the money is back and nothing is pending: the
    source answers ``account_not_empty`` (not ``account_has_pending``) until it is withdrawn,
    then closes."""
    world, leg = in_flight("ghost")
    compensation = step_3_leg(world.apply([leg], partition=1))
    assert close_src(world, 2) == "account_has_pending"
    reversed_ = world.apply([compensation], partition=0)
    assert [e.type for e in events(reversed_)] == ["Reversed"]
    assert close_src(world, 3) == "account_not_empty"
    world.apply([withdrawal(4, "src", 100)], partition=0)
    assert close_src(world, 5) is None


def test_finding_3_a_source_frozen_in_flight_still_gets_its_compensation() -> None:
    """Finding 3: a compensation always lands: a source frozen while its money was in
    flight gets it back (``Reversed``), and stays frozen."""
    world, leg = in_flight("ghost")
    world.apply([status_command(FreezeAccount, 2, "src")], partition=0)
    assert close_src(world, 3) == "account_frozen"
    compensation = step_3_leg(world.apply([leg], partition=1))
    reversed_ = world.apply([compensation], partition=0)
    assert [(e.type, e.code) for e in events(reversed_)] == [("Reversed", "account_not_found")]
    source = world.account("src")
    assert (source.status, source.balance_minor, source.available_minor) == ("frozen", 100, 100)
    assert not source.has_pending


def test_finding_3_a_source_frozen_in_flight_still_gets_its_confirmation_posted() -> None:
    """Finding 3: the reservation guaranteed the money: a frozen source's Confirmation
    posts (``Completed``) and the destination keeps what it received."""
    world, leg = in_flight()
    world.apply([status_command(FreezeAccount, 2, "src")], partition=0)
    confirmation = step_3_leg(world.apply([leg], partition=1))
    completed_ = world.apply([confirmation], partition=0)
    assert [e.type for e in events(completed_)] == ["Completed"]
    source = world.account("src")
    assert (source.status, source.balance_minor, source.has_pending) == ("frozen", 0, False)
    assert world.account("dst").balance_minor == 100


@pytest.mark.parametrize("status", ["open", "frozen", "closed"])
@pytest.mark.parametrize("destination", ["dst", "ghost"], ids=["confirmation", "compensation"])
def test_a_reservation_settles_whatever_the_source_status(
    status: AccountStatus, destination: str
) -> None:
    """Closed with pending cannot arise (CloseAccount refuses it); were the source closed
    by a bug in between, step 3 still lands: the reservation guaranteed the money."""
    world, leg = in_flight(destination)
    world.accounts["src"] = dataclasses.replace(world.account("src"), status=status)
    step_3 = step_3_leg(world.apply([leg], partition=1))
    assert isinstance(step_3, Confirmation if destination == "dst" else Compensation)
    world.apply([step_3], partition=0)
    settled = world.account("src")
    assert (settled.status, settled.has_pending) == (status, False)
    assert settled.balance_minor == (0 if destination == "dst" else 100)
