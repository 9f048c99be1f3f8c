"""``paystream screening set``: the payout screening rules, on every partition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paystream.cli.common import err, out
from paystream.ledger.screening import RULES_JSON_LENGTH_MAX, rules_from_json, rules_to_json
from paystream.settings import Settings

screening_app = typer.Typer(
    help="payout screening rules (amounts, velocity, new beneficiaries, block lists)",
    no_args_is_help=True,
)


@screening_app.command("set")
def screening_set(
    rules_file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help='JSON rules, e.g. {"limits": [{"currency": "EUR", "amount_max_minor": 500000,'
            ' "new_beneficiary_amount_max_minor": 100000}], "velocity_count_max": 20,'
            ' "velocity_window_ms": 86400000, "blocked_countries": ["KP"]}',
        ),
    ],
) -> int:
    """set the rules on every partition (a command each, on Kafka) and wait for the workers"""
    from paystream.payouts.screening import publish_rules

    text = rules_file.read_text(encoding="utf-8")[: RULES_JSON_LENGTH_MAX + 1]
    try:
        rules = rules_from_json(text)
    except ValueError as error:
        err.print(f"paystream: the rules are not valid: {error}")
        return 1
    with err.status("setting the rules on every partition ..."):
        applied = publish_rules(Settings(), rules)
    for partition, answer in sorted(applied.answers.items()):
        out.print(f"partition {partition}: {answer or 'no answer'}")
    if applied.ok:
        out.print(f"rules set: {rules_to_json(rules)}")
        return 0
    err.print("paystream: some partitions did not take the rules")
    return 1
