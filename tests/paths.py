"""Where the checkout's files are (the tests run from a checkout; the package does not assume one)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKOUT_INI = REPO / "alembic.ini"
