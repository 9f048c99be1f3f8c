"""The API's payout checks before anything is sent: beneficiaries (schwifty for IBAN and BIC,
the ABA rule for routing numbers) and the rail connector's pure parts (AIMD, progress, the
commands it derives from a payout's events)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paystream.api.beneficiary import BeneficiaryError, aba_valid, checked_beneficiary
from paystream.ledger import Event, FailPayout, PayoutDetails, SendPayout, SettlePayout
from paystream.payouts.connector import Debtor, instruction_of, rail_command
from paystream.payouts.pacing import Aimd, Progress
from paystream.rail.iso20022 import StatusReport

IBAN_DE = "DE89370400440532013000"


def beneficiary(**fields: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "name": "Ada", "country": None, "iban": IBAN_DE, "bic": None, "account_number": None,
        "routing_number": None,
    }  # fmt: skip
    return base | fields


def test_an_iban_is_normalised_and_its_country_is_the_beneficiarys() -> None:
    checked = checked_beneficiary(**beneficiary(iban="de89 3704 0044 0532 0130 00", bic="COBADEFF"))  # type: ignore[arg-type]
    assert (checked.iban, checked.country, checked.bic) == (IBAN_DE, "DE", "COBADEFF")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"iban": "DE89370400440532013001"}, "iban"),  # check digits
        ({"iban": "DE8937040044053201300"}, "iban"),  # length
        ({"country": "FR"}, "country"),  # not the IBAN's
        ({"bic": "ABCDXX12"}, "bic"),  # no such country
        ({"account_number": "12345678"}, "iban"),  # both ways at once
        ({"iban": None}, "iban"),  # neither
        ({"iban": None, "account_number": "123456789", "routing_number": "021000022"},
         "routing_number"),  # ABA check digit
        ({"iban": None, "account_number": "12", "routing_number": "021000021"},
         "account_number"),
        ({"iban": None, "country": "DE", "account_number": "123456789",
          "routing_number": "021000021"}, "country"),  # routing numbers are American
        ({"iban": None, "bic": "COBADEFF", "account_number": "123456789",
          "routing_number": "021000021"}, "bic"),
    ],
)  # fmt: skip
def test_a_beneficiary_that_cannot_be_paid_names_its_field(
    fields: dict[str, str | None], field: str
) -> None:
    with pytest.raises(BeneficiaryError) as refused:
        checked_beneficiary(**beneficiary(**fields))  # type: ignore[arg-type]
    assert refused.value.field == field


def test_aba_routing_numbers() -> None:
    assert aba_valid("021000021") and aba_valid("011000015")
    assert not aba_valid("021000022") and not aba_valid("02100002") and not aba_valid("abcdefghi")


def test_aimd_halves_on_429_holds_until_retry_after_and_climbs_back() -> None:
    aimd = Aimd(rate_per_s=100, rate_min_per_s=1, rate_max_per_s=200, increase_per_s=10)
    assert aimd.slot(10.0) == 0
    assert aimd.slot(10.0) == pytest.approx(0.01)  # paced at 100/s
    aimd.throttled(10.0, retry_after_s=2.0)
    assert aimd.rate_per_s == 50
    assert aimd.slot(10.5) == pytest.approx(1.5)  # nothing before Retry-After
    for _ in range(1_000):  # about 10 s of sending at 100/s: about 10/s more each second
        aimd.taken()
    assert 140 < aimd.rate_per_s < 160
    for _ in range(10_000):
        aimd.taken()
    assert aimd.rate_per_s == 200  # capped
    for _ in range(20):
        aimd.throttled(20.0, 0.0)
    assert aimd.rate_per_s == 1  # floored


@given(st.permutations(range(20)), st.integers(0, 20))
def test_progress_commits_up_to_the_first_event_not_done(order: list[int], done: int) -> None:
    progress = Progress()
    for offset in range(20):
        progress.add(offset)
    finished = set(order[:done])
    for offset in finished:
        progress.done(offset)
    first_open = min(set(range(20)) - finished, default=20)
    assert progress.committable() == first_open


def payout_event(event_type: str = "Sending") -> Event:
    return Event(
        event_id=f"po-1:{event_type.lower()}", payment_id="po-1", type=event_type,  # type: ignore[arg-type]
        command_type="RequestPayout", partner_id="p", account_id="src", issued_at_ms=1,
        amount_minor=1234, currency="EUR", reference="invoice 7",
        payout=PayoutDetails(batch_id="b", beneficiary_name="Ada", beneficiary_country="DE",
                             beneficiary_iban=IBAN_DE),
    )  # fmt: skip


def test_the_instruction_is_the_payouts_whatever_its_event() -> None:
    debtor = Debtor()
    sending, queued = payout_event("Sending"), payout_event("Queued")
    assert instruction_of(sending, debtor) == instruction_of(queued, debtor)
    instruction = instruction_of(sending, debtor)
    assert (instruction.end_to_end_id, instruction.amount_minor, instruction.creditor_iban) == (
        "po-1", 1234, IBAN_DE,
    )  # fmt: skip


def test_rail_commands_have_request_ids_of_the_payout_and_the_banks_reason() -> None:
    event = payout_event()
    send = rail_command(event, None, partitions=8, now_ms=1_800_000_000_000)
    again = rail_command(event, None, partitions=8, now_ms=1_800_000_000_001)
    assert isinstance(send, SendPayout) and send.request_id == again.request_id
    assert send.command_id != again.command_id
    settled = StatusReport(end_to_end_id="po-1", status="ACSC")
    assert isinstance(rail_command(event, settled, partitions=8, now_ms=1), SettlePayout)
    rejected = StatusReport(end_to_end_id="po-1", status="RJCT", reason_code="AC04",
                            reason_text="closed")  # fmt: skip
    failed = rail_command(event, rejected, partitions=8, now_ms=1)
    assert isinstance(failed, FailPayout)
    assert (failed.reason_code, failed.reason, failed.account_id) == ("AC04", "closed", "src")
    with pytest.raises(ValueError, match="not a final status"):
        rail_command(event, StatusReport(end_to_end_id="po-1", status="ACCP"), partitions=8,
                     now_ms=1)  # fmt: skip
