"""Replay against one log recorded by a real worker on the session's Kafka: it matches, and
each kind of tampering is found and pinpointed; partial replays (an account subset, a
snapshot) agree with the full one; a what-if lists the payments a new rule would change."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Message

from paystream import workload
from paystream.audit.journal_file import read_journal_file, write_journal_file
from paystream.audit.replay import ReplayOptions, ReplayReport, read_log, replay_log
from paystream.audit.replay_log import Inputs, RecordedLog
from paystream.audit.snapshot import SnapshotError, load_snapshot, write_snapshot
from paystream.ledger import Transfer
from paystream.runner import TRAFFIC_TIMEOUT_S, child_env
from paystream.settings import Settings
from paystream.tables import codecs
from paystream.topology.shell import Shell
from tests.e2e.harness import platform, setup_or_fail

pytestmark = [pytest.mark.integration]

MIX = workload.Mix(accounts=120, transfers=1_500)


@dataclasses.dataclass(frozen=True)
class Recorded:
    log: RecordedLog
    shell: Shell
    load: workload.Workload
    full: ReplayReport
    env: dict[str, str]


@pytest.fixture(scope="module")
def recorded(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    load = workload.build(seed=17, mix=MIX, run_id="replay", now_ms=int(time.time() * 1000))
    with platform(settings, tmp_path_factory.mktemp("replay"), workers=2) as running:
        setup_or_fail(running, load)
        running.publish_paced(load, per_second=20_000).join()
        left = running.wait_traffic(load, timeout_s=TRAFFIC_TIMEOUT_S)
        assert not left, f"{len(left)} ids without answers{running.logs()}"
        log = read_log(running.kafka, running.topics, running.serde)
        shell = Shell(topics=running.topics, serde=running.serde)
        env = child_env(running.settings, log_level="info")
    full = replay_log(log, shell)
    assert full.ok, full.summary()
    yield Recorded(log, shell, load, full, env)


def copy_of(log: RecordedLog) -> RecordedLog:
    return dataclasses.replace(
        log, manifests={p: list(found) for p, found in log.manifests.items()},
        journal=dict(log.journal), events=dict(log.events),
    )  # fmt: skip


def test_a_replay_matches_every_record_and_a_second_gives_the_same_digest(
    recorded: Recorded,
) -> None:
    full = recorded.full
    assert full.journal.matched == len(recorded.log.journal) > 0
    assert full.events.matched == len(recorded.log.events)
    assert full.balances_compared == len(recorded.log.accounts)
    again = replay_log(recorded.log, recorded.shell)
    assert again.journal_sha256 == full.journal_sha256 and again.chains == full.chains


def test_a_deleted_ledger_record_is_found_with_the_batch_and_command_that_made_it(
    recorded: Recorded,
) -> None:
    log = copy_of(recorded.log)
    deleted = sorted(log.journal)[len(log.journal) // 2]
    del log.journal[deleted]
    report = replay_log(log, recorded.shell)
    assert not report.ok
    assert report.journal.extra == [deleted] and report.journal.matched == len(log.journal)
    first = report.first_divergence
    assert first is not None and first.kind == "extra" and first.subject == deleted
    assert first.batch is not None and first.command is not None
    topic, _, _ = first.command.partition("[")
    assert topic in (recorded.shell.topics.commands, recorded.shell.topics.legs)


def test_two_manifests_swapped_are_found_at_the_first_of_them(recorded: Recorded) -> None:
    log = copy_of(recorded.log)
    partition, placed = max(log.manifests.items(), key=lambda item: len(item[1]))
    index = next(i for i in range(1, len(placed) - 1) if placed[i].manifest.runs)
    placed[index], placed[index + 1] = placed[index + 1], placed[index]
    report = replay_log(log, recorded.shell)
    assert not report.ok
    first = report.first_divergence
    assert first is not None and first.kind in ("clock", "digest", "invariant")
    assert (first.partition, first.batch) == (partition, index)


def test_a_changed_rule_is_found_at_the_first_batch_it_changes(recorded: Recorded) -> None:
    """The manifests say the batches ran under a limit they did not run under: the first
    batch with a transfer above it no longer replays to its digest."""
    log = copy_of(recorded.log)
    limit = MIX.amount_max_minor // 2
    for partition, placed in log.manifests.items():
        log.manifests[partition] = [
            dataclasses.replace(p, manifest=dataclasses.replace(
                p.manifest, rules=dataclasses.replace(p.manifest.rules, amount_max_minor=limit)
            ))
            for p in placed
        ]  # fmt: skip
    report = replay_log(log, recorded.shell)
    assert not report.ok and report.batch_mismatches
    first = report.batch_mismatches[0]
    assert first.kind == "digest" and first.batch is not None
    assert report.journal.extra or report.journal.missing or report.journal.differing


def test_a_leg_that_does_not_decode_is_reported_at_its_batch_not_raised(
    recorded: Recorded,
) -> None:
    """Only workers write legs, so a worker stops on a leg it cannot read; replay, auditing a
    log that may have been tampered with, reports it as that batch's divergence."""
    log = copy_of(recorded.log)
    messages = {(kind, p): list(log.inputs.of(kind, p))
                for kind in ("commands", "legs") for p in log.manifests}  # fmt: skip
    partition = next(p for p in sorted(log.manifests) if messages[("legs", p)])
    found = messages[("legs", partition)]
    first = found[0]
    found[0] = Message(
        topic=first.topic(), partition=first.partition(), offset=first.offset(),
        key=first.key(), value=b"\x00garbage", timestamp=first.timestamp(),
    )  # fmt: skip
    log = dataclasses.replace(log, inputs=Inputs(messages))
    for options in (ReplayOptions(), ReplayOptions(what_if={"amount_max_minor": 10})):
        report = replay_log(log, recorded.shell, options=options)
        assert not report.ok
        unreadable = [d for d in report.batch_mismatches if d.kind == "unreadable"]
        assert unreadable and unreadable[0].partition == partition, report.summary()


