"""process_batch: payouts (issue 19). A request reserves (pending DEBIT source / CREDIT
payouts clearing) and is screened: held on a hit, else queued; a review approves, rejects or
overrides; the rail sends, then settles (post, then DEBIT clearing / CREDIT settlement) or
fails (void). Every refusal moves nothing."""

from __future__ import annotations

import json

import pytest

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    CloseAccount,
    Event,
    JournalEntry,
    Payout,
    SendPayout,
    SettlePayout,
)
from paystream.ledger.screening import CurrencyLimits, ScreeningRules, rules_to_json
from tests.support.ledger import (
    IBAN,
    PARTNER,
    T0_MS,
    Cluster,
    configure_screening,
    decide,
    fail_payout,
    make_account,
    of_type,
    rail,
    request_payout,
    status_command,
)

CLEARING = "@payouts-clearing:EUR:0"
SETTLEMENT = "@settlement:EUR:0"
RULES_JSON = rules_to_json(
    ScreeningRules(
        limits=(CurrencyLimits(currency="EUR", amount_max_minor=500),),
        blocked_countries=frozenset({"KP"}),
    )
)


def funded(credits_minor: int = 1_000) -> Cluster:
    return Cluster.of([make_account("src", credits_minor=credits_minor)])


def screened(credits_minor: int = 1_000) -> Cluster:
    cluster = funded(credits_minor)
    cluster.apply([configure_screening("rules", RULES_JSON)])
    return cluster


def answers(cluster: Cluster, payment_id: str) -> list[Event]:
    return [e for e in cluster.events() if e.payment_id == payment_id]


def last_payout(cluster: Cluster, payout_id: str) -> Payout:
    return cluster.payouts[0][payout_id]


def test_a_low_risk_payout_is_reserved_and_queued() -> None:
    cluster, payout = funded(), request_payout(1, amount_minor=300)
    result = cluster.apply([payout])
    [entry] = of_type(result.outputs, JournalEntry)
    assert (entry.entry_id, entry.phase, entry.kind) == (
        f"{payout.command_id}:reserve",
        "pending",
        "payout_debit",
    )
    assert [(line.account_id, line.side) for line in entry.lines] == [
        ("src", "debit"),
        (CLEARING, "credit"),
    ]
    [event] = answers(cluster, payout.command_id)
    assert (event.type, event.rule_codes, event.amount_minor) == ("Queued", (), 300)
    source = cluster.account("src")
    assert (source.balance_minor, source.available_minor) == (1_000, 700)
    assert cluster.account(CLEARING).pending_credits_minor == 300
    kept = last_payout(cluster, payout.command_id)
    assert (kept.state, kept.reservation, kept.beneficiary_iban) == ("queued", entry.entry_id, IBAN)
    assert result.payouts == {payout.command_id: kept}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"amount_minor": 1_001}, "insufficient_funds"),
        ({"amount_minor": 0}, "invalid_amount"),
        ({"amount_minor": AMOUNT_MAX_MINOR + 1}, "invalid_amount"),
        ({"currency": "USD"}, "currency_mismatch"),
        ({"source": "nobody"}, "account_not_found"),
        ({"source": CLEARING}, "account_not_found"),
        ({"partner_id": "p2"}, "account_not_found"),
        ({"iban": "DE89 3704"}, "invalid_beneficiary"),
        (
            {"iban": IBAN, "account_number": "12345678", "routing_number": "021000021"},
            "invalid_beneficiary",
        ),
        ({"iban": None}, "invalid_beneficiary"),
        ({"iban": None, "account_number": "12345678"}, "invalid_beneficiary"),
        (
            {"iban": None, "account_number": "12345678", "routing_number": "02100002"},
            "invalid_beneficiary",
        ),
        ({"bic": "NOTABIC"}, "invalid_beneficiary"),
        ({"name": ""}, "invalid_beneficiary"),
        ({"name": "x" * 141}, "invalid_beneficiary"),
        ({"name": "line\nbreak"}, "invalid_beneficiary"),
        ({"country": "Germany"}, "invalid_beneficiary"),
    ],
)
def test_a_refused_request_fails_and_reserves_nothing(
    changes: dict[str, object], code: str
) -> None:
    cluster = funded()
    before = dict(cluster.accounts)
    payout = request_payout(1, **changes)  # type: ignore[arg-type]
    result = cluster.apply([payout])
    [event] = answers(cluster, payout.command_id)
    assert (event.type, event.code) == ("Failed", code)
    assert result.accounts == {} and result.payouts == {} and cluster.accounts == before
    assert not of_type(result.outputs, JournalEntry)


def test_a_us_beneficiary_by_account_and_routing_number_is_accepted() -> None:
    cluster = funded()
    payout = request_payout(
        1, iban=None, account_number="12345678", routing_number="021000021", country="US"
    )
    cluster.apply([payout])
    assert answers(cluster, payout.command_id)[0].type == "Queued"


