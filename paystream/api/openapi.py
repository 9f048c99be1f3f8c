"""The API's OpenAPI document, committed as ``docs/openapi.json`` (a test checks for drift).

``python -m paystream.api.openapi`` rewrites it after the API changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from paystream.api.app import create_app
from paystream.settings import Settings

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    """The document, independent of where the API runs (no issuer or database is touched)."""
    app = create_app(
        Settings(), issuer="https://issuer.invalid/realms/paystream", dsn="postgresql:///none"
    )
    return app.openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    DOC_PATH.write_text(render())
    print(f"wrote {DOC_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
