"""Shipping addresses as print labs take them: name, two lines, city, region, postal code,
country (ISO 3166-1 alpha-2) and an optional phone number.

``check_address`` tidies what was typed (whitespace collapsed, no control characters) and
refuses the first field that is not acceptable with a message naming it (a 422 on the
page and in the API). Postal codes are checked for shape only: required except in the few
countries that have none, letters, digits, spaces and hyphens, 2–10 characters.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields

from impasto.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_POSTAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{0,8}[A-Za-z0-9]")
_PHONE = re.compile(r"\+?[0-9][0-9 ()./-]{4,30}")
# Countries without postal codes (a label with one would only confuse the carrier)
NO_POSTAL_CODE = frozenset({"AE", "AG", "AO", "AW", "BF", "BI", "BJ", "BO", "BS", "BW", "BZ", "CD", "CF",
                            "CG", "CI", "CK", "CM", "DJ", "DM", "ER", "FJ", "GA", "GD", "GH", "GM", "GQ",
                            "GY", "HK", "KI", "KM", "KN", "KP", "LY", "ML", "MO", "MR", "MW", "NR", "NU",
                            "QA", "RW", "SB", "SC", "SL", "SR", "SS", "ST", "SY", "TD", "TG", "TK", "TL",
                            "TO", "TV", "UG", "VU", "YE", "ZW"})
LIMITS = {"name": 200, "line1": 200, "line2": 200, "city": 100, "region": 100, "postal_code": 20,
          "country": 2, "phone": 40}


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    line2: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country: str = ""
    phone: str = ""

    @classmethod
    def from_order(cls, order) -> Address:
        return cls(**{f.name: getattr(order, f"shipping_{f.name}") for f in fields(cls)})

    def columns(self) -> dict[str, str]:
        """The order's ``shipping_*`` columns."""
        return {f"shipping_{f.name}": getattr(self, f.name) for f in fields(self)}

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def lines(self) -> list[str]:
        """The label, line by line (an order from before structured addresses: its text as typed)."""
        place = " ".join(part for part in (self.postal_code, self.city) if part)
        country = countries().get(self.country, self.country)
        lines = [self.name, *self.line1.splitlines(), self.line2, place, self.region, country]
        return [line for line in lines if line]


@functools.cache
def countries() -> dict[str, str]:
    """ISO 3166-1 alpha-2 code → its common name, sorted by name (the form's select)."""
    import pycountry

    names = {c.alpha_2: getattr(c, "common_name", None) or c.name for c in pycountry.countries}
    return dict(sorted(names.items(), key=lambda item: item[1]))


def _tidy(value: object) -> str:
    return " ".join(str(value or "").split())


def check_address(raw: dict[str, object]) -> Address:
    """The address with its text tidied; InvalidInput naming the first field that is not acceptable."""
    values = {name: _tidy(raw.get(name)) for name in LIMITS}
    values["country"] = values["country"].upper()
    values["postal_code"] = values["postal_code"].upper()
    for name, limit in LIMITS.items():
        if len(values[name]) > limit or _CONTROL.search(values[name]):
            raise InvalidInput(f"The {_label(name)} is too long (at most {limit} characters).")
    for name in ("name", "line1", "city"):
        if not values[name]:
            raise InvalidInput(f"Please enter the {_label(name)} to ship to.")
    if values["country"] not in countries():
        raise InvalidInput("Please choose the country to ship to.")
    postal = values["postal_code"]
    if postal and not _POSTAL.fullmatch(postal):
        raise InvalidInput("The postal code may hold letters, digits, spaces and hyphens (2–10 characters).")
    if not postal and values["country"] not in NO_POSTAL_CODE:
        raise InvalidInput("Please enter the postal code.")
    if values["phone"] and not _PHONE.fullmatch(values["phone"]):
        raise InvalidInput("The phone number may hold digits, spaces, brackets and a leading +.")
    return Address(**values)


def _label(name: str) -> str:
    return {"name": "name", "line1": "street address", "line2": "second address line", "city": "city",
            "region": "region or state", "postal_code": "postal code", "country": "country",
            "phone": "phone number"}[name]
