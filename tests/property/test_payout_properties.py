"""Payouts under random (and hostile) command sequences: the money invariants of issue 19.

Each example draws a sequence of payout requests, decisions, rail reports, screening
configurations, deposits, withdrawals and closes over a few accounts (including commands
from the wrong partner, on payouts that do not exist, with amounts up to 2**63), splits it
into random batches, and checks after every batch:

- no no-overdraft account's available balance goes below zero;
- Σ posted balances is 0 per currency (every entry balances, nothing minted);
- the pending debits of each source, and the pending credits of the clearing shard, are
  exactly the amounts of its payouts whose reservation is open, and only held, queued and
  sending payouts hold one;
- per payout, the amounts reserved = posted + voided + still open;
- every input gets exactly one answer.

Then every open payout is driven to an end (approved, sent, settled or failed by the bank):
nothing stays pending, the clearing shard is empty, and every settled payout's amount sits in
the external settlement account. The same sequence applied one input per batch ends in the
same state with the same outputs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.ledger import (
    AMOUNT_MAX_MINOR,
    CloseAccount,
    Input,
    Payout,
    SendPayout,
    SettlePayout,
)
from paystream.ledger.screening import CurrencyLimits, ScreeningRules, rules_to_json
from tests.support.ledger import (
    PARTNER,
    T0_MS,
    Cluster,
    configure_screening,
    decide,
    deposit,
    fail_payout,
    make_account,
    rail,
    request_payout,
    status_command,
    withdrawal,
)

ACCOUNTS = ("a", "b", "c")
CLEARING = "@payouts-clearing:EUR:0"
SETTLEMENT = "@settlement:EUR:0"
ANSWER_STEPS = ("held", "queued", "failed", "completed", "rejected", "duplicate")
RULES = rules_to_json(
    ScreeningRules(
        limits=(
            CurrencyLimits(
                currency="EUR", amount_max_minor=500, new_beneficiary_amount_max_minor=200
            ),
        ),
        velocity_count_max=3,
        blocked_countries=frozenset({"KP"}),
    )
)
amounts = st.one_of(st.integers(1, 900), st.sampled_from([0, -1, AMOUNT_MAX_MINOR, 2**63]))


@st.composite
def sequences(draw: st.DrawFn) -> list[Input]:
    """Commands by number: ``n`` mints ids; payout commands name an earlier request."""
    requests: list = []
    inputs: list[Input] = []
    for n in range(draw(st.integers(1, 40))):
        kind = draw(
            st.sampled_from(
                ["request"] * 4
                + [
                    "approve",
                    "reject",
                    "override",
                    "send",
                    "settle",
                    "fail",
                    "rules",
                    "deposit",
                    "withdraw",
                    "close",
                    "hostile",
                ]
            )
        )
        account = draw(st.sampled_from(ACCOUNTS))
        if kind == "request" or (not requests and kind not in ("rules", "deposit", "withdraw")):
            country = draw(st.sampled_from(["DE", "FR", "KP"]))
            iban = draw(st.sampled_from(["DE89370400440532013000", "FR1420041010050500013M02606"]))
            command = request_payout(n, account, draw(amounts), iban=iban, country=country)
            requests.append(command)
            inputs.append(command)
            continue
        target = draw(st.sampled_from(requests)) if requests else None
        inputs.append(_command(kind, n, account, target, draw))
    return inputs


def _command(kind: str, n: int, account: str, target: object, draw: st.DrawFn) -> Input:
    p = target  # a RequestPayout
    if kind == "approve":
        return decide(n, p, "approve")  # type: ignore[arg-type]
    if kind == "reject":
        return decide(n, p, "reject", "no")  # type: ignore[arg-type]
    if kind == "override":
        return decide(n, p, "override", "turned around")  # type: ignore[arg-type]
    if kind == "send":
        return rail(SendPayout, n, p)  # type: ignore[arg-type]
    if kind == "settle":
        return rail(SettlePayout, n, p)  # type: ignore[arg-type]
    if kind == "fail":
        return fail_payout(n, p)  # type: ignore[arg-type]
    if kind == "rules":
        return configure_screening(n, RULES)
    if kind == "deposit":
        return deposit(n, account, draw(st.integers(1, 500)))
    if kind == "withdraw":
        return withdrawal(n, account, draw(st.integers(1, 500)))
    if kind == "close":
        return status_command(CloseAccount, n, account)
    return draw(
        st.sampled_from(
            [  # hostile: the wrong actor, a payout of another account
                decide(n, p, "approve", partner_id=PARTNER),  # type: ignore[arg-type]
                rail(SendPayout, n, p, partner_id="@ops"),  # type: ignore[arg-type]
                configure_screening(n, RULES, partner_id=PARTNER),
                decide(n, request_payout(f"ghost{n}", account), "approve"),
            ]
        )
    )


FUNDED_MINOR = 1_000


def fresh() -> Cluster:
    """The accounts funded from the external settlement shard (a balanced start)."""
    funding = make_account(
        SETTLEMENT,
        partner_id="@system",
        no_overdraft=False,
        debits_minor=FUNDED_MINOR * len(ACCOUNTS),
    )
    return Cluster.of([*(make_account(a, credits_minor=FUNDED_MINOR) for a in ACCOUNTS), funding])


def check(cluster: Cluster) -> None:
    accounts = cluster.accounts.values()
    assert all(a.available_minor >= 0 for a in accounts if a.debits_must_not_exceed_credits)
    assert sum(a.balance_minor for a in accounts) == 0
    payouts = list(cluster.payouts[0].values())
    open_ = [p for p in payouts if p.reservation is not None]
    assert all(p.state in ("held", "queued", "sending") for p in open_)
    assert all(p.reservation is None for p in payouts if p.state in ("settled", "failed"))
    for account in ACCOUNTS:
        held = sum(p.amount_minor for p in open_ if p.account_id == account)
        assert cluster.account(account).pending_debits_minor == held
    clearing = cluster.accounts.get(CLEARING)
    pending = 0 if clearing is None else clearing.pending_credits_minor
    assert pending == sum(p.amount_minor for p in open_)
    for payout in payouts:
        assert _journal_holds(cluster, payout)


def _journal_holds(cluster: Cluster, payout: Payout) -> bool:
    """Reserved = posted + voided + still open, from the payout's debit entries."""
    moved: Counter[str] = Counter()
    for entry in cluster.entries():
        if entry.payment_id == payout.payout_id and entry.kind == "payout_debit":
            moved[entry.phase] += entry.lines[0].amount_minor
    still_open = payout.amount_minor if payout.reservation is not None else 0
    return moved["pending"] == moved["post"] + moved["void"] + still_open


