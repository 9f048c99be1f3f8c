"""The ``paystream`` command (typer): see :mod:`paystream.cli.app`."""

from __future__ import annotations

from paystream.cli.app import app, main

__all__ = ["app", "main"]
