"""Find, before any API call, what MyInvois would refuse in an invoice — all of it at once.

Each :class:`Problem` names the field by its dotted path in the canonical model
(``buyer.phone``, ``lines[2].classification_codes[0]``), says what is wrong in words a finance
clerk understands, and says what to change. Checking never stops at the first problem: a clerk
fixing an invoice in the ERP should see everything in one go, not one rejection per attempt.

The rules come from API.md §7.4 (mandatory fields, lengths, code tables, TIN formats) and §7.5
(general TINs). They are written independently of the simulator's validator on purpose: the
two check each other against the same specification.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from connector_core.codes import is_valid_code
from connector_core.document.builder import BuiltDocument
from connector_core.model import Address, Invoice, InvoiceLine, Party

#: MyInvois refuses any single document above 300 KB (API.md §3).
MAX_DOCUMENT_BYTES = 300 * 1024

MAX_NUMBER = 50
MAX_NAME = 300
MAX_DESCRIPTION = 300
MAX_BUSINESS_ACTIVITY = 300
MAX_TIN = 14
MAX_SST = 35
MAX_TTX = 17
MAX_PHONE = 20
MIN_PHONE = 8
MAX_ADDRESS_LINE = 150
MAX_CITY = 50
MAX_POSTAL_ZONE = 50
MAX_PAYMENT_TERMS = 300
MAX_BILLING_FREQUENCY = 50
MAX_EXEMPTION_REASON = 300
MAX_EMAIL = 320
MAX_SST_NUMBERS = 2

NOT_APPLICABLE = "NA"
STATE_NOT_APPLICABLE = "17"
MALAYSIA = "MYS"
RINGGIT = "MYR"
EXEMPT_TAX_TYPE = "E"
EXAMPLE_PHONE = "+60123456789"

# General TINs (API.md §7.5) and the only roles each may play.
GENERAL_PUBLIC_TIN = "EI00000000010"
FOREIGN_BUYER_TIN = "EI00000000020"
FOREIGN_SUPPLIER_TIN = "EI00000000030"
GOVERNMENT_BUYER_TIN = "EI00000000040"
GENERAL_TINS = {
    GENERAL_PUBLIC_TIN: "the general public (a consolidated e-invoice, or a Malaysian individual with only a MyKad/MyTentera)",
    FOREIGN_BUYER_TIN: "a foreign buyer without a Malaysian TIN",
    FOREIGN_SUPPLIER_TIN: "a foreign supplier without a Malaysian TIN (self-billed documents only)",
    GOVERNMENT_BUYER_TIN: "a government body or exempt institution without a TIN",
}
#: Which general TINs the party that does *not* issue the document may carry.
GENERAL_TINS_FOR_BUYER = (GENERAL_PUBLIC_TIN, FOREIGN_BUYER_TIN, GOVERNMENT_BUYER_TIN)
GENERAL_TINS_FOR_SELF_BILLED_SUPPLIER = (GENERAL_PUBLIC_TIN, FOREIGN_SUPPLIER_TIN)

INDIVIDUAL_TIN = re.compile(r"IG\d+")
NON_INDIVIDUAL_PREFIXES = ("C", "CS", "D", "F", "FA", "PT", "TA", "TC", "TN", "TR", "TP", "J", "LE")
_NON_INDIVIDUAL_TIN = re.compile(r"(?P<prefix>[A-Z]{1,2})(?P<digits>\d+)")
PHONE = re.compile(r"\+?\d+")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MYINVOIS_UUID = re.compile(r"[A-Za-z0-9]{26}")


@dataclass(frozen=True)
class Problem:
    """One thing MyInvois would refuse, and how to put it right."""

    field: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} — {self.fix}"


def describe_problems(problems: Iterable[Problem]) -> list[str]:
    """One sentence per problem, e.g. ``"buyer.phone: the buyer's telephone number is missing —
    enter it in international form such as +60123456789"``."""
    return [str(problem) for problem in problems]


def check_size(built: BuiltDocument) -> list[Problem]:
    """The 300 KB limit applies to the serialised document, so it is checked after building."""
    if built.size <= MAX_DOCUMENT_BYTES:
        return []
    return [
        Problem(
            "document",
            f"the e-invoice is {built.size / 1024:.0f} KB, more than the {MAX_DOCUMENT_BYTES // 1024} KB MyInvois accepts for one document",
            "split it into several invoices with fewer lines, or shorten long line descriptions",
        )
    ]


