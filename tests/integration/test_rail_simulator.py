"""The bank-rail simulator over real HTTP: uvicorn on a free 127.0.0.1 port, httpx as the client."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn

from paystream.rail.iso20022 import (
    MESSAGE_BYTES_MAX,
    Instruction,
    build_pain001,
    parse_pacs002,
)
from paystream.rail.simulator import SimulatorConfig, create_app
from paystream.services.process import free_port, wait_until

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 10.0
WAIT_TIMEOUT_S = 5.0
PROBLEM_JSON = "application/problem+json"

PAYOUT = Instruction(
    end_to_end_id="po-1",
    amount_minor=1250,
    currency="EUR",
    creditor_name="Zoë Ångström",
    creditor_country="DE",
    creditor_iban="DE89370400440532013000",
    creditor_bic="COBADEFFXXX",
    reference="Auszahlung März",
    debtor_name="Paystream Marketplace",
    debtor_iban="NL91ABNA0417164300",
    debtor_bic="ABNANL2A",
)


@contextlib.contextmanager
def simulator(config: SimulatorConfig) -> Iterator[httpx.Client]:
    """A simulator in a thread of this process; a client on its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name=f"rail-sim-{port}", daemon=True)
    thread.start()
    try:
        if not wait_until(lambda: server.started, timeout_s=START_TIMEOUT_S):
            raise RuntimeError("the simulator did not start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_TIMEOUT_S) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)


def send(
    client: httpx.Client, instruction: Instruction = PAYOUT, *, message_id: str = "msg-1"
) -> httpx.Response:
    body = build_pain001(instruction, message_id=message_id, created_at_ms=time.time_ns() // 10**6)
    headers = {"Content-Type": "application/xml", "Idempotency-Key": instruction.end_to_end_id}
    return client.post("/v1/credit-transfers", content=body, headers=headers)


def status_of(response: httpx.Response) -> tuple[str, str | None]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    report = parse_pacs002(response.content)
    return report.status, report.reason_code


def problem_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    code: str = response.json()["code"]
    return code


def report(client: httpx.Client) -> dict[str, Any]:
    answer: dict[str, Any] = client.get("/v1/report").raise_for_status().json()
    return answer


def test_accepted_then_settled_after_the_delay() -> None:
    with simulator(SimulatorConfig(settle_after_ms=300)) as client:
        assert status_of(send(client)) == ("ACCP", None)
        assert status_of(client.get("/v1/credit-transfers/po-1")) == ("ACCP", None)
        assert report(client)["by_status"] == {"ACCP": 1, "ACSC": 0, "RJCT": 0}
        assert wait_until(
            lambda: status_of(client.get("/v1/credit-transfers/po-1"))[0] == "ACSC",
            timeout_s=WAIT_TIMEOUT_S,
        )
        assert report(client)["by_status"] == {"ACCP": 0, "ACSC": 1, "RJCT": 0}
        assert problem_code(client.get("/v1/credit-transfers/po-unknown"), 404) == "not_found"


def test_a_repeat_gets_the_same_status_and_is_no_second_payment() -> None:
    with simulator(SimulatorConfig(settle_after_ms=0)) as client:
        assert status_of(send(client, message_id="msg-1"))[0] in {"ACCP", "ACSC"}
        assert status_of(send(client, message_id="msg-2")) == ("ACSC", None)
        counts = report(client)
        assert counts["instructions"] == 1
        assert counts["repeats"] == 1
        assert counts["conflicts"] == []


def test_other_content_under_the_same_end_to_end_id_is_a_conflict() -> None:
    with simulator(SimulatorConfig()) as client:
        assert status_of(send(client))[0] == "ACCP"
        changed = dataclasses.replace(PAYOUT, amount_minor=PAYOUT.amount_minor + 1)
        answer = send(client, changed, message_id="msg-2")
        assert problem_code(answer, 409) == "duplicate_instruction_conflict"
        counts = report(client)
        assert counts["conflicts"] == ["po-1"]
        assert counts["instructions"] == 1
        assert counts["repeats"] == 0


def test_rejections_by_reason_code_are_deterministic() -> None:
    with simulator(SimulatorConfig(failure_rates={"AC04": 1.0})) as client:
        assert status_of(send(client)) == ("RJCT", "AC04")
        assert status_of(send(client, message_id="msg-2")) == ("RJCT", "AC04")
        assert status_of(client.get("/v1/credit-transfers/po-1")) == ("RJCT", "AC04")
    ids = [f"po-{n}" for n in range(12)]
    config = SimulatorConfig(seed=7, failure_rates={"AC01": 0.3, "AM05": 0.3})
    verdicts = []
    for _ in range(2):  # two simulators, same seed: the same verdict per end-to-end id
        with simulator(config) as client:
            payouts = [dataclasses.replace(PAYOUT, end_to_end_id=e2e) for e2e in ids]
            verdicts.append([status_of(send(client, payout)) for payout in payouts])
    assert verdicts[0] == verdicts[1]
    assert {code for _, code in verdicts[0]} == {None, "AC01", "AM05"}


def test_a_rate_limit_episode_answers_429_with_retry_after() -> None:
    with simulator(SimulatorConfig()) as client:
        episode = {"rate_per_s": 0.1, "burst": 1, "seconds": 10}
        client.post("/admin/rate-limit", json=episode).raise_for_status()
        answers = [
            send(client, dataclasses.replace(PAYOUT, end_to_end_id=f"po-{n}")) for n in range(3)
        ]
        limited = [answer for answer in answers if answer.status_code == 429]
        assert len(limited) == 2
        assert all(int(answer.headers["Retry-After"]) >= 1 for answer in limited)
        assert report(client)["rate_limited"] == 2


def test_an_outage_answers_503_then_service_resumes() -> None:
    with simulator(SimulatorConfig()) as client:
        client.post("/admin/outage", json={"seconds": 1}).raise_for_status()
        answer = send(client)
        assert problem_code(answer, 503) == "unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
        assert client.get("/v1/credit-transfers/po-1").status_code == 503
        assert "paystream_rail_sim_outage 1.0" in client.get("/metrics").text
        assert wait_until(lambda: send(client).status_code == 200, timeout_s=WAIT_TIMEOUT_S)
        counts = report(client)
        assert counts["unavailable"] >= 2
        assert counts["instructions"] == 1


def test_a_lost_response_is_recorded_and_the_retry_gets_the_stored_status() -> None:
    config = SimulatorConfig(lost_response_rate=1.0, failure_rates={"AM05": 1.0})
    with simulator(config) as client:
        assert problem_code(send(client), 500) == "internal_error"
        assert report(client)["lost_responses"] == 1
        assert status_of(send(client, message_id="msg-retry")) == ("RJCT", "AM05")
        counts = report(client)
        assert (counts["instructions"], counts["repeats"], counts["errors"]) == (1, 1, 1)


def test_transient_errors_record_nothing() -> None:
    with simulator(SimulatorConfig(error_rate=1.0)) as client:
        assert problem_code(send(client), 500) == "internal_error"
        counts = report(client)
        assert (counts["instructions"], counts["errors"]) == (0, 1)


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">&e;</Document>',
        b"<x>" + b"a" * MESSAGE_BYTES_MAX + b"</x>",
        build_pain001(PAYOUT, message_id="m", created_at_ms=0).replace(
            b"<NbOfTxs>1", b"<NbOfTxs>x"
        ),
    ],
    ids=["garbage", "xxe", "oversize", "xsd"],
)
def test_invalid_bodies_get_400_problems(body: bytes) -> None:
    with simulator(SimulatorConfig()) as client:
        headers = {"Content-Type": "application/xml", "Idempotency-Key": "po-1"}
        answer = client.post("/v1/credit-transfers", content=body, headers=headers)
        assert problem_code(answer, 400) == "invalid_message"
        assert answer.json()["detail"]
        assert report(client)["instructions"] == 0


