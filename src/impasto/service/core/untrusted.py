"""Integers from untrusted text — route ids, query numbers, form fields, token parts — in one place.

Python is generous with numbers: ``str.isdigit()`` says yes to ``"²"`` (which ``int()`` then
refuses with a ValueError), ``int()`` takes ``"١٢"``, ``" 12"``, ``"1_0"`` and ``"+5"``, and
either gives a number of any size, which the database refuses with an OverflowError
(SQLite) or a DataError (PostgreSQL's 32-bit ``INTEGER``): a 500 instead of a 4xx. So
every number that comes from a request goes through ``parse_int``: 1 to 19 ASCII digits,
no sign, no space, no underscore, within the range of where it goes.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from impasto.errors import NoSuchId

MAX_ID = 2**31 - 1            # an Integer primary key: PostgreSQL's INTEGER (SQLite's holds 64 bits)
MAX_TIMESTAMP = 2**40         # unix seconds in a signed URL or token: year 36812, far below 2**63
_DIGITS = re.compile(r"[0-9]{1,19}")      # [0-9], not \d: \d matches every script's digits

# The same rule for JSON bodies (pydantic): a real integer (no "12" string), in range.
DbId = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]


def parse_int(text: object, *, minimum: int = 0, maximum: int = MAX_ID) -> int | None:
    """``text`` as an int when it is ASCII digits within ``minimum..maximum``, else None.

    Accepts an ``int`` too (not a ``bool``), held to the same range; never raises."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        value = text
    elif isinstance(text, str) and _DIGITS.fullmatch(text):
        value = int(text)
    else:
        return None
    return value if minimum <= value <= maximum else None


def parse_id(text: object, what: str = "thing") -> int:
    """A database id from a URL or a form (1..``MAX_ID``); ``NoSuchId`` (404) otherwise."""
    value = parse_int(text, minimum=1)
    if value is None:
        raise NoSuchId(f"No such {what}.")
    return value
