"""``paystream rail-sim``: the bank-rail simulator as a process of its own (until Ctrl-C)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from paystream.cli.common import LOCAL_HOST, PORT_MAX, run_service

if TYPE_CHECKING:
    from paystream.rail.simulator import SimulatorConfig

__all__ = ["RAIL_SIM_PORT_DEFAULT", "rail", "rail_sim"]

RAIL_SIM_PORT_DEFAULT = 8070
FAILURE_OPTIONS_MAX = 32
"""``--fail`` options read (the simulator's own bound on reason codes)."""


def _failure_rates(pairs: list[str]) -> dict[str, float]:
    """``["AC04=0.02", "AM05=0.01"]`` as ``{"AC04": 0.02, "AM05": 0.01}``."""
    if len(pairs) > FAILURE_OPTIONS_MAX:
        raise typer.BadParameter(f"at most {FAILURE_OPTIONS_MAX} --fail options")
    rates: dict[str, float] = {}
    for pair in pairs:
        code, _, rate = pair.partition("=")
        try:
            rates[code.strip()] = float(rate)
        except ValueError:
            raise typer.BadParameter(f"{pair!r} is not CODE=RATE, like AC04=0.02") from None
    return rates


def rail_sim(
    host: Annotated[str, typer.Option(help="address to listen on")] = LOCAL_HOST,
    port: Annotated[int, typer.Option(min=0, max=PORT_MAX)] = RAIL_SIM_PORT_DEFAULT,
    seed: Annotated[int, typer.Option(help="fixes the verdicts and the faults")] = 0,
    fail: Annotated[
        list[str] | None,
        typer.Option(
            metavar="CODE=RATE", help="reject with an ISO reason code at this rate: AC04=0.02"
        ),
    ] = None,
    latency_ms: Annotated[int, typer.Option(min=0, help="fixed delay of every answer")] = 0,
    latency_median_ms: Annotated[
        int, typer.Option(min=0, help="lognormal delay around this median (0: fixed)")
    ] = 0,
    latency_sigma: Annotated[float, typer.Option(min=0.0, help="the lognormal's sigma")] = 0.0,
    settle_after_ms: Annotated[
        int, typer.Option(min=0, help="ACCP turns ACSC this long after acceptance")
    ] = 200,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="500 before recording anything")
    ] = 0.0,
    lost_response_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="record a new instruction, then answer 500")
    ] = 0.0,
    rate_per_s: Annotated[
        float, typer.Option(min=0.0, help="token bucket refill per second (0: unlimited)")
    ] = 0.0,
    burst: Annotated[int, typer.Option(min=0, help="token bucket size")] = 0,
    callback_url: Annotated[str | None, typer.Option(help="POST each final pacs.002 here")] = None,
    instructions_max: Annotated[
        int, typer.Option(min=1, help="distinct instructions held; more get 507")
    ] = 1_000_000,
) -> int:
    """a bank rail for payouts: pain.001 in, pacs.002 out, with outages and faults"""
    from paystream.rail.simulator import SimulatorConfig

    try:
        config = SimulatorConfig(
            seed=seed, latency_ms=latency_ms, latency_median_ms=latency_median_ms,
            latency_sigma=latency_sigma, settle_after_ms=settle_after_ms,
            failure_rates=_failure_rates(fail or []), error_rate=error_rate,
            lost_response_rate=lost_response_rate, rate_per_s=rate_per_s, burst=burst,
            callback_url=callback_url, instructions_max=instructions_max,
        )  # fmt: skip
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return _serve(config, host=host, port=port)


def _serve(config: SimulatorConfig, *, host: str, port: int) -> int:
    """Like ``paystream api``: uvicorn in the foreground, quiet logs, until Ctrl-C or SIGTERM."""
    import uvicorn

    from paystream.rail.simulator import create_app

    print(f"rail-sim: http://{host}:{port}/v1/credit-transfers (seed {config.seed})", flush=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False)
    return 0


RAIL_METRICS_PORT_DEFAULT = 9470


def rail(
    url: Annotated[
        str, typer.Option(help="the bank rail's base URL (paystream rail-sim, or a real rail)")
    ] = f"http://{LOCAL_HOST}:{RAIL_SIM_PORT_DEFAULT}",
    name: Annotated[
        str, typer.Option(help="unique per copy: its Kafka transactional id")
    ] = "rail-1",
    in_flight_max: Annotated[int, typer.Option(min=1, max=100_000)] = 512,
    rate_per_s: Annotated[
        float, typer.Option(min=1.0, help="starting send rate (AIMD adapts it)")
    ] = 100.0,
    rate_max_per_s: Annotated[float, typer.Option(min=1.0)] = 5_000.0,
    metrics_port: Annotated[
        int, typer.Option(min=0, max=PORT_MAX, help="0: no metrics server")
    ] = RAIL_METRICS_PORT_DEFAULT,
    metrics_host: Annotated[str, typer.Option()] = LOCAL_HOST,
) -> int:
    """send queued payouts to the bank rail and settle or fail them exactly once"""
    import logging

    from paystream.agents.supervisor import export_metrics_to
    from paystream.settings import Settings

    settings = Settings()
    # Before anything imports prometheus_client: it picks multiprocess mode at import.
    export_metrics_to(settings.data_dir / "metrics" / name)
    from paystream.payouts.connector import RailOptions, RailService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for chatty in ("stamina", "httpx"):  # a line per retry, a line per request
        logging.getLogger(chatty).setLevel(logging.WARNING)
    options = RailOptions(
        url=url, in_flight_max=in_flight_max, rate_per_s=min(rate_per_s, rate_max_per_s),
        rate_max_per_s=rate_max_per_s,
    )  # fmt: skip
    service = RailService(settings, options, name=name)
    return run_service(
        service, label=f"rail {name}", doing=f"paying out through {url}",
        metrics_port=metrics_port, metrics_host=metrics_host,
    )  # fmt: skip
