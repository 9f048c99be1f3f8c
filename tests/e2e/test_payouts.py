"""Payouts end to end on real Kafka (issue 19, the core on the wire): screening rules per
partition, requests held or queued, review decisions, the rail's reports, a worker killed
with SIGKILL between them; every payout ends settled or failed exactly once, the ledger
balances and replay reproduces it. The API, the rail connector and the simulator come
later; here the test plays operators and rail with commands."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from paystream.ledger import (
    OPS_PARTNER_ID,
    RAIL_PARTNER_ID,
    Command,
    ConfigureScreening,
    DecidePayout,
    Decision,
    Deposit,
    Event,
    FailPayout,
    OpenAccount,
    RequestPayout,
    SendPayout,
    SettlePayout,
    mint_command_id,
)
from paystream.ledger.accounts import SCREENING_KEY_PREFIX
from paystream.ledger.ids import ULID_RANDOM_BYTES
from paystream.ledger.screening import CurrencyLimits, ScreeningRules, rules_to_json
from paystream.runner import Platform
from paystream.settings import Settings
from paystream.topology.partitioner import partition_for
from tests.e2e.harness import assert_ledger_exactly_once, assert_replay_matches, platform

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTNER = "partner-payouts"
ACCOUNTS = [f"payout-src-{n}" for n in range(6)]
FUNDS_MINOR = 100_000
ANSWER_TIMEOUT_S = 120.0
RULES = ScreeningRules(
    limits=(CurrencyLimits(currency="EUR", amount_max_minor=5_000),),
    blocked_countries=frozenset({"KP"}),
)
IBANS = ("DE89370400440532013000", "FR1420041010050500013M02606", "GB33BUKB20201555555555")


def minted(platform_: Platform, key: str) -> dict[str, object]:
    """The envelope of a new command keyed by ``key``: an id minted for its partition."""
    partition = partition_for(key.encode(), platform_.topics.partitions)
    now_ms = int(time.time() * 1000)
    command_id = mint_command_id(
        partition=partition, at_ms=now_ms, random_bytes=os.urandom(ULID_RANDOM_BYTES)
    )
    return {
        "command_id": command_id,
        "request_id": command_id,
        "issued_at_ms": now_ms,
        "account_id": key,
    }


def screening_keys(partitions: int) -> list[str]:
    """One ``@screening:<n>`` key per partition (the first n whose murmur2 lands there)."""
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"{SCREENING_KEY_PREFIX}{n}"
        keys.setdefault(partition_for(key.encode(), partitions), key)
        n += 1
    return [keys[p] for p in range(partitions)]


def send(platform_: Platform, commands: Sequence[Command]) -> dict[str, Event]:
    """Publish ``commands`` and wait for each one's answer (restarting killed workers)."""
    platform_.publisher.publish_all(commands)
    platform_.publisher.flush()
    ids = {c.command_id: 1 for c in commands}
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    left = set(ids)
    while left and time.monotonic() < deadline:
        left = platform_.watcher.wait_answers({i: 1 for i in left}, timeout_s=2.0)
        platform_.workers.restart_dead()
    assert not left, f"{len(left)} commands unanswered{platform_.logs()}"
    return {i: platform_.watcher.answers(i)[0] for i in ids}


def request(p: Platform, n: int, amount_minor: int, country: str = "DE") -> RequestPayout:
    source = ACCOUNTS[n % len(ACCOUNTS)]
    return RequestPayout(
        **minted(p, source),  # type: ignore[arg-type]
        partner_id=PARTNER,
        batch_id=f"batch-{n // 10}",
        amount_minor=amount_minor,
        currency="EUR",
        beneficiary_name=f"Seller {n}",
        beneficiary_country=country,
        beneficiary_iban=IBANS[n % len(IBANS)],
        beneficiary_bic=None,
        beneficiary_account_number=None,
        beneficiary_routing_number=None,
    )


def decide(p: Platform, payout: RequestPayout, decision: Decision, reason: str) -> DecidePayout:
    return DecidePayout(
        **minted(p, payout.account_id),  # type: ignore[arg-type]
        partner_id=OPS_PARTNER_ID,
        payout_id=payout.command_id,
        decision=decision,
        officer="officer@example.com",
        reason=reason,
    )


