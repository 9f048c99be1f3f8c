"""Hostile input on the real wire (issue 12): every input gets exactly one answer,
and no input can strand, double or mint money or stop a partition.

One platform is shared by the tests that leave the worker running (each test has
its own accounts, partner and currency, so its ledger checks see only its own
money); a test whose worker must stop, or may die on today's code, gets its own.
Every command id is minted for its account's partition (``paystream.ledger.ids``).
Each test gathers what it saw into one ``observed`` dict and compares it with the
``expected`` one, so a failure shows every difference at once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from paystream.ledger import CreditLeg
from paystream.runner import Platform
from paystream.services.process import tail
from paystream.settings import Settings
from tests.e2e.harness import platform
from tests.e2e.hostile import (
    EVENT_WAIT_S,
    SETTLE_S,
    Client,
    answered,
    dead_letters,
    dlq_reasons_for,
    event_copies,
    events_of,
    fill_directory,
    has_event,
    money,
    newer_command,
    now_ms,
    outcome,
    produce_to,
    publish,
    run,
    run_ok,
    settle,
    wait_for,
)

pytestmark = [pytest.mark.integration]

FUNDS_MINOR = 10_000
AMOUNT_MINOR = 300
GARBAGE_SIZE = 999_900
"""Random bytes just under the producer's message.max.bytes (1,000,000)."""
WORKER_EXIT_WAIT_S = 60.0
DLQ_CHECK_EVERY_S = 2.0
EXIT_POLL_S = 0.2
LOG_TAIL_LINES = 200
DIRECTORY_ACCOUNTS = 300_000
"""Rows ahead of the destination's on its directory partition (about 11 MB)."""
LOST_SCHEMA_ID_LEG = b"\x00\x00\x0f\x42\x40\x02"
"""A leg framed with schema id 1,000,000, which the registry never gave out."""


