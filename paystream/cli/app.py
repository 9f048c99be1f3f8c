"""The ``paystream`` command: one typer app, one module per command group.

``main(argv)`` runs it and returns the exit code (tests call it; the console script exits
with it). Operating errors end with a message on stderr, never a traceback: a service that
is away exits 2, a problem the API answered exits 1 (``code: detail``), an API that does not
answer at all exits 2, a bad option exits 2 with the usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from paystream import services
from paystream.cli import (
    accounts,
    auth,
    notify,
    ops,
    partners,
    payments,
    rail,
    replay,
    screening,
    up,
    webhooks,
)
from paystream.cli.client import ApiProblem, ApiUnreachable

EXIT_PROBLEM = 1
EXIT_UNREACHABLE = 2

app = typer.Typer(
    name="paystream",
    help="Moves money on Kafka: run the platform, and use it through its REST API.",
    add_completion=False,
    no_args_is_help=True,
)
app.add_typer(ops.services_app, name="services")
app.command("demo")(ops.demo)
app.command("up")(up.up)
app.command("worker")(ops.worker)
app.add_typer(ops.sink_app, name="sink")
app.command("api")(ops.api)
app.command("analytics")(ops.analytics)
app.command("rail-sim")(rail.rail_sim)
app.command("rail")(rail.rail)
app.command("notify")(notify.notify)
app.command("mailbox")(notify.mailbox)
app.command("webhooks")(webhooks.webhooks)
app.command("token")(auth.token)
app.add_typer(ops.db_app, name="db")
app.add_typer(ops.audit_app, name="audit")
app.add_typer(ops.topology_app, name="topology")
app.command("replay")(replay.replay)
app.add_typer(accounts.accounts_app, name="accounts")
app.command("pay")(payments.pay)
for _name, _command in payments.money_commands.items():
    app.command(_name)(_command)
app.add_typer(payments.payments_app, name="payments")
app.add_typer(screening.screening_app, name="screening")
app.add_typer(partners.partners_app, name="partners")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``paystream`` with ``argv`` (default: the process's arguments); the exit code."""
    command = typer.main.get_command(app)
    args = None if argv is None else list(argv)
    try:
        code = command.main(args=args, prog_name="paystream", standalone_mode=False)
    except typer.TyperException as error:  # a usage error: the message and the usage
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            print(f"paystream: {error.format_message()}", file=sys.stderr)
        return error.exit_code
    except typer.Abort:
        print("paystream: aborted", file=sys.stderr)
        return 1
    except services.ServiceError as error:
        print(f"paystream: {error}", file=sys.stderr)
        return 2
    except ApiProblem as problem:
        print(f"{problem.code}: {problem.detail}", file=sys.stderr)
        return EXIT_PROBLEM
    except ApiUnreachable as error:
        print(f"paystream: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return code if isinstance(code, int) else 0