def rail(p: Platform, kind: type[SendPayout | SettlePayout], payout: RequestPayout) -> Command:
    fields = minted(p, payout.account_id)
    return kind(**fields, partner_id=RAIL_PARTNER_ID, payout_id=payout.command_id)  # type: ignore[arg-type]


def wait_ends(p: Platform, payout_ids: Sequence[str]) -> dict[str, str]:
    """Each payout's last state once every one has ended: settled at most once, nothing after
    settled or after its last failure (a rejection an override turned around is not last)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while True:
        p.watcher.poll()
        states = {i: [e.type for e in p.watcher.events.get(i, [])] for i in payout_ids}
        if all(s and s[-1] in ("Settled", "Failed") for s in states.values()):
            break
        assert time.monotonic() < deadline, {
            i: s for i, s in states.items() if s[-1:] != ["Settled"]
        }
    for payout_id, own in states.items():
        assert own.count("Settled") <= 1 and "Settled" not in own[:-1], (payout_id, own)
    return {i: s[-1] for i, s in states.items()}


def test_payouts_reserve_screen_decide_and_settle_through_a_kill(
    settings: Settings, tmp_path: Path
) -> None:
    with platform(settings, tmp_path, workers=2) as p:
        opened = [
            OpenAccount(**minted(p, a), partner_id=PARTNER, currency="EUR")  # type: ignore[arg-type]
            for a in ACCOUNTS
        ]
        funded = [
            Deposit(
                **minted(p, a),
                partner_id=PARTNER,
                amount_minor=FUNDS_MINOR,  # type: ignore[arg-type]
                currency="EUR",
            )
            for a in ACCOUNTS
        ]
        assert {e.type for e in send(p, opened).values()} == {"Completed"}
        assert {e.type for e in send(p, funded).values()} == {"Completed"}
        rules = [
            ConfigureScreening(
                **{**minted(p, key), "partner_id": OPS_PARTNER_ID},  # type: ignore[arg-type]
                rules_json=rules_to_json(RULES),
            )
            for key in screening_keys(p.topics.partitions)
        ]
        assert {e.type for e in send(p, rules).values()} == {"Completed"}

        payouts = [
            request(p, n, 1_000 + 700 * (n % 10), "KP" if n % 13 == 0 else "DE") for n in range(40)
        ]
        payouts.append(request(p, 40, 10 * FUNDS_MINOR))  # more than the source holds
        first = send(p, payouts)
        states = Counter(e.type for e in first.values())
        assert states["Held"] > 0 and states["Queued"] > 0 and states["Failed"] == 1, states
        held = [r for r in payouts if first[r.command_id].type == "Held"]
        assert all(first[r.command_id].rule_codes for r in held)

        rejected, approved = held[:2], held[2:]
        decisions = [decide(p, r, "reject", "not convinced") for r in rejected]
        decisions += [decide(p, r, "approve", "checked") for r in approved]
        decisions.append(decide(p, rejected[0], "override", "documents arrived"))
        assert {e.type for e in send(p, decisions[:-1]).values()} == {"Completed"}
        assert {e.type for e in send(p, decisions[-1:]).values()} == {"Completed"}

        queued = [
            r for r in payouts if r not in rejected[1:] and first[r.command_id].type != "Failed"
        ]
        p.workers.workers[0].kill()  # the stores of its partitions must come back from changelogs
        assert {e.type for e in send(p, [rail(p, SendPayout, r) for r in queued]).values()} == {
            "Completed"
        }
        failing, settling = queued[:3], queued[3:]
        failed = [
            FailPayout(
                **minted(p, r.account_id),
                partner_id=RAIL_PARTNER_ID,  # type: ignore[arg-type]
                payout_id=r.command_id,
                reason_code="AC04",
                reason="closed account",
            )
            for r in failing
        ]
        ends = failed + [rail(p, SettlePayout, r) for r in settling]
        assert {e.type for e in send(p, ends).values()} == {"Completed"}

        ended = wait_ends(p, [r.command_id for r in payouts])
        assert Counter(ended.values()) == {
            "Settled": len(settling),
            "Failed": 1 + len(rejected[1:]) + len(failing),
        }
        requeued = [e for e in p.watcher.events[rejected[0].command_id] if e.type == "Queued"]
        assert (requeued[-1].previous_type, requeued[-1].actor) == ("Failed", "officer@example.com")
        report = assert_ledger_exactly_once(p)
        assert_replay_matches(p, report)
