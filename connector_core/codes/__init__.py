"""LHDN's official code tables, shipped as package data.

The JSON files under ``tables/`` are LHDN's own (https://sdk.myinvois.hasil.gov.my/codes/),
copied unchanged. Both the connector's pre-validation and the simulator's validator read
them from here, so a code is accepted or refused the same way on both sides.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

#: Table name -> the key that holds the description in that file.
_DESCRIPTION_KEY = {
    "ClassificationCodes": "Description",
    "CountryCodes": "Country",
    "CurrencyCodes": "Currency",
    "EInvoiceTypes": "Description",
    "MSICSubCategoryCodes": "Description",
    "PaymentMethods": "Payment Method",
    "StateCodes": "State",
    "TaxTypes": "Description",
    "UnitTypes": "Name",
}

TABLES = tuple(_DESCRIPTION_KEY)


@cache
def code_table(name: str) -> dict[str, str]:
    """Return ``{code: description}`` for one of :data:`TABLES`."""
    if name not in _DESCRIPTION_KEY:
        raise KeyError(f"unknown code table {name!r}; known: {', '.join(TABLES)}")
    raw = resources.files(__package__).joinpath("tables", f"{name}.json").read_text("utf-8")
    key = _DESCRIPTION_KEY[name]
    return {row["Code"].strip(): str(row.get(key, "")).strip() for row in json.loads(raw)}


def is_valid_code(table: str, code: str | None) -> bool:
    return code is not None and code in code_table(table)


def describe(table: str, code: str) -> str | None:
    return code_table(table).get(code)
