"""Replay snapshots (``paystream.audit.snapshot``) keep a partition's payout state: payouts,
screening profiles and rules round-trip, and a snapshot without any has the digest it had
before the payouts table existed."""

from __future__ import annotations

from pathlib import Path

from paystream.audit.snapshot import PartitionState, Snapshot, load_snapshot, write_snapshot
from paystream.ledger import PayoutProfile, ScreeningRules
from paystream.ledger.screening import CurrencyLimits
from tests.support.ledger import a_payout, make_account

PAYOUT = a_payout(
    state="held",
    rule_codes=("amount_over_threshold",),
    reservation="po-1:reserve",
    reservations=1,
    version=1,
)


def state(**payout_state: object) -> PartitionState:
    return PartitionState(
        batches=3,
        last_offset=2,
        clock_ms=10,
        chain=bytes(32),
        accounts={"src": make_account("src", credits_minor=9)},
        idempotency={},
        **payout_state,  # type: ignore[arg-type]
    )


def test_payout_state_round_trips(tmp_path: Path) -> None:
    kept = state(
        payouts={"po-1": PAYOUT},
        profiles={"src": PayoutProfile(account_id="src", recent=((1, 5),), beneficiaries=())},
        screening=ScreeningRules(
            limits=(CurrencyLimits(currency="EUR", amount_max_minor=4),), configured_by="cmd-1"
        ),
    )
    snapshot = Snapshot(partitions={0: kept, 1: state()})
    digest = write_snapshot(snapshot, tmp_path / "s")
    loaded = load_snapshot(tmp_path / "s")
    assert loaded.partitions == {0: kept, 1: state()}
    assert loaded.sha256 == digest == snapshot.sha256


DIGEST_BEFORE_PAYOUTS = "b82046083c56c3df4e2ccc294d108edc0a39512b486760ccd70fb3e2a35868a1"
"""``state()``'s snapshot digest as the code before the payouts table computed it (65a36c9)."""


def test_a_snapshot_without_payouts_has_its_old_digest() -> None:
    """Only rows that exist enter the digest: no payouts table rows, the same bytes hashed."""
    plain = Snapshot(partitions={0: state()})
    assert plain.sha256 == DIGEST_BEFORE_PAYOUTS
    assert Snapshot(partitions={0: state(screening=ScreeningRules())}).sha256 == plain.sha256
    assert plain.sha256 != Snapshot(partitions={0: state(payouts={"po-1": PAYOUT})}).sha256