@pytest.fixture(scope="module")
def shared(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with platform(settings, tmp_path_factory.mktemp("hostile"), workers=1) as running:
        yield running


@pytest.fixture
def running(shared: Platform) -> Platform:
    """The shared platform; a worker an earlier test crashed is started again (that test
    failed on ``worker_alive``), so one crash does not fail every later test too."""
    shared.workers.restart_dead()
    return shared


def alive(running: Platform) -> bool:
    return all(worker.alive for worker in running.workers.workers)


# --- F1, F2: a command id names one payment ---------------------------------------------


def test_exact_resend_answers_duplicate_and_journals_once(running: Platform) -> None:
    """F1: the same Transfer twice: one Debited, one Completed, one Duplicate, no re-journal."""
    client = Client.on(running, currency="CHF")
    source = client.account()
    destination = client.account(avoid={client.partition(source)})
    run_ok(running, client.open(source), client.open(destination))
    run_ok(running, client.deposit(source, FUNDS_MINOR))
    transfer = client.transfer(source, destination, AMOUNT_MINOR)
    publish(running, transfer, transfer)
    payment_id = transfer.command_id
    wait_for(running, lambda: has_event(running, payment_id, "Completed"), timeout_s=EVENT_WAIT_S)
    settle(running, client, [client.partition(source), client.partition(destination)])
    wait_for(running, lambda: has_event(running, payment_id, "Duplicate"), timeout_s=SETTLE_S)
    view = money(running, currency=client.currency, accounts=[source], payment_ids=[payment_id])
    observed = {
        "events": dict(event_copies(running, payment_id)),
        "duplicate_of": [
            (e.payment_id, e.original_payment_id)
            for e in events_of(running, payment_id)
            if e.type == "Duplicate"
        ],
        "duplicate_entry_ids": view.duplicate_entry_ids,
        "source_balance": view.balances[source],
        "worker_alive": alive(running),
    }
    assert observed == {
        "events": {"Debited": 1, "Completed": 1, "Duplicate": 1},
        "duplicate_of": [(payment_id, payment_id)],
        "duplicate_entry_ids": [],
        "source_balance": FUNDS_MINOR - AMOUNT_MINOR,
        "worker_alive": True,
    }, running.logs()


def test_command_id_reused_with_another_request_id_is_refused(running: Platform) -> None:
    """F2: one command id, request ids r1 and r2: the second is Rejected command_id_reused."""
    client = Client.on(running, currency="GBP")
    source = client.account()
    destination = client.account(avoid={client.partition(source)})
    run_ok(running, client.open(source), client.open(destination))
    run_ok(running, client.deposit(source, FUNDS_MINOR))
    first = client.transfer(source, destination, AMOUNT_MINOR, request="r1")
    second = client.transfer(
        source, destination, AMOUNT_MINOR, command_id=first.command_id, request="r2"
    )
    publish(running, first, second)
    payment_id = first.command_id
    wait_for(running, lambda: has_event(running, payment_id, "Completed"), timeout_s=EVENT_WAIT_S)
    settle(running, client, [client.partition(source), client.partition(destination)])
    wait_for(running, lambda: has_event(running, payment_id, "Rejected"), timeout_s=SETTLE_S)
    view = money(
        running,
        currency=client.currency,
        accounts=[source, destination],
        payment_ids=[payment_id],
    )
    observed = {
        "events": dict(event_copies(running, payment_id)),
        "rejected_codes": [e.code for e in events_of(running, payment_id) if e.type == "Rejected"],
        "balances": view.balances,
        "mismatches": view.mismatches,
        "transit_ledger": view.transit_ledger,
        "transit_tables": view.transit_tables,
        "worker_alive": alive(running),
    }
    assert observed == {
        "events": {"Debited": 1, "Completed": 1, "Rejected": 1},
        "rejected_codes": ["command_id_reused"],
        "balances": {source: FUNDS_MINOR - AMOUNT_MINOR, destination: AMOUNT_MINOR},
        "mismatches": [],
        "transit_ledger": 0,
        "transit_tables": 0,
        "worker_alive": True,
    }, running.logs()


def test_command_id_reused_on_another_partition_is_invalid(running: Platform) -> None:
    """F2: a used command id sent again for an account on another partition moves nothing."""
    client = Client.on(running, currency="SEK")
    source = client.account()
    other = client.account(avoid={client.partition(source)})
    destination = client.account()
    other_destination = client.account()
    accounts = [source, other, destination, other_destination]
    run_ok(running, *(client.open(a) for a in accounts))
    run_ok(running, client.deposit(source, FUNDS_MINOR), client.deposit(other, FUNDS_MINOR))
    genuine = client.transfer(source, destination, AMOUNT_MINOR)
    run_ok(running, genuine)  # Completed: the id is used, on the partition it was minted for
    reused = client.transfer(other, other_destination, AMOUNT_MINOR, command_id=genuine.command_id)
    publish(running, reused)
    settle(running, client, [client.partition(other)])
    payment_id = genuine.command_id
    wait_for(running, lambda: has_event(running, payment_id, "Rejected"), timeout_s=SETTLE_S)
    view = money(running, currency=client.currency, accounts=accounts, payment_ids=[payment_id])
    observed = {
        "events": dict(event_copies(running, payment_id)),
        "rejected_codes": [e.code for e in events_of(running, payment_id) if e.type == "Rejected"],
        "balances": view.balances,
        "duplicate_entry_ids": view.duplicate_entry_ids,
        "worker_alive": alive(running),
    }
    assert observed == {
        "events": {"Debited": 1, "Completed": 1, "Rejected": 1},
        "rejected_codes": ["command_id_invalid"],
        "balances": {
            source: FUNDS_MINOR - AMOUNT_MINOR,
            other: FUNDS_MINOR,
            destination: AMOUNT_MINOR,
            other_destination: 0,
        },
        "duplicate_entry_ids": [],
        "worker_alive": True,
    }, running.logs()


# --- F4: idempotency keys belong to a partner ---------------------------------------------


def test_other_partners_request_id_does_not_block_the_owner(running: Platform) -> None:
    """F4: p2's Deposit on p1's account with req-42 is refused and leaves p1's req-42 free."""
    owner = Client.on(running, currency="NOK", partner_id="p1")
    intruder = Client.on(running, currency="NOK", partner_id="p2")
    account = owner.account()
    run_ok(running, owner.open(account))
    hostile = intruder.deposit(account, AMOUNT_MINOR, request="req-42")
    hostile_answer = run(running, hostile)[hostile.command_id]
    own = owner.deposit(account, AMOUNT_MINOR, request="req-42")
    own_answer = run(running, own)[own.command_id]
    observed = {
        "p2": outcome(hostile_answer),
        "p1": outcome(own_answer),
        "worker_alive": alive(running),
    }
    assert observed == {
        "p2": ("Rejected", "account_not_found"),
        "p1": ("Completed", None),
        "worker_alive": True,
    }, running.logs()


# --- F5: totals do not saturate shared system accounts ----------------------------------


def test_largest_deposit_does_not_block_the_partition(running: Platform) -> None:
    """F5: Deposit(2**63-1) to A, then Deposit(1) to B on A's partition: both Completed."""
    client = Client.on(running, currency="JPY")
    first = client.account()
    second = client.account(partition=client.partition(first))
    run_ok(running, client.open(first), client.open(second))
    largest = client.deposit(first, 2**63 - 1)
    largest_answer = run(running, largest)[largest.command_id]
    small = client.deposit(second, 1)
    small_answer = run(running, small)[small.command_id]
    observed = {
        "largest": outcome(largest_answer),
        "small": outcome(small_answer),
        "worker_alive": alive(running),
    }
    assert observed == {
        "largest": ("Completed", None),
        "small": ("Completed", None),
        "worker_alive": True,
    }, running.logs()


# --- F6: a record must be on its account's partition ------------------------------------


@pytest.mark.parametrize("misroute", ["key_of_another_account", "explicit_partition"])
def test_command_on_wrong_partition_is_dead_lettered_and_rejected(
    running: Platform, misroute: str
) -> None:
    """F6: OpenAccount(A) on another account's partition: dlq + Rejected wrong_partition."""
    client = Client.on(running, currency="DKK")
    account = client.account()
    elsewhere = client.account(avoid={client.partition(account)})
    misrouted = client.open(account)
    value = running.serde.encode_command(misrouted)
    if misroute == "key_of_another_account":  # murmur2 of the key sends it to partition(B)
        running.publisher.publish_raw(elsewhere.encode(), value)
        running.publisher.flush()
    else:  # the right key, on a partition its key does not hash to
        produce_to(
            running.kafka,
            running.topics.commands,
            key=account.encode(),
            value=value,
            partition=client.partition(elsewhere),
        )
    misrouted_answer = answered(running, [misrouted])[misrouted.command_id]
    keyed_right = client.open(account)
    keyed_right_answer = run(running, keyed_right)[keyed_right.command_id]
    deposit = client.deposit(account, AMOUNT_MINOR)
    deposit_answer = run(running, deposit)[deposit.command_id]
    observed = {
        "misrouted": outcome(misrouted_answer),
        "misrouted_dlq_reasons": dlq_reasons_for(running, value),
        "keyed_right": outcome(keyed_right_answer),
        "deposit": outcome(deposit_answer),
        "worker_alive": alive(running),
    }
    assert observed == {
        "misrouted": ("Rejected", "wrong_partition"),
        "misrouted_dlq_reasons": [b"wrong_partition"],
        "keyed_right": ("Completed", None),
        "deposit": ("Completed", None),
        "worker_alive": True,
    }, running.logs()


# --- F9: a dead-lettered command with a readable id is answered -------------------------


@pytest.mark.parametrize("reason", ["invalid_field", "unknown_command"])
def test_dead_lettered_command_is_also_rejected(running: Platform, reason: str) -> None:
    """F9: a dlq record AND a Rejected event whose code is the dlq reason."""
    client = Client.on(running, currency="PLN")
    if reason == "invalid_field":  # "@" is reserved for system accounts: refused at decode
        command = client.deposit(f"@hostile-{client.account()}", AMOUNT_MINOR)
        value = running.serde.encode_command(command)
    else:
        command = client.deposit(client.account(), AMOUNT_MINOR)
        value = newer_command(running, command)
    running.publisher.publish_raw(command.account_id.encode(), value)
    running.publisher.flush()
    settle(running, client, [client.partition(command.account_id)])
    payment_id = command.command_id
    wait_for(running, lambda: running.watcher.terminal(payment_id) is not None, timeout_s=SETTLE_S)
    observed = {
        "dlq_reasons": dlq_reasons_for(running, value),
        "answers": [outcome(e) for e in events_of(running, payment_id)],
        "worker_alive": alive(running),
    }
    assert observed == {
        "dlq_reasons": [reason.encode()],
        "answers": [("Rejected", reason)],
        "worker_alive": True,
    }, running.logs()


# --- F10: the destination's partition decides ---------------------------------------------


def test_transfer_right_behind_the_destinations_opening_completes(running: Platform) -> None:
    """F10: OpenAccount(D) and Transfer(A->D) sent together: the transfer ends Completed
    (today the debit step asks a directory that has not caught up yet)."""
    client = Client.on(running, currency="HUF")
    source = client.account()
    destination = client.account(avoid={client.partition(source)})
    run_ok(running, client.open(source))
    run_ok(running, client.deposit(source, FUNDS_MINOR))
    opening = client.open(destination)
    transfer = client.transfer(source, destination, AMOUNT_MINOR)
    publish(running, opening, transfer)
    answers = answered(running, [opening, transfer])
    observed = {
        "opening": outcome(answers[opening.command_id]),
        "transfer": [outcome(e) for e in events_of(running, transfer.command_id)],
        "worker_alive": alive(running),
    }
    assert observed == {
        "opening": ("Completed", None),
        "transfer": [("Debited", None), ("Completed", None)],
        "worker_alive": True,
    }, running.logs()


def test_transfer_to_unknown_account_is_reversed_by_destination(running: Platform) -> None:
    """F10: a destination that does not exist: Debited, then Reversed account_not_found
    (never Rejected at step 1); the money comes back and transit drains."""
    client = Client.on(running, currency="RON")
    source = client.account()
    nowhere = client.account(avoid={client.partition(source)})  # never opened
    run_ok(running, client.open(source))
    run_ok(running, client.deposit(source, FUNDS_MINOR))
    transfer = client.transfer(source, nowhere, AMOUNT_MINOR)
    publish(running, transfer)
    answered(running, [transfer])
    view = money(
        running, currency=client.currency, accounts=[source], payment_ids=[transfer.command_id]
    )
    observed = {
        "transfer": [outcome(e) for e in events_of(running, transfer.command_id)],
        "source_balance": view.balances[source],
        "transit_ledger": view.transit_ledger,
        "worker_alive": alive(running),
    }
    assert observed == {
        "transfer": [("Debited", None), ("Reversed", "account_not_found")],
        "source_balance": FUNDS_MINOR,
        "transit_ledger": 0,
        "worker_alive": True,
    }, running.logs()


def test_transfer_right_after_a_restart_completes(running: Platform) -> None:
    """F10: accounts on two partitions of a directory of production size, the worker
    stopped and started, a transfer sent at once: Completed, never Rejected
    account_not_found (today the directory starts empty after a restart and is
    followed in the background; D's row is behind DIRECTORY_ACCOUNTS others).
    Last on the shared platform: it stops the worker."""
    client = Client.on(running, currency="CZK")
    source = client.account()
    destination = client.account(avoid={client.partition(source)})
    fill_directory(
        running,
        partition=client.partition(destination),
        accounts=DIRECTORY_ACCOUNTS,
        tag=client.partner_id,
    )
    run_ok(running, client.open(source), client.open(destination))
    run_ok(running, client.deposit(source, FUNDS_MINOR))
    running.workers.stop()
    running.workers.restart_dead()
    transfer = client.transfer(source, destination, AMOUNT_MINOR)
    publish(running, transfer)
    answered(running, [transfer])
    observed = {
        "transfer": [outcome(e) for e in events_of(running, transfer.command_id)],
        "worker_alive": alive(running),
    }
    assert observed == {
        "transfer": [("Debited", None), ("Completed", None)],
        "worker_alive": True,
    }, running.logs()


# --- own platforms: inputs that stop (or, today, kill) the worker ---------------------


def test_oversized_garbage_does_not_stop_the_partition(settings: Settings, tmp_path: Path) -> None:
    """F7: 999,900 random bytes, then a valid OpenAccount on that partition: the garbage
    is dead-lettered as a bounded prefix with its size and SHA-256, the OpenAccount
    completes and the worker lives (today the DLQ copy is too large and the worker dies)."""
    garbage = b"\x07" + os.urandom(GARBAGE_SIZE - 1)  # first byte: not Avro's magic 0
    with platform(settings, tmp_path, workers=1) as running:
        client = Client.on(running, currency="EUR")
        account = client.account()
        opening = client.open(account)
        running.publisher.publish_raw(account.encode(), garbage)
        publish(running, opening)
        wait_for(
            running,
            lambda: running.watcher.terminal(opening.command_id) is not None or not alive(running),
            timeout_s=EVENT_WAIT_S,
        )
        letters = [letter for letter in dead_letters(running) if letter.key == account.encode()]
        observed = {
            "opening": outcome(running.watcher.terminal(opening.command_id)),
            "worker_alive": alive(running),
            "dead_letters": [
                {
                    "reason": letter.reason,
                    "bounded_prefix": len(letter.value) < len(garbage)
                    and garbage.startswith(letter.value),
                    "sha256": letter.headers.get("dlq.sha256"),
                    "size": letter.headers.get("dlq.size"),
                }
                for letter in letters
            ],
        }
        logs = running.logs()
    assert observed == {
        "opening": ("Completed", None),
        "worker_alive": True,
        "dead_letters": [
            {
                "reason": b"undecodable",
                "bounded_prefix": True,
                "sha256": hashlib.sha256(garbage).hexdigest().encode(),
                "size": str(GARBAGE_SIZE).encode(),
            }
        ],
    }, logs


def _wait_exit_or_dead_letter(running: Platform, value: bytes) -> int | None:
    """The worker's exit code, or None if it still runs after WORKER_EXIT_WAIT_S or
    dead-lettered ``value`` (today's answer: it would never exit then)."""
    process = running.workers.workers[0].process
    assert process is not None
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    checked_dlq = time.monotonic()
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        if time.monotonic() - checked_dlq >= DLQ_CHECK_EVERY_S:
            if dlq_reasons_for(running, value):
                return None
            checked_dlq = time.monotonic()
        time.sleep(EXIT_POLL_S)
    return process.poll()


@pytest.mark.parametrize("leg_kind", ["amount_zero", "lost_schema_id"])
def test_leg_that_cannot_be_applied_stops_the_worker_loudly(
    settings: Settings, tmp_path: Path, leg_kind: str
) -> None:
    """F8: a leg is internal: one that cannot be applied stops the worker (non-zero exit,
    "fatal" in its log) and is never dead-lettered, which would strand money in transit."""
    with platform(settings, tmp_path, workers=1) as running:
        client = Client.on(running, currency="EUR")
        source = client.account()
        destination = client.account(avoid={client.partition(source)})
        run_ok(running, client.open(source), client.open(destination))
        if leg_kind == "amount_zero":
            value = running.serde.encode_leg(
                CreditLeg(
                    transfer_id=client.command_id(source),
                    request_id="r1",
                    partner_id=client.partner_id,
                    issued_at_ms=now_ms(),
                    source_account_id=source,
                    destination_account_id=destination,
                    amount_minor=0,
                    currency=client.currency,
                )
            )
        else:
            value = LOST_SCHEMA_ID_LEG
        produce_to(
            running.kafka,
            running.topics.legs,
            key=destination.encode(),
            value=value,
            partition=client.partition(destination),
        )
        code = _wait_exit_or_dead_letter(running, value)
        log = tail(running.workers.workers[0].log_file, lines=LOG_TAIL_LINES)
        observed = {
            "exited_non_zero": code is not None and code != 0,
            "dlq_reasons": dlq_reasons_for(running, value),
            "log_says_why": "fatal" in log or "InvariantViolation" in log,
        }
    assert observed == {
        "exited_non_zero": True,
        "dlq_reasons": [],
        "log_says_why": True,
    }, f"exit code {code}\n{log}"