def prevalidate(invoice: Invoice) -> list[Problem]:
    """Every problem of ``invoice`` that MyInvois would reject, in field order; ``[]`` if none."""
    problems: list[Problem] = []
    _check_header(invoice, problems)
    _check_references(invoice, problems)
    _check_parties(invoice, problems)
    for index, line in enumerate(invoice.lines):
        _check_line(line, index, problems)
    return problems


# ---------------------------------------------------------------------------------------------
# Small helpers: each appends to ``problems`` and returns whether the value passed.


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _required(value: str | None, field: str, what: str, fix: str, problems: list[Problem]) -> bool:
    if _blank(value):
        problems.append(Problem(field, f"{what} is missing", fix))
        return False
    return True


def _max_length(value: str | None, limit: int, field: str, what: str, problems: list[Problem]) -> bool:
    if value is not None and len(value) > limit:
        problems.append(
            Problem(
                field,
                f"{what} is {len(value)} characters long; MyInvois accepts at most {limit}",
                f"shorten it to {limit} characters or fewer",
            )
        )
        return False
    return True


def _in_table(table: str, code: str | None, field: str, what: str, fix: str, problems: list[Problem]) -> bool:
    if code is not None and not is_valid_code(table, code):
        problems.append(Problem(field, f"{what} '{code}' is not in LHDN's code list", fix))
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Header


def _check_header(invoice: Invoice, problems: list[Problem]) -> None:
    if _required(
        invoice.number,
        "number",
        "the e-invoice number",
        f"enter the invoice number (at most {MAX_NUMBER} characters)",
        problems,
    ):
        _max_length(invoice.number, MAX_NUMBER, "number", "the e-invoice number", problems)

    _in_table(
        "CurrencyCodes",
        invoice.currency,
        "currency",
        "the currency code",
        "use the three-letter ISO 4217 code, such as MYR, USD or SGD",
        problems,
    )
    if invoice.currency != RINGGIT:
        if invoice.exchange_rate is None:
            problems.append(
                Problem(
                    "exchange_rate",
                    f"the invoice is in {invoice.currency} but has no exchange rate to ringgit, which MyInvois requires for foreign currencies",
                    f"enter how many MYR one {invoice.currency} is worth on the invoice date, e.g. 4.47",
                )
            )
        elif invoice.exchange_rate <= 0:
            problems.append(
                Problem(
                    "exchange_rate",
                    f"the exchange rate {invoice.exchange_rate} is not a positive number",
                    f"enter how many MYR one {invoice.currency} is worth, e.g. 4.47",
                )
            )

    _in_table(
        "PaymentMethods",
        invoice.payment_mode,
        "payment_mode",
        "the payment mode",
        "use one of LHDN's payment codes: 01 cash, 02 cheque, 03 bank transfer, 04 credit card, 05 debit card, "
        "06 e-wallet, 07 digital bank, 08 others",
        problems,
    )
    _max_length(invoice.payment_terms, MAX_PAYMENT_TERMS, "payment_terms", "the payment terms", problems)
    _max_length(
        invoice.billing_frequency, MAX_BILLING_FREQUENCY, "billing_frequency", "the billing frequency", problems
    )
    start, end = invoice.billing_period_start, invoice.billing_period_end
    if start and end and start > end:
        problems.append(
            Problem(
                "billing_period_end",
                f"the billing period ends ({end}) before it starts ({start})",
                "correct the start or end date of the billing period",
            )
        )


def _check_references(invoice: Invoice, problems: list[Problem]) -> None:
    if not invoice.document_type.needs_original_reference:
        return
    if not invoice.original_references:
        problems.append(
            Problem(
                "original_references",
                "a credit, debit or refund note must name the original invoice it adjusts, and none is given",
                "enter the number of the original invoice (and its MyInvois UUID if it was submitted to MyInvois)",
            )
        )
    for index, reference in enumerate(invoice.original_references):
        field = f"original_references[{index}]"
        _required(
            reference.internal_id,
            f"{field}.internal_id",
            "the original invoice number",
            "enter the number of the invoice this note adjusts",
            problems,
        )
        uuid = reference.uuid
        if uuid is not None and uuid != NOT_APPLICABLE and not MYINVOIS_UUID.fullmatch(uuid):
            problems.append(
                Problem(
                    f"{field}.uuid",
                    f"'{uuid}' does not look like a MyInvois UUID (26 letters and digits)",
                    "copy the UUID from the original invoice's MyInvois record, or leave it empty if it never went through MyInvois",
                )
            )