def test_a_what_if_limit_lists_exactly_the_transfers_above_it(recorded: Recorded) -> None:
    limit = MIX.amount_max_minor // 2
    options = ReplayOptions(what_if={"amount_max_minor": limit})
    report = replay_log(recorded.log, recorded.shell, options=options)
    assert report.what_if is not None and not report.batch_mismatches
    completed_above = {
        command.command_id
        for command in _transfers(recorded.load)
        if command.amount_minor > limit and _ended(recorded.log, command.command_id) == "Completed"
    }  # fmt: skip
    changed = {c.payment_id: c for c in report.what_if.changed}
    assert completed_above and completed_above <= changed.keys()
    for payment_id in completed_above:
        assert changed[payment_id].what_if.end == "Rejected amount_over_limit"
        assert changed[payment_id].difference_minor < 0
    assert all(c.what_if.moved_minor <= limit for c in changed.values())


def test_an_account_subset_gives_the_full_replays_balances(recorded: Recorded) -> None:
    busy = sorted(
        {t.account_id for t in _transfers(recorded.load)} & recorded.full.accounts.keys()
    )[:2]
    report = replay_log(
        recorded.log, recorded.shell, options=ReplayOptions(accounts=frozenset(busy))
    )
    assert report.ok, report.summary()
    assert report.partial and set(busy) < report.shown_accounts
    for account_id in report.shown_accounts:
        assert report.accounts.get(account_id) == recorded.full.accounts.get(account_id)
    assert report.balances_compared == len(report.shown_accounts)