def test_a_hit_holds_then_approval_queues_sending_and_settlement_post() -> None:
    cluster = screened()
    payout = request_payout(1, amount_minor=600)
    cluster.apply([payout])
    [held] = answers(cluster, payout.command_id)
    assert (held.type, held.rule_codes) == ("Held", ("amount_over_threshold",))
    assert cluster.account("src").available_minor == 400  # reserved while held
    cluster.apply([decide(2, payout, "approve")])
    queued = answers(cluster, payout.command_id)[-1]
    assert (queued.type, queued.previous_type, queued.actor) == ("Queued", "Held", "officer-1")
    cluster.apply([rail(SendPayout, 3, payout)])
    assert answers(cluster, payout.command_id)[-1].type == "Sending"
    result = cluster.apply([rail(SettlePayout, 4, payout)])
    assert answers(cluster, payout.command_id)[-1].type == "Settled"
    post, settle = of_type(result.outputs, JournalEntry)
    assert (post.phase, post.pending_entry_id) == ("post", f"{payout.command_id}:reserve")
    assert [(line.account_id, line.side) for line in settle.lines] == [
        (CLEARING, "debit"),
        (SETTLEMENT, "credit"),
    ]
    source, clearing = cluster.account("src"), cluster.account(CLEARING)
    assert (source.balance_minor, source.pending_debits_minor) == (400, 0)
    assert (clearing.balance_minor, clearing.pending_credits_minor) == (0, 0)
    assert cluster.account(SETTLEMENT).balance_minor == 600
    assert [e.type for e in answers(cluster, decide(2, payout, "approve").command_id)] == [
        "Completed"
    ]


def test_rejection_voids_and_an_override_reserves_again() -> None:
    cluster = screened()
    payout = request_payout(1, amount_minor=600, country="KP")
    cluster.apply([payout])
    assert answers(cluster, payout.command_id)[0].rule_codes == (
        "amount_over_threshold",
        "country_blocked",
    )
    cluster.apply([decide(2, payout, "reject", "sanctioned country")])
    failed = answers(cluster, payout.command_id)[-1]
    assert (failed.type, failed.code, failed.reason) == (
        "Failed",
        "review_rejected",
        "sanctioned country",
    )
    assert cluster.account("src").available_minor == 1_000
    result = cluster.apply([decide(3, payout, "override", "cleared by compliance")])
    [entry] = of_type(result.outputs, JournalEntry)
    assert (entry.entry_id, entry.phase) == (f"{payout.command_id}:reserve.2", "pending")
    queued = answers(cluster, payout.command_id)[-1]
    assert (queued.type, queued.previous_type, queued.reason) == (
        "Queued",
        "Failed",
        "cleared by compliance",
    )
    assert cluster.account("src").available_minor == 400
    result = cluster.apply([decide(4, payout, "override", "second thoughts")])
    [void] = of_type(result.outputs, JournalEntry)
    assert (void.entry_id, void.pending_entry_id) == (
        f"{payout.command_id}:void.2",
        f"{payout.command_id}:reserve.2",
    )
    assert answers(cluster, payout.command_id)[-1].previous_type == "Queued"
    assert cluster.account("src").available_minor == 1_000


def test_an_override_refused_for_funds_leaves_the_payout_failed() -> None:
    cluster = screened()
    payout = request_payout(1, amount_minor=600)
    cluster.apply([payout, decide(2, payout, "reject", "no")])
    cluster.apply([request_payout(3, amount_minor=500)])
    cluster.apply([decide(4, payout, "override", "yes after all")])
    [refused] = answers(cluster, decide(4, payout, "override", "yes after all").command_id)
    assert (refused.type, refused.code) == ("Rejected", "insufficient_funds")
    assert last_payout(cluster, payout.command_id).state == "failed"


def test_the_bank_refusing_voids_with_its_reason() -> None:
    cluster = funded()
    payout = request_payout(1, amount_minor=300)
    cluster.apply([payout, rail(SendPayout, 2, payout), fail_payout(3, payout)])
    failed = answers(cluster, payout.command_id)[-1]
    assert (failed.type, failed.code, failed.reason, failed.previous_type) == (
        "Failed",
        "bank_rejected",
        "AC04: closed account",
        "Sending",
    )
    assert cluster.account("src").available_minor == 1_000
    assert cluster.account(CLEARING).pending_credits_minor == 0