# ---------------------------------------------------------------------------------------------
# Parties


def _check_parties(invoice: Invoice, problems: list[Problem]) -> None:
    self_billed = invoice.document_type.is_self_billed
    consolidated_buyer = not self_billed and invoice.buyer.tin == GENERAL_PUBLIC_TIN
    _check_party(
        invoice.supplier,
        "supplier",
        general_tins_allowed=GENERAL_TINS_FOR_SELF_BILLED_SUPPLIER if self_billed else (),
        is_consolidated_party=self_billed and invoice.supplier.tin == GENERAL_PUBLIC_TIN,
        problems=problems,
    )
    _check_supplier_activity(invoice.supplier, problems)
    _check_party(
        invoice.buyer,
        "buyer",
        general_tins_allowed=() if self_billed else GENERAL_TINS_FOR_BUYER,
        is_consolidated_party=consolidated_buyer,
        problems=problems,
    )


def _check_party(
    party: Party,
    role: str,
    *,
    general_tins_allowed: tuple[str, ...],
    is_consolidated_party: bool,
    problems: list[Problem],
) -> None:
    whose = f"the {role}'s"
    if _required(party.name, f"{role}.name", f"{whose} name", f"enter the {role}'s registered name", problems):
        _max_length(party.name, MAX_NAME, f"{role}.name", f"{whose} name", problems)

    _check_tin(party.tin, role, general_tins_allowed, problems)
    uses_general_tin = party.tin in GENERAL_TINS

    id_label = {
        "BRN": "business registration number",
        "NRIC": "MyKad/MyTentera number",
        "PASSPORT": "passport number",
        "ARMY": "army number",
    }[party.id_type]
    if _required(party.id_value, f"{role}.id_value", f"{whose} {id_label}", f"enter the {role}'s {id_label}", problems):
        if party.id_value.strip().upper() == NOT_APPLICABLE and not uses_general_tin:
            problems.append(
                Problem(
                    f"{role}.id_value",
                    f"{whose} {id_label} is 'NA', which MyInvois accepts only together with a general TIN",
                    f"enter the {role}'s real {id_label}",
                )
            )

    if _required(
        party.sst,
        f"{role}.sst",
        f"{whose} SST registration number",
        "enter it, or NA if not registered for SST",
        problems,
    ):
        if _max_length(party.sst, MAX_SST, f"{role}.sst", f"{whose} SST registration number", problems):
            if len([n for n in party.sst.split(";") if n.strip()]) > MAX_SST_NUMBERS:
                problems.append(
                    Problem(
                        f"{role}.sst",
                        f"{whose} SST field holds more than {MAX_SST_NUMBERS} numbers",
                        "keep at most two SST numbers, separated by ';'",
                    )
                )
    if _required(
        party.ttx,
        f"{role}.ttx",
        f"{whose} tourism tax registration number",
        "enter it, or NA if not registered for tourism tax",
        problems,
    ):
        _max_length(party.ttx, MAX_TTX, f"{role}.ttx", f"{whose} tourism tax registration number", problems)

    _check_address(party.address, role, is_consolidated_party, problems)
    _check_phone(party.phone, role, is_consolidated_party, problems)
    if party.email is not None and party.email.strip():
        if not EMAIL.fullmatch(party.email) or len(party.email) > MAX_EMAIL:
            problems.append(
                Problem(
                    f"{role}.email",
                    f"{whose} e-mail address '{party.email}' is not a valid address",
                    "correct it, or leave it empty",
                )
            )


