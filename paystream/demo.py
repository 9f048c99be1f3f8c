"""``paystream demo``: ``paystream up`` with a workload, on embedded defaults.

Starts what ``paystream up`` starts (the services, two workers, a Postgres sink and the
API), opens accounts, funds them, runs a few thousand transfers straight into Kafka (with
exact duplicates, conflicting duplicates, overdrafts and transfers to accounts closed
meanwhile), waits for every transfer's terminal event, then sends payments through the
REST API with a partner's client-credentials token and times them, pays out batches to
external bank accounts through the bank-rail simulator (a few held for review; one approved,
the rest left for the reader), then checks the recorded ledger and the audit store and
prints a summary.

The partner behind the API's payments, ``demo-1``, is onboarded first (its Kafka topic and
principal, its OAuth client, a webhook endpoint served by a receiver in this process), and
a few of its account holders get an email address; after the payouts the demo waits until
the partner's topic holds its events, the receiver has verified its webhooks and the local
mailbox holds the holders' emails (:mod:`paystream.demo_partners`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from paystream import demo_api, demo_partners, demo_payouts, services, workload
from paystream.analytics import remote
from paystream.audit.audit_verify import ledger_topic_of, verify_store
from paystream.audit.verify import LedgerReport
from paystream.cli.auth import CLIENT_DEFAULT, access_token
from paystream.cli.common import ANALYTICS_PORT_DEFAULT, LOCAL_HOST
from paystream.cli.up import (
    API_READY_TIMEOUT_S,
    Parts,
    dashboard_login,
    is_ready,
    run_until_interrupted,
    started,
)
from paystream.runner import TRAFFIC_TIMEOUT_S
from paystream.services.process import free_port, port_open, wait_until
from paystream.settings import Settings
from paystream.topology.topics import analytics_group

DEMO_MIX = workload.Mix(accounts=200, transfers=5_000)
DEMO_WORKERS = 2
OPS_CLIENT = "ops-console"
REVIEW_CLIENT = "compliance-officer"
ANALYTICS_TIMEOUT_S = 300.0


def _services(settings: Settings) -> None:
    """Start the local services; the platform then finds them where ``up`` started them."""
    endpoints = services.up(settings)
    print(f"services up: kafka {endpoints.kafka_bootstrap}, postgres, clickhouse")
    print(f"oidc issuer: {endpoints.oidc_issuer}")


def run(settings: Settings, *, serve: bool = True) -> int:
    """The workload and its checks; then, with ``serve``, the platform keeps running (the
    dashboard with it) until Ctrl-C."""
    _services(settings)
    mix = replace(DEMO_MIX, partitions=settings.partitions)
    now_ms = int(time.time() * 1000)
    load = workload.build(seed=now_ms, mix=mix, run_id=f"demo{now_ms // 1000}", now_ms=now_ms)
    with demo_partners.onboarded(settings) as partner:
        print(f"starting {DEMO_WORKERS} workers, the sinks, the API and the dashboard (logs in "
              f"{settings.data_dir / 'logs'}) ...")  # fmt: skip
        with started(
            settings, workers=DEMO_WORKERS, api_port=free_port(),
            analytics_port=_analytics_port(), metrics_ports=(0, 0),
        ) as parts:  # fmt: skip
            ok = _workload(settings, parts, load, partner)
            ok = _dashboard(settings, parts) and ok
            if serve and ok:
                return _serve(parts, settings)
    print("services are still running: `.venv/bin/paystream services down` stops them")
    return 0 if ok else 1


@dataclass(frozen=True, slots=True)
class _KafkaRun:
    """The transfers straight into Kafka: their outcomes and answers."""

    elapsed_s: float
    counts: Counter[str]
    codes: Counter[str]
    left: int
    """Transfers without a terminal event when the wait ended."""


def _workload(
    settings: Settings, parts: Parts, load: workload.Workload, partner: demo_partners.Partner
) -> bool:
    """The Kafka workload, payments through the API, payouts, what the partner heard, the
    checks; True when all hold."""
    platform = parts.platform
    kafka = _through_kafka(parts, load)
    if kafka is None:
        return False
    through_api = _through_the_api(settings, parts.api_url)
    payouts = _payouts(settings, parts.api_url)
    heard = _partner_heard(settings, parts, partner, through_api.contacts)
    report = platform.verify()
    audit_rows = platform.wait_audit_store()
    audit = verify_store(
        services.postgres_dsn(settings), ledger_topic=ledger_topic_of(settings), progress=None
    )
    _print_summary(len(load.transfer_ids), kafka.elapsed_s, kafka.counts, report)
    _print_api(through_api)
    _print_payouts(payouts, parts.api_url)
    print()
    for line in demo_partners.report(settings, partner, heard):
        print(line)
    print("\nPostgres audit store (paystream sink postgres), rows per table:")
    for table, rows in audit_rows.items():
        print(f"  {table:<16} {rows:>8,}")
    print(f"audit verify: {'ok' if audit.ok else audit.summary()}")
    print("\nevery record's answer, by code (hostile and mistaken records included):")
    for code, n in kafka.codes.most_common():
        print(f"  {code:<30} {n:>6}")
    ok = report.balanced and audit.ok and not kafka.left
    return ok and payouts.ended and heard.complete


def _through_kafka(parts: Parts, load: workload.Workload) -> _KafkaRun | None:
    """Accounts opened and funded, then the transfers; None when the setup got no answer."""
    platform = parts.platform
    began = time.monotonic()
    left = platform.run_setup(load)
    if left:
        print(f"{len(left)} setup commands got no answer{platform.logs()}")
        return None
    print(f"opened {DEMO_MIX.accounts} accounts and funded "
          f"{DEMO_MIX.accounts - DEMO_MIX.closing_accounts} "
          f"in {time.monotonic() - began:.1f}s")  # fmt: skip
    began = time.monotonic()
    platform.publish_paced(load, per_second=100_000).join()
    missing = platform.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
    elapsed_s = time.monotonic() - began
    counts, codes = platform.outcomes(load), platform.rejection_codes(load)
    platform.wait_audit_store()  # the API's answers wait for the read models (201)
    return _KafkaRun(elapsed_s, counts, codes, len(missing))


def _partner_heard(
    settings: Settings, parts: Parts, partner: demo_partners.Partner, contacts: dict[str, str]
) -> demo_partners.Heard:
    """Wait until the partner's topic, its webhooks and the holders' emails are complete."""
    local_mailbox = parts.smtp_port is not None
    print(f"\nwaiting until partner {demo_partners.PARTNER_ID}'s topic, its webhook receiver"
          f"{' and the mailbox' if local_mailbox else ''} hold what this run's events ask for "
          f"(at most {demo_partners.HEARD_TIMEOUT_S:.0f}s) ...")  # fmt: skip
    heard = demo_partners.wait_heard(settings, partner, contacts, local_mailbox=local_mailbox)
    if not heard.complete:
        logs = settings.data_dir / "logs"
        print(f"not all was heard in {demo_partners.HEARD_TIMEOUT_S:.0f}s; the fan-out's, "
              f"webhooks' and notifier's logs: {logs}/partners-*.log")  # fmt: skip
    return heard


def _analytics_port() -> int:
    """The usual port when it is free (a URL to remember), else any free one."""
    return (
        ANALYTICS_PORT_DEFAULT if not port_open(LOCAL_HOST, ANALYTICS_PORT_DEFAULT) else free_port()
    )


def _dashboard(settings: Settings, parts: Parts) -> bool:
    """Wait until the analytics store holds every record, show its numbers and where the
    dashboard is. False when it did not catch up in time."""
    url = parts.analytics_url
    token = access_token(settings, OPS_CLIENT)
    print("\nwaiting until the analytics store (ClickHouse) holds every record ...")
    group = analytics_group(settings)
    if remote.wait_caught_up(url, token, group, timeout_s=ANALYTICS_TIMEOUT_S) is None:
        print(f"the analytics process did not catch up in {ANALYTICS_TIMEOUT_S:.0f}s; its log: "
              f"{settings.data_dir / 'logs' / 'analytics-1.out.log'}")  # fmt: skip
        return False
    day = {"since": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    funnel = remote.get(url, "/v1/analytics/funnel", token, **day)["total"]
    currencies = remote.get(url, "/v1/analytics/consistency", token)["currencies"]
    print(f"ClickHouse: {funnel['requested']:,} payments, {funnel['completed']:,} completed, "
          f"{funnel['reversed']:,} reversed, {funnel['rejected']:,} rejected, "
          f"{funnel['duplicates']:,} duplicates; success rate {funnel['success_rate']:.1%}, "
          f"compensation rate {funnel['compensation_rate']:.2%}")  # fmt: skip
    for currency in currencies:
        print(f"  {currency['currency']}: debits - credits {currency['difference_minor']}, "
              f"in transit {currency['transit_minor']}, {currency['accounts']:,} accounts "
              f"against the journal {currency['projection_difference_minor']}")  # fmt: skip
    print(f"\nthe ops dashboard: {url}/ops")
    for line in dashboard_login(settings):
        print(f"  {line}")
    return all(
        c["difference_minor"] == "0" and c["projection_difference_minor"] == "0" for c in currencies
    )


def _serve(parts: Parts, settings: Settings) -> int:
    print("\nserving until Ctrl-C (`paystream demo --exit` ends here instead)", flush=True)
    return run_until_interrupted(parts.groups, log_dir=settings.data_dir / "logs")


def _through_the_api(settings: Settings, api_url: str) -> demo_api.ApiFigures:
    if not wait_until(lambda: is_ready(api_url), timeout_s=API_READY_TIMEOUT_S):
        raise services.ServiceError(f"the API at {api_url} did not get ready")
    token = access_token(settings, CLIENT_DEFAULT)
    emails = demo_partners.HOLDER_EMAILS
    print(f"\nsending {demo_api.PAYMENTS} payments through the API at {api_url} ({CLIENT_DEFAULT}"
          f"'s token, Prefer: {demo_api.WAIT}, {demo_api.CONCURRENCY} at once; {len(emails)} of "
          f"its {demo_api.ACCOUNTS} accounts get a holder's email address first) ...")  # fmt: skip
    return demo_api.run(api_url, token, seed=int(time.time()), contact_emails=emails)


def _payouts(settings: Settings, api_url: str) -> demo_payouts.PayoutFigures:
    partner = access_token(settings, CLIENT_DEFAULT)
    officer = access_token(settings, REVIEW_CLIENT)
    count = demo_payouts.BATCHES * demo_payouts.PER_BATCH
    print(f"\npaying out {count} payouts in {demo_payouts.BATCHES} batches through the API "
          f"(screening: above {demo_payouts.THRESHOLD_MINOR / 100:,.2f} EUR is held for review; "
          "the bank-rail simulator refuses about 3 %) ...")  # fmt: skip
    return demo_payouts.run(settings, api_url, partner, officer)


def _print_payouts(figures: demo_payouts.PayoutFigures, api_url: str) -> None:
    p50, p95 = figures.percentile_ms(50), figures.percentile_ms(95)
    print(f"\npayouts by status: {dict(figures.statuses)}; failure codes {dict(figures.codes)}")
    if p50 is not None and p95 is not None:
        print(f"  queued -> settled or failed by the bank: P50 {p50:.0f} ms, P95 {p95:.0f} ms")
    if figures.approved:
        print(f"  approved by {REVIEW_CLIENT}: {figures.approved}")
    if figures.held:
        print(f"  left held for you to review ({len(figures.held)}): README, 'Review a held "
              f"payout'; the queue: GET {api_url}/v1/reviews?status=open")  # fmt: skip


def _print_api(figures: demo_api.ApiFigures) -> None:
    count = len(figures.latencies_ms)
    print(f"\n{count} payments through the REST API in {figures.elapsed_s:.1f}s "
          f"({count / figures.elapsed_s:.0f}/s), request to final answer:")  # fmt: skip
    print("  " + "  ".join(
        f"P{q} {figures.percentile_ms(q):.0f} ms" for q in (50, 95, 99)
    ) + f"  max {max(figures.latencies_ms):.0f} ms")  # fmt: skip
    for answer, n in figures.answers.most_common():
        print(f"  {answer:<30} {n:>6}")


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