@pytest.mark.parametrize(
    ("steps", "code"),
    [
        (lambda p: [decide(9, p, "approve")], "payout_not_held"),
        (lambda p: [rail(SettlePayout, 9, p)], "payout_not_sending"),
        (lambda p: [fail_payout(9, p)], "payout_not_sending"),
        (
            lambda p: [rail(SendPayout, 8, p), decide(9, p, "override", "stop")],
            "payout_not_overridable",
        ),
        (lambda p: [rail(SendPayout, 8, p), rail(SendPayout, 9, p)], "payout_not_queued"),
        (lambda p: [decide(9, p, "approve", partner_id=PARTNER)], "not_authorized"),
        (lambda p: [rail(SendPayout, 9, p, partner_id="@ops")], "not_authorized"),
        (lambda p: [decide(9, p, "override")], "invalid_field"),
        (lambda p: [decide(9, p, "override", "x" * 501)], "invalid_field"),
        (lambda p: [decide(9, p, "approve", officer="")], "invalid_field"),
        (
            lambda p: [rail(SendPayout, 8, p), fail_payout(9, p, reason_code="bad code")],
            "invalid_field",
        ),
    ],
)
def test_commands_the_payout_cannot_take_are_rejected(steps: object, code: str) -> None:
    cluster = funded()
    payout = request_payout(1, amount_minor=300)
    cluster.apply([payout])
    commands = steps(payout)  # type: ignore[operator]
    cluster.apply(commands)
    [answer] = answers(cluster, commands[-1].command_id)
    assert (answer.type, answer.code) == ("Rejected", code)


def test_a_decision_on_a_payout_it_cannot_find_is_rejected() -> None:
    cluster = funded()
    ghost = request_payout(1)
    other_source = request_payout(1, source="elsewhere")
    cluster.apply([decide(2, ghost, "approve"), decide(3, other_source, "approve")])
    for n in (2, 3):
        event = [e for e in cluster.events() if e.event_id.endswith(":rejected")][n - 2]
        assert (event.type, event.code) == ("Rejected", "payout_not_found")


def test_a_rail_command_repeated_is_a_duplicate_with_no_second_effect() -> None:
    cluster = funded()
    payout = request_payout(1, amount_minor=300)
    send = rail(SendPayout, 2, payout, request_id="send:1")
    cluster.apply([payout, send])
    again = rail(SendPayout, 3, payout, request_id="send:1")
    result = cluster.apply([again])
    [answer] = answers(cluster, again.command_id)
    assert (answer.type, answer.original_payment_id) == ("Duplicate", send.command_id)
    assert result.payouts == {} and result.accounts == {}


def test_an_account_with_a_payout_in_flight_does_not_close() -> None:
    cluster = screened()
    payout = request_payout(1, amount_minor=1_000)
    cluster.apply([payout])
    close = status_command(CloseAccount, 2, "src")
    cluster.apply([close])
    assert answers(cluster, close.command_id)[0].code == "account_has_pending"


def test_screening_rules_are_configured_by_operators_only_and_checked() -> None:
    cluster = funded()
    bad = [
        configure_screening(1, RULES_JSON, partner_id=PARTNER),
        configure_screening(2, "{not json"),
        configure_screening(3, json.dumps({"velocity_window_ms": 0})),
        configure_screening(4, json.dumps({"limits": [{"currency": "XXQ"}]})),
        configure_screening(5, json.dumps({"surprise": 1})),
        configure_screening(6, "[" * 100_000),
        configure_screening(7, RULES_JSON, key="src"),
    ]
    result = cluster.apply(bad)
    codes = [e.code for e in of_type(result.outputs, Event)]
    assert codes == ["not_authorized", *["invalid_rules"] * 5, "account_not_found"]
    assert result.screening is None
    result = cluster.apply([configure_screening(8, RULES_JSON)])
    assert result.screening is not None
    assert rules_to_json(result.screening) == RULES_JSON
    assert result.screening.configured_by == configure_screening(8, RULES_JSON).command_id


def test_rules_apply_to_payouts_after_them_in_the_same_batch() -> None:
    cluster = funded()
    first, second = (
        request_payout(1, amount_minor=600),
        request_payout(3, amount_minor=100, country="KP"),
    )
    cluster.apply([first, configure_screening(2, RULES_JSON), second])
    assert answers(cluster, first.command_id)[0].type == "Queued"
    assert answers(cluster, second.command_id)[0].rule_codes == ("country_blocked",)


def test_an_approved_beneficiary_is_known_to_later_payouts() -> None:
    cluster = funded(10_000)
    rules = rules_to_json(
        ScreeningRules(
            limits=(CurrencyLimits(currency="EUR", new_beneficiary_amount_max_minor=100),)
        )
    )
    cluster.apply([configure_screening(1, rules)])
    first = request_payout(2, amount_minor=200)
    cluster.apply([first])
    assert answers(cluster, first.command_id)[0].rule_codes == ("new_beneficiary",)
    cluster.apply([decide(3, first, "approve")])
    second = request_payout(4, amount_minor=200, at_ms=T0_MS + 1)
    cluster.apply([second], log_time_ms=T0_MS + 1)
    assert answers(cluster, second.command_id)[0].type == "Queued"
