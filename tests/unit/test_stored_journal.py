"""Two journals compared by entry id: matched, on one side only, and the first difference of
each other entry, named so an operator can find the row (entry, line, account, amounts)."""

from __future__ import annotations

import dataclasses

import pytest

from paystream.audit.stored_journal import (
    ENTRY_FIELDS,
    JournalDifferences,
    entry_difference,
    journal_differences,
)
from paystream.ledger import JournalEntry, JournalLine
from paystream.ledger.journal import two_line_entry


def entry(payment: str, amount_minor: int = 500, /, **changes: object) -> JournalEntry:
    built = two_line_entry(
        step="deposit", payment_id=payment, kind="deposit", partner_id="p1",
        account_id="a-17", issued_at_ms=1_000, debit_account_id="@settlement:0",
        credit_account_id="a-17", currency="EUR", amount_minor=amount_minor,
    )  # fmt: skip
    return dataclasses.replace(built, **changes)  # type: ignore[arg-type]


def with_line(e: JournalEntry, number: int, **changes: object) -> JournalEntry:
    lines = list(e.lines)
    lines[number] = dataclasses.replace(lines[number], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(e, lines=tuple(lines))


def journal(*entries: JournalEntry) -> dict[str, JournalEntry]:
    return {e.entry_id: e for e in entries}


def test_equal_journals_match_entirely() -> None:
    entries = journal(entry("c1"), entry("c2"), entry("c3"))
    assert journal_differences(entries, dict(entries)) == JournalDifferences(3, [], [], [])


def test_entries_on_one_side_only_are_missing_or_extra_in_replay_s_words() -> None:
    replayed = journal(entry("c1"), entry("c3"), entry("c4"))
    stored = journal(entry("c1"), entry("c2"), entry("c0"))
    found = journal_differences(replayed, stored)
    assert found.matched == 1
    assert found.missing_ids == ["c0:deposit", "c2:deposit"]  # stored, not replayed
    assert found.extra_ids == ["c3:deposit", "c4:deposit"]  # replayed, not stored
    assert found.differing == []


def test_a_tampered_amount_names_the_entry_line_account_and_both_amounts() -> None:
    original = entry("c2")
    replayed = journal(entry("c1"), original, entry("c3"))
    stored = journal(entry("c1"), with_line(original, 1, amount_minor=5000), entry("c3"))
    matched, missing, extra, differing = journal_differences(replayed, stored)
    assert (matched, missing, extra) == (2, [], [])
    assert differing == [
        ("c2:deposit", "line 1 (account a-17, credit): amount_minor replayed 500, stored 5000")
    ]


def test_differing_entries_come_sorted_by_id() -> None:
    replayed = journal(entry("c3"), entry("c1"), entry("c2"))
    stored = journal(entry("c3", 7), entry("c1", 8), entry("c2"))
    assert [i for i, _ in journal_differences(replayed, stored).differing] == [
        "c1:deposit",
        "c3:deposit",
    ]


@pytest.mark.parametrize(
    ("changes", "described"),
    [
        ({"payment_id": "cX"}, "payment_id replayed 'c1', stored 'cX'"),
        ({"kind": "withdrawal"}, "kind replayed 'deposit', stored 'withdrawal'"),
        ({"issued_at_ms": 2_000}, "issued_at_ms replayed 1000, stored 2000"),
        ({"phase": "post"}, "phase replayed 'posted', stored 'post'"),
        ({"pending_entry_id": "c1:debit"}, "pending_entry_id replayed None, stored 'c1:debit'"),
    ],
)
def test_an_entry_field_is_named_with_both_values(
    changes: dict[str, object], described: str
) -> None:
    assert entry_difference(entry("c1"), entry("c1", **changes)) == described


def test_every_field_of_an_entry_but_its_lines_is_compared() -> None:
    names = {f.name for f in dataclasses.fields(JournalEntry)}
    assert set(ENTRY_FIELDS) == names - {"lines"}


@pytest.mark.parametrize(
    ("changes", "described"),
    [
        ({"account_id": "a-18"}, "account_id replayed 'a-17', stored 'a-18'"),
        ({"currency": "USD"}, "currency replayed 'EUR', stored 'USD'"),
        ({"side": "debit"}, "side replayed 'credit', stored 'debit'"),
    ],
)
def test_a_line_field_is_named_after_the_replayed_line(
    changes: dict[str, object], described: str
) -> None:
    found = entry_difference(entry("c1"), with_line(entry("c1"), 1, **changes))
    assert found == f"line 1 (account a-17, credit): {described}"


def test_an_entry_field_comes_before_its_lines_and_the_first_line_before_the_next() -> None:
    replayed = entry("c1")
    stored = with_line(with_line(replayed, 0, amount_minor=1), 1, amount_minor=2)
    assert entry_difference(replayed, stored) == (
        "line 0 (account @settlement:0, debit): amount_minor replayed 500, stored 1"
    )
    stored = dataclasses.replace(stored, issued_at_ms=5)
    assert entry_difference(replayed, stored) == "issued_at_ms replayed 1000, stored 5"


def test_lines_dropped_or_added_are_named_by_the_count_or_the_line_that_moved() -> None:
    replayed = entry("c1")
    dropped_last = dataclasses.replace(replayed, lines=replayed.lines[:1])
    assert entry_difference(replayed, dropped_last) == "line count replayed 2, stored 1"
    extra = JournalLine(account_id="a-9", currency="EUR", side="debit", amount_minor=1)
    added = dataclasses.replace(replayed, lines=(*replayed.lines, extra))
    assert entry_difference(replayed, added) == "line count replayed 2, stored 3"
    dropped_first = dataclasses.replace(replayed, lines=replayed.lines[1:])
    assert entry_difference(replayed, dropped_first) == (
        "line 0 (account @settlement:0, debit): account_id replayed '@settlement:0', stored 'a-17'"
    )


def test_equal_entries_have_no_difference() -> None:
    assert entry_difference(entry("c1"), entry("c1")) is None
