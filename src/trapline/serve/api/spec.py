"""Print the API's OpenAPI 3 spec as committed in ``docs/openapi.json``.

Example: python -m trapline.serve.api.spec > docs/openapi.json
"""

from __future__ import annotations

import sys

from trapline.serve.api.app import WebState, create_app, openapi_text


def spec_text() -> str:
    """The spec of the app as built, without a store (the spec does not depend on data)."""
    state = object.__new__(WebState)  # routes only; no store is opened
    return openapi_text(create_app(state))


if __name__ == "__main__":
    sys.stdout.write(spec_text())