def one_answer_each(cluster: Cluster, inputs: list[Input]) -> None:
    answers = Counter(
        e.payment_id
        for e in cluster.events()
        if e.event_id.removeprefix(f"{e.payment_id}:").split(":")[0] in ANSWER_STEPS
    )
    for item in inputs:
        assert answers[item.command_id] == 1, item  # type: ignore[union-attr]


def apply_in_batches(inputs: list[Input], cuts: list[int]) -> Cluster:
    cluster, start = fresh(), 0
    for cut in [*sorted(set(cuts)), len(inputs)]:
        if cut > start:
            cluster.apply(inputs[start:cut], log_time_ms=T0_MS)
            check(cluster)
            start = cut
    return cluster


def drain(cluster: Cluster, fail_every: int) -> None:
    """Drive every open payout to its end: approve, send, then settle (or fail)."""
    n = 0
    for payout in list(cluster.payouts[0].values()):
        steps = {
            "held": ("approve", "send", "end"),
            "queued": ("send", "end"),
            "sending": ("end",),
        }.get(payout.state, ())
        for step in steps:
            n += 1
            current = cluster.payouts[0][payout.payout_id]
            command = _drain_command(step, f"drain{n}", current, n % fail_every == 0)
            cluster.apply([command], log_time_ms=T0_MS + 10_000)
    check(cluster)


def _drain_command(step: str, n: str, payout: Payout, fail: bool) -> Input:
    request = replace(request_payout(0, payout.account_id), command_id=payout.payout_id)
    if step == "approve":
        return decide(n, request, "approve", at_ms=T0_MS + 10_000)
    if step == "send":
        return rail(SendPayout, n, request, at_ms=T0_MS + 10_000)
    if fail:
        return fail_payout(n, request, at_ms=T0_MS + 10_000)
    return rail(SettlePayout, n, request, at_ms=T0_MS + 10_000)


@settings(max_examples=200, deadline=None)
@given(
    inputs=sequences(), cuts=st.lists(st.integers(0, 40), max_size=8), fail_every=st.integers(1, 4)
)
def test_payouts_keep_every_money_invariant(
    inputs: list[Input], cuts: list[int], fail_every: int
) -> None:
    batched = apply_in_batches(inputs, cuts)
    one_answer_each(batched, inputs)
    singles = apply_in_batches(inputs, list(range(len(inputs))))
    assert singles.outputs == batched.outputs
    assert singles.accounts == batched.accounts and singles.payouts == batched.payouts
    drain(batched, fail_every)
    assert all(p.state in ("settled", "failed") for p in batched.payouts[0].values())
    assert all(
        a.pending_debits_minor == a.pending_credits_minor == 0 for a in batched.accounts.values()
    )
    clearing = batched.accounts.get(CLEARING)
    assert clearing is None or clearing.balance_minor == 0
    settled = sum(p.amount_minor for p in batched.payouts[0].values() if p.state == "settled")
    paid_out = batched.account(SETTLEMENT).balance_minor + FUNDED_MINOR * len(ACCOUNTS)
    deposits = sum(e.lines[0].amount_minor for e in batched.entries() if e.kind == "deposit")
    withdrawn = sum(e.lines[0].amount_minor for e in batched.entries() if e.kind == "withdrawal")
    assert paid_out == settled + withdrawn - deposits