def test_a_replay_from_a_snapshot_equals_a_replay_from_the_beginning(
    recorded: Recorded, tmp_path: Path
) -> None:
    times = sorted(p.timestamp_ms for found in recorded.log.manifests.values() for p in found)
    middle = times[len(times) // 2]
    first = replay_log(recorded.log, recorded.shell,
                       options=ReplayOptions(until_ms=middle, keep_state=True))  # fmt: skip
    assert first.ok and first.end_state is not None and 0 < first.batches < recorded.full.batches
    path = tmp_path / "snapshot.avro"
    digest = write_snapshot(first.end_state, path)
    loaded = load_snapshot(path)
    assert loaded.sha256 == digest == first.end_state.sha256
    rest = replay_log(recorded.log, recorded.shell, options=ReplayOptions(snapshot=loaded))
    assert rest.ok, rest.summary()
    assert first.batches + rest.batches == recorded.full.batches
    assert rest.journal_sha256 == recorded.full.journal_sha256
    assert rest.accounts == recorded.full.accounts


def test_a_snapshot_whose_rows_were_changed_is_refused(recorded: Recorded, tmp_path: Path) -> None:
    report = replay_log(recorded.log, recorded.shell, options=ReplayOptions(keep_state=True))
    assert report.end_state is not None
    path = tmp_path / "snapshot.avro"
    write_snapshot(report.end_state, path)
    with path.open("rb") as found:
        reader = fastavro.reader(found)
        schema, metadata, rows = reader.writer_schema, dict(reader.metadata), list(reader)
    row = next(r for r in rows if r["table"] == "balances")
    account = codecs.decode_account(row["value"])
    richer = dataclasses.replace(account, posted_credits_minor=account.posted_credits_minor + 1)
    row["value"] = codecs.encode_account(richer)
    del metadata["avro.schema"], metadata["avro.codec"]
    with path.open("wb") as out:  # the same header (and digest), one account 1 minor unit richer
        fastavro.writer(out, schema, rows, codec="deflate", metadata=metadata)
    with pytest.raises(SnapshotError, match="sha256"):
        load_snapshot(path)


def test_the_replayed_journal_exports_to_an_avro_file_that_reads_back(
    recorded: Recorded, tmp_path: Path
) -> None:
    path = tmp_path / "journal.avro"
    assert write_journal_file(recorded.full.entries, path) == len(recorded.log.journal)
    assert list(read_journal_file(path)) == recorded.full.entries


def _transfers(load: workload.Workload) -> list[Transfer]:
    return [c for c in (workload.command_of(s) for s in load.traffic) if isinstance(c, Transfer)]


def _ended(log: RecordedLog, payment_id: str) -> str | None:
    ends = [
        e.item.type for i in log.events_order
        if (e := log.events[i]).item.payment_id == payment_id and e.item.event_id.count(":") == 1
        and e.item.type != "Debited"  # type: ignore[union-attr]
    ]  # fmt: skip
    return ends[-1] if ends else None


def paystream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paystream.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_command_prints_the_report_exports_and_writes_a_snapshot(
    recorded: Recorded, tmp_path: Path
) -> None:
    journal, snapshot = tmp_path / "journal.avro", tmp_path / "snapshot.avro"
    done = paystream(recorded.env, "replay", "--json", "--no-postgres",
                     "--export", str(journal), "--write-snapshot", str(snapshot))  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["journal_sha256"] == recorded.full.journal_sha256
    assert "replay" in done.stderr and "exported" in done.stderr  # the progress and the files
    assert len(list(read_journal_file(journal))) == len(recorded.log.journal)
    resumed = paystream(recorded.env, "replay", "--quiet", "--no-postgres", "--from-snapshot",
                        str(snapshot))  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert recorded.full.journal_sha256 in resumed.stdout and "OK" in resumed.stdout


def test_the_command_runs_a_what_if_and_refuses_unknown_rules(recorded: Recorded) -> None:
    limit = MIX.amount_max_minor // 2
    done = paystream(recorded.env, "replay", "--json", "--quiet", "--no-postgres", "--core",
                     f"amount_max_minor={limit}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    what_if = json.loads(done.stdout)["what_if"]
    assert what_if["rules"] == {"amount_max_minor": limit} and what_if["changed"] > 0
    assert what_if["by_currency"]["EUR"]["difference_minor"] < 0
    for bad in ("fee_bps=25", "amount_max_minor=lots", "amount_max_minor=0"):
        refused = paystream(recorded.env, "replay", "--quiet", "--no-postgres", "--core", bad)
        assert refused.returncode == 2 and "--core" in refused.stderr, (bad, refused.stderr)


def test_the_command_says_why_it_cannot_read_and_exits_2(
    recorded: Recorded, tmp_path: Path
) -> None:
    away = {**recorded.env, "PAYSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = paystream(away, "replay", "--quiet", "--no-postgres")
    assert done.returncode == 2 and "cannot replay" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    garbage = tmp_path / "not-a-snapshot.avro"
    garbage.write_bytes(b"not avro")
    done = paystream(recorded.env, "replay", "--quiet", "--no-postgres", "--from-snapshot",
                     str(garbage))  # fmt: skip
    assert done.returncode == 2 and "not a replay snapshot" in done.stderr, done.stderr


def test_batches_of_an_older_core_replay_when_this_core_reproduces_them(
    recorded: Recorded,
) -> None:
    def ran_under(version: str) -> RecordedLog:
        log = copy_of(recorded.log)
        for partition, placed in log.manifests.items():
            log.manifests[partition] = [
                dataclasses.replace(
                    p, manifest=dataclasses.replace(p.manifest, core_version=version)
                )
                for p in placed
            ]
        return log

    assert replay_log(ran_under("1"), recorded.shell).ok  # core 1: no limit, the same outputs
    unknown = replay_log(ran_under("0.9"), recorded.shell)
    assert not unknown.ok and {d.kind for d in unknown.batch_mismatches} == {"core_version"}


def test_a_saved_log_replays_away_from_the_broker_and_its_registry(
    recorded: Recorded, tmp_path: Path
) -> None:
    saved = tmp_path / "log.avro"
    done = paystream(recorded.env, "replay", "--quiet", "--no-postgres", "--save-log", str(saved))
    assert done.returncode == 0 and "saved" in done.stderr, done.stderr
    elsewhere = {  # no broker, an empty data directory: no schema registry either
        **recorded.env, "PAYSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "PAYSTREAM_DATA_DIR": str(tmp_path / "elsewhere"),
    }  # fmt: skip
    offline = paystream(elsewhere, "replay", "--json", "--quiet", "--log", str(saved))
    assert offline.returncode == 0, offline.stdout[-2000:] + offline.stderr[-2000:]
    report = json.loads(offline.stdout)
    assert report["ok"] and report["journal_sha256"] == recorded.full.journal_sha256
    assert report["postgres"] is None
    assert report["journal"]["matched"] == len(recorded.log.journal)
    not_a_log = paystream(elsewhere, "replay", "--quiet", "--log", str(tmp_path / "missing.avro"))
    assert not_a_log.returncode == 2 and "cannot replay" in not_a_log.stderr