def _check_tin(tin: str, role: str, general_tins_allowed: tuple[str, ...], problems: list[Problem]) -> None:
    field, whose = f"{role}.tin", f"the {role}'s"
    if not _required(
        tin,
        field,
        f"{whose} tax identification number (TIN)",
        f"enter the {role}'s TIN as registered with LHDN",
        problems,
    ):
        return
    if not _max_length(tin, MAX_TIN, field, f"{whose} TIN", problems):
        return
    if tin in GENERAL_TINS:
        if tin not in general_tins_allowed:
            problems.append(
                Problem(
                    field,
                    f"{tin} is the general TIN for {GENERAL_TINS[tin]} and cannot be used for the {role} of this document",
                    f"enter the {role}'s own TIN"
                    + (
                        f", or one of the general TINs allowed here: {', '.join(general_tins_allowed)}"
                        if general_tins_allowed
                        else ""
                    ),
                )
            )
        return
    if tin.startswith(("OG", "SG")):
        problems.append(
            Problem(
                field,
                f"{whose} TIN {tin} uses the old OG/SG prefix for individuals",
                "use the individual's IG number instead (OG/SG were replaced by IG)",
            )
        )
        return
    if INDIVIDUAL_TIN.fullmatch(tin):
        return
    match = _NON_INDIVIDUAL_TIN.fullmatch(tin)
    if not match or match["prefix"] not in NON_INDIVIDUAL_PREFIXES:
        problems.append(
            Problem(
                field,
                f"{whose} TIN {tin} is not a valid TIN: it must start with IG (individuals) or one of "
                f"{', '.join(NON_INDIVIDUAL_PREFIXES)} (companies and other entities), followed by digits only",
                f"check the TIN on the {role}'s LHDN records and enter it without spaces or dashes",
            )
        )
        return
    digits = match["digits"]
    if digits.startswith("0"):
        problems.append(
            Problem(
                field,
                f"{whose} TIN {tin} has zeros right after the prefix",
                f"remove the leading zeros after '{match['prefix']}'",
            )
        )
    if not digits.endswith("0"):
        problems.append(
            Problem(
                field,
                f"{whose} TIN {tin} does not end in 0; TINs of companies and other non-individuals always do",
                f"add a 0 at the end (for example C2584563202 becomes C25845632020), then check it against the {role}'s LHDN records",
            )
        )


def _check_supplier_activity(supplier: Party, problems: list[Problem]) -> None:
    if _required(
        supplier.msic_code,
        "supplier.msic_code",
        "the supplier's MSIC code (5-digit industry classification)",
        "enter the supplier's 5-digit MSIC code, e.g. 46510 (00000 if not applicable)",
        problems,
    ):
        _in_table(
            "MSICSubCategoryCodes",
            supplier.msic_code,
            "supplier.msic_code",
            "the supplier's MSIC code",
            "use a 5-digit code from LHDN's MSIC list, e.g. 46510",
            problems,
        )
    if _required(
        supplier.business_activity,
        "supplier.business_activity",
        "the supplier's business activity description",
        "enter the business activity as registered, e.g. 'Wholesale of computer hardware, software and peripherals'",
        problems,
    ):
        _max_length(
            supplier.business_activity,
            MAX_BUSINESS_ACTIVITY,
            "supplier.business_activity",
            "the supplier's business activity",
            problems,
        )


def _check_address(address: Address, role: str, is_consolidated_party: bool, problems: list[Problem]) -> None:
    prefix, whose = f"{role}.address", f"the {role}'s"
    first_line = address.lines[0] if address.lines else None
    _required(
        first_line, f"{prefix}.lines[0]", f"the first line of {whose} address", "enter the street address", problems
    )
    for index, line in enumerate(address.lines):
        _max_length(
            line, MAX_ADDRESS_LINE, f"{prefix}.lines[{index}]", f"line {index + 1} of {whose} address", problems
        )
    if _required(address.city, f"{prefix}.city", f"the city in {whose} address", "enter the city or town", problems):
        _max_length(address.city, MAX_CITY, f"{prefix}.city", f"the city in {whose} address", problems)
    _max_length(
        address.postal_zone, MAX_POSTAL_ZONE, f"{prefix}.postal_zone", f"the postcode in {whose} address", problems
    )

    country_ok = _required(
        address.country,
        f"{prefix}.country",
        f"the country in {whose} address",
        "enter the 3-letter country code, e.g. MYS",
        problems,
    )
    country_ok = country_ok and _in_table(
        "CountryCodes",
        address.country,
        f"{prefix}.country",
        f"the country in {whose} address",
        "use the 3-letter ISO country code, e.g. MYS for Malaysia, SGP for Singapore",
        problems,
    )
    if _required(
        address.state,
        f"{prefix}.state",
        f"the state in {whose} address",
        "enter the state code, e.g. 14 for Kuala Lumpur",
        problems,
    ):
        if _in_table(
            "StateCodes",
            address.state,
            f"{prefix}.state",
            f"the state in {whose} address",
            "use LHDN's 2-digit state code, e.g. 10 for Selangor or 14 for Kuala Lumpur",
            problems,
        ):
            if (
                address.state == STATE_NOT_APPLICABLE
                and country_ok
                and address.country == MALAYSIA
                and not is_consolidated_party
            ):
                problems.append(
                    Problem(
                        f"{prefix}.state",
                        f"state code 17 ('not applicable') is only accepted for addresses outside Malaysia or a consolidated buyer, but {whose} address is in Malaysia",
                        "enter the Malaysian state code, e.g. 10 for Selangor or 14 for Kuala Lumpur",
                    )
                )


