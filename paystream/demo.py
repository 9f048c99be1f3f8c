"""``paystream demo``: the platform on embedded defaults, with a workload.

Starts the services, two workers and a Postgres sink, opens accounts, funds them, runs a few
thousand transfers (with exact duplicates, conflicting duplicates, overdrafts
and transfers to accounts closed meanwhile), waits for every transfer's
terminal event, then checks the recorded ledger and prints a summary.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

from paystream import services, workload
from paystream.audit.audit_verify import ledger_topic_of, verify_store
from paystream.audit.verify import LedgerReport
from paystream.runner import TRAFFIC_TIMEOUT_S, running
from paystream.settings import Settings

DEMO_MIX = workload.Mix(accounts=200, transfers=5_000)
DEMO_WORKERS = 2
DEMO_SINKS = 1


def run(settings: Settings) -> int:
    endpoints = services.up(settings)
    print(f"services up: kafka {endpoints.kafka_bootstrap}, postgres, clickhouse")
    print(f"oidc issuer: {endpoints.oidc_issuer}")
    settings = settings.model_copy(update={"kafka_bootstrap": endpoints.kafka_bootstrap})
    run_id = f"demo{int(time.time())}"
    mix = replace(DEMO_MIX, partitions=settings.partitions)
    load = workload.build(
        seed=int(time.time()), mix=mix, run_id=run_id, now_ms=int(time.time() * 1000)
    )
    log_dir = settings.data_dir / "logs"
    print(f"starting {DEMO_WORKERS} workers (logs in {log_dir}) ...")
    with running(settings, workers=DEMO_WORKERS, log_dir=log_dir, sinks=DEMO_SINKS) as platform:
        started = time.monotonic()
        left = platform.run_setup(load)
        if left:
            print(f"{len(left)} setup commands got no answer{platform.logs()}")
            return 1
        print(f"opened {DEMO_MIX.accounts} accounts and funded "
              f"{DEMO_MIX.accounts - DEMO_MIX.closing_accounts} "
              f"in {time.monotonic() - started:.1f}s")  # fmt: skip
        started = time.monotonic()
        platform.publish_paced(load, per_second=100_000).join()
        left = platform.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        elapsed_s = time.monotonic() - started
        counts = platform.outcomes(load)
        codes = platform.rejection_codes(load)
        report = platform.verify()
        audit_rows = platform.wait_audit_store()
        audit = verify_store(
            services.postgres_dsn(settings), ledger_topic=ledger_topic_of(settings), progress=None
        )
    _print_summary(len(load.transfer_ids), elapsed_s, counts, report)
    print("\nPostgres audit store (paystream sink postgres), rows per table:")
    for table, rows in audit_rows.items():
        print(f"  {table:<16} {rows:>8,}")
    print(f"audit verify: {'ok' if audit.ok else audit.summary()}")
    print("\nevery record's answer, by code (hostile and mistaken records included):")
    for code, n in codes.most_common():
        print(f"  {code:<30} {n:>6}")
    print("services are still running: `.venv/bin/paystream services down` stops them")
    return 0 if report.balanced and audit.ok and not left else 1


def _print_summary(
    transfers: int, elapsed_s: float, counts: Counter[str], report: LedgerReport
) -> None:
    print(f"\n{transfers} transfers in {elapsed_s:.1f}s ({transfers / elapsed_s:.0f}/s end to end)")
    for outcome in ("Completed", "Reversed", "Rejected", "Duplicate", "missing"):
        print(f"  {outcome:<10} {counts.get(outcome, 0):>7}")
    print(f"\njournal entries: {report.entries}; still pending: {report.pending_by_currency}")
    for currency, total in sorted(report.customer_total_by_currency.items()):
        settlement = sum(
            a.balance_minor
            for a in report.accounts.values()
            if a.account_id.startswith("@settlement:") and a.currency == currency
        )
        transit = report.in_transit_by_currency.get(currency, 0)
        print(f"  {currency} customer accounts {total:>14,}  in transit {transit:>8,}  "
              f"external settlement {settlement:>14,}")  # fmt: skip
    print(f"  sum of all balances per currency: {report.sum_by_currency}")
    print(f"  duplicate journal ids: {len(report.duplicate_entry_ids)}, unbalanced entries: "
          f"{len(report.unbalanced_entry_ids)}, tables vs ledger mismatches: "
          f"{len(report.balance_mismatches)}")  # fmt: skip
    print(f"\nledger balanced: {'yes' if report.balanced else 'NO'}")