def test_the_idempotency_key_must_be_the_end_to_end_id() -> None:
    with simulator(SimulatorConfig()) as client:
        body = build_pain001(PAYOUT, message_id="m", created_at_ms=0)
        for headers in ({"Idempotency-Key": "po-2"}, {}):
            answer = client.post(
                "/v1/credit-transfers",
                content=body,
                headers={"Content-Type": "application/xml", **headers},
            )
            assert problem_code(answer, 400) == "idempotency_key_mismatch"
        answer = client.post(
            "/v1/credit-transfers", content=body, headers={"Content-Type": "text/plain"}
        )
        assert problem_code(answer, 415) == "unsupported_media_type"


def test_metrics_show_the_counts() -> None:
    with simulator(SimulatorConfig(failure_rates={"AC01": 1.0})) as client:
        send(client)
        send(client, message_id="msg-2")
        send(client, dataclasses.replace(PAYOUT, amount_minor=1), message_id="msg-3")
        text = client.get("/metrics").text
        assert (
            'paystream_rail_sim_requests_total{outcome="rejected",route="post_credit_transfer"} 1.0'
            in text
        )
        assert (
            'paystream_rail_sim_requests_total{outcome="repeat",route="post_credit_transfer"} 1.0'
            in text
        )
        assert "paystream_rail_sim_conflicts_total 1.0" in text
        assert 'paystream_rail_sim_instructions{status="RJCT"} 1.0' in text
        assert "paystream_rail_sim_rate_limit_episode 0.0" in text


class _Callbacks(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(self.rfile.read(length))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def test_final_statuses_are_called_back() -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/rail-status"
    try:
        with simulator(SimulatorConfig(settle_after_ms=100, callback_url=url)) as client:
            assert status_of(send(client))[0] == "ACCP"
            assert wait_until(lambda: len(_Callbacks.received) == 1, timeout_s=WAIT_TIMEOUT_S)
        assert parse_pacs002(_Callbacks.received[0]).status == "ACSC"
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_the_cli_starts_the_simulator() -> None:
    port = free_port()
    command = [sys.executable, "-m", "paystream.cli", "rail-sim", "--port", str(port),
               "--fail", "AC04=1.0", "--settle-after-ms", "0"]  # fmt: skip
    process = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_TIMEOUT_S) as client:

            def healthy() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return client.get("/healthz").status_code == 200
                return False

            assert wait_until(healthy, timeout_s=START_TIMEOUT_S * 2), "rail-sim did not start"
            assert status_of(send(client)) == ("RJCT", "AC04")
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)
    assert process.stdout is not None
    assert f"http://127.0.0.1:{port}/v1/credit-transfers" in process.stdout.read()


def test_a_full_simulator_refuses_new_instructions_with_507() -> None:
    with simulator(SimulatorConfig(instructions_max=1)) as client:
        assert status_of(send(client))[0] == "ACCP"
        other = dataclasses.replace(PAYOUT, end_to_end_id="po-2")
        assert problem_code(send(client, other), 507) == "simulator_full"
        assert status_of(send(client, message_id="msg-2"))[0] in {"ACCP", "ACSC"}
        assert report(client)["full"] == 1