def _check_phone(phone: str, role: str, is_consolidated_party: bool, problems: list[Problem]) -> None:
    field, what = f"{role}.phone", f"the {role}'s telephone number"
    fix = f"enter it in international form such as {EXAMPLE_PHONE}"
    if not _required(phone, field, what, fix, problems):
        return
    if phone.strip().upper() == NOT_APPLICABLE:
        if not is_consolidated_party:
            problems.append(
                Problem(field, f"{what} is 'NA', which MyInvois accepts only for a consolidated buyer", fix)
            )
        return
    if not PHONE.fullmatch(phone) or not MIN_PHONE <= len(phone) <= MAX_PHONE:
        problems.append(
            Problem(
                field,
                f"{what} '{phone}' is not a valid number: it must be {MIN_PHONE} to {MAX_PHONE} characters, digits with an optional leading +",
                f"remove spaces, dashes and brackets and {fix}",
            )
        )


# ---------------------------------------------------------------------------------------------
# Lines


def _check_line(line: InvoiceLine, index: int, problems: list[Problem]) -> None:
    # Paths count from 0 like the model's list; clerks count lines from 1.
    prefix, which = f"lines[{index}]", f"line {index + 1}"
    _required(
        line.line_id,
        f"{prefix}.line_id",
        f"the line number of {which}",
        "number the invoice lines, e.g. 1, 2, 3",
        problems,
    )
    if _required(
        line.description,
        f"{prefix}.description",
        f"the description of {which}",
        "describe the goods or service sold",
        problems,
    ):
        _max_length(line.description, MAX_DESCRIPTION, f"{prefix}.description", f"the description of {which}", problems)

    if not line.classification_codes:
        problems.append(
            Problem(
                f"{prefix}.classification_codes",
                f"{which} has no classification code",
                "add a 3-digit LHDN classification code, e.g. 022 for others",
            )
        )
    for code_index, code in enumerate(line.classification_codes):
        _in_table(
            "ClassificationCodes",
            code,
            f"{prefix}.classification_codes[{code_index}]",
            f"the classification code of {which}",
            "use a 3-digit code from LHDN's classification list, e.g. 022 for others",
            problems,
        )
    _in_table(
        "UnitTypes",
        line.unit_code,
        f"{prefix}.unit_code",
        f"the unit of measure of {which}",
        "use a UN/ECE unit code, e.g. C62 for 'one', H87 for piece, KGM for kilogram",
        problems,
    )
    _in_table(
        "CountryCodes",
        line.origin_country,
        f"{prefix}.origin_country",
        f"the country of origin of {which}",
        "use the 3-letter ISO country code, e.g. MYS, CHN",
        problems,
    )

    if not line.taxes:
        problems.append(
            Problem(f"{prefix}.taxes", f"{which} has no tax entry", "add a tax entry (tax type 06 if no tax applies)")
        )
    for tax_index, tax in enumerate(line.taxes):
        field = f"{prefix}.taxes[{tax_index}]"
        _in_table(
            "TaxTypes",
            tax.tax_type,
            f"{field}.tax_type",
            f"the tax type of {which}",
            "use 01 sales tax, 02 service tax, 03 tourism tax, 04 high-value goods tax, 05 low value goods tax, 06 not applicable or E exempt",
            problems,
        )
        if tax.rate is not None and not Decimal("0") <= tax.rate <= Decimal("100"):
            problems.append(
                Problem(
                    f"{field}.rate",
                    f"the tax rate {tax.rate} % of {which} is not between 0 and 100",
                    "enter the rate as a percentage, e.g. 6 or 10",
                )
            )
        if tax.tax_type == EXEMPT_TAX_TYPE:
            _required(
                tax.exemption_reason,
                f"{field}.exemption_reason",
                f"the reason for the tax exemption of {which}",
                "enter the exemption reason, e.g. the exemption order or certificate",
                problems,
            )
        _max_length(
            tax.exemption_reason,
            MAX_EXEMPTION_REASON,
            f"{field}.exemption_reason",
            f"the exemption reason of {which}",
            problems,
        )
