"""The simulator's document validator: LHDN's validation steps applied to one document.

Written from the specification (API.md §7), not from the connector's own pre-validation,
so that each checks the other. Structure problems that make a document unreadable are found
at submission time (see ``parse_document``); everything here is the asynchronous part whose
outcome the client only sees once the document leaves ``Submitted``.

Error codes: LHDN publishes no catalogue. ``DS302`` is official; the ``CF``/``TX``/``CD``
codes below are the simulator's own, listed in docs/simulator.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from connector_core.codes import code_table

from .config import ValidationConfig
from .ubl import Node, child, children, number, text, xml_to_json_notation

STEP_NAMES = (
    "Step01-Structure Validator",
    "Step02-Core Fields Validator",
    "Step03-Duplicated Submission Validator",
    "Step04-Signature Validator",
    "Step05-Taxpayer Validator",
    "Step06-Referenced Documents Validator",
    "Step07-Code Validator",
    "Step08-Currency Validator",
)
STRUCTURE, CORE, DUPLICATE, SIGNATURE, TAXPAYER, REFERENCES, CODES, CURRENCY = range(len(STEP_NAMES))

SELF_BILLED_TYPES = frozenset({"11", "12", "13", "14"})
NOTE_TYPES = frozenset({"02", "03", "04", "12", "13", "14"})
SIGNED_VERSIONS = frozenset({"1.1", "1.3"})
KNOWN_VERSIONS = frozenset({"1.0", "1.1", "1.2", "1.3"})
ID_SCHEMES = ("BRN", "NRIC", "PASSPORT", "ARMY")

GENERAL_PUBLIC_TIN = "EI00000000010"
FOREIGN_BUYER_TIN = "EI00000000020"
FOREIGN_SUPPLIER_TIN = "EI00000000030"
GOVERNMENT_BUYER_TIN = "EI00000000040"
GENERAL_TINS = frozenset({GENERAL_PUBLIC_TIN, FOREIGN_BUYER_TIN, FOREIGN_SUPPLIER_TIN, GOVERNMENT_BUYER_TIN})
#: Which general TINs may stand in which role (Specific Guideline, Appendix 1).
GENERAL_TINS_AS_SUPPLIER = frozenset({GENERAL_PUBLIC_TIN, FOREIGN_SUPPLIER_TIN})
GENERAL_TINS_AS_BUYER = frozenset({GENERAL_PUBLIC_TIN, FOREIGN_BUYER_TIN, GOVERNMENT_BUYER_TIN})

_INDIVIDUAL_TIN = re.compile(r"IG\d{9,12}")
# Non-individual TINs: a known prefix, no leading zero after it, always ending in 0.
_NON_INDIVIDUAL_TIN = re.compile(r"(?:CS|FA|PT|TA|TC|TN|TR|TP|LE|C|D|F|J)[1-9]\d*0")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
#: E.164 as MyInvois enforces it: digits, an optional leading +, nothing else (no spaces, letters, dashes).
_TELEPHONE = re.compile(r"\+?\d+")

#: Field lengths of API.md §7.4 (enforced in sandbox since 15 Dec 2025, production 15 Aug 2026).
MAX_NAME = 300
MAX_DESCRIPTION = 300
MAX_BUSINESS_ACTIVITY = 300
MAX_SST = 35
MAX_TELEPHONE = 20
#: "Not applicable" state: only for foreign addresses or the consolidated general-public party (30 Apr 2026).
STATE_NOT_APPLICABLE = "17"
MALAYSIA = "MYS"


def is_well_formed_tin(tin: str | None) -> bool:
    if not tin or len(tin) > 14:
        return False
    return tin in GENERAL_TINS or bool(_INDIVIDUAL_TIN.fullmatch(tin) or _NON_INDIVIDUAL_TIN.fullmatch(tin))


@dataclass(slots=True, frozen=True)
class Problem:
    step: int
    code: str
    message: str
    message_ms: str
    property_name: str | None = None
    property_path: str | None = None


@dataclass(slots=True)
class DocumentFacts:
    """What the API reports about a document, read leniently so even invalid ones have a summary."""

    internal_id: str = ""
    type_code: str = ""
    version: str = ""
    currency: str = ""
    issue_date: str = ""
    issue_time: str = ""
    issued_at: datetime | None = None
    supplier_tin: str = ""
    supplier_name: str = ""
    supplier_id: str = ""
    buyer_tin: str = ""
    buyer_name: str = ""
    buyer_id: str = ""
    total_excluding_tax: float = 0.0
    total_discount: float = 0.0
    total_net_amount: float = 0.0
    total_payable_amount: float = 0.0
    referenced_uuids: tuple[str, ...] = ()

    @property
    def self_billed(self) -> bool:
        return self.type_code in SELF_BILLED_TYPES

    @property
    def issuer_tin(self) -> str:
        """The party that issues (and submits) the document: the buyer for self-billed types."""
        return self.buyer_tin if self.self_billed else self.supplier_tin

    @property
    def issuer_name(self) -> str:
        return self.buyer_name if self.self_billed else self.supplier_name

    @property
    def receiver_tin(self) -> str:
        return self.supplier_tin if self.self_billed else self.buyer_tin

    @property
    def receiver_name(self) -> str:
        return self.supplier_name if self.self_billed else self.buyer_name

    def duplicate_key(self) -> tuple[str, str, str, str, str, str]:
        """The fields LHDN compares to call a document a duplicate (FAQ; API.md §3)."""
        return (self.type_code, self.version, self.issue_date, self.issue_time, self.internal_id, self.issuer_tin)


class UnreadableDocument(ValueError):
    """The document cannot be parsed at all; it is rejected synchronously at submission."""

    def __init__(self, message: str, property_path: str | None = None) -> None:
        super().__init__(message)
        self.property_path = property_path


def parse_document(raw: bytes, document_format: str) -> Node:
    """Decode the submitted bytes to the JSON notation's ``Invoice`` element."""
    try:
        if document_format == "XML":
            tree = xml_to_json_notation(raw)
        else:
            tree = json.loads(raw)
    except (ValueError, SyntaxError) as exc:  # JSONDecodeError and ParseError are both ValueError/SyntaxError
        raise UnreadableDocument(f"{document_format} is not valid: {exc}") from None
    invoice = child(tree, "Invoice") if isinstance(tree, dict) else None
    if invoice is None:
        raise UnreadableDocument("ArrayItemNotValid: #/Invoice[0] the document has no Invoice element", "#/Invoice[0]")
    return invoice


def _party_id(party: Node | None, schemes: tuple[str, ...]) -> tuple[str, str]:
    """(scheme, value) of the first PartyIdentification/ID whose schemeID is one of ``schemes``."""
    for identification in children(party, "PartyIdentification"):
        ident = child(identification, "ID")
        if ident and ident.get("schemeID") in schemes:
            return ident["schemeID"], text(ident) or ""
    return "", ""


def _issued_at(date: str, time: str) -> datetime | None:
    if not _DATE.fullmatch(date) or not _TIME.fullmatch(time):
        return None
    try:
        return datetime.fromisoformat(f"{date}T{time[:-1]}").replace(tzinfo=UTC)
    except ValueError:
        return None


def read_facts(invoice: Node) -> DocumentFacts:
    supplier = child(invoice, "AccountingSupplierParty", "Party")
    buyer = child(invoice, "AccountingCustomerParty", "Party")
    totals = child(invoice, "LegalMonetaryTotal")
    type_node = child(invoice, "InvoiceTypeCode")
    facts = DocumentFacts(
        internal_id=text(invoice, "ID") or "",
        type_code=text(type_node) or "",
        version=str(type_node.get("listVersionID", "")) if type_node else "",
        currency=text(invoice, "DocumentCurrencyCode") or "",
        issue_date=text(invoice, "IssueDate") or "",
        issue_time=text(invoice, "IssueTime") or "",
        supplier_tin=_party_id(supplier, ("TIN",))[1],
        supplier_name=text(supplier, "PartyLegalEntity", "RegistrationName") or "",
        supplier_id=_party_id(supplier, ID_SCHEMES)[1],
        buyer_tin=_party_id(buyer, ("TIN",))[1],
        buyer_name=text(buyer, "PartyLegalEntity", "RegistrationName") or "",
        buyer_id=_party_id(buyer, ID_SCHEMES)[1],
        total_excluding_tax=number(totals, "TaxExclusiveAmount") or 0.0,
        total_discount=number(totals, "AllowanceTotalAmount") or 0.0,
        total_net_amount=number(totals, "LineExtensionAmount") or 0.0,
        total_payable_amount=number(totals, "PayableAmount") or 0.0,
    )
    facts.issued_at = _issued_at(facts.issue_date, facts.issue_time)
    references = []
    for billing in children(invoice, "BillingReference"):
        for ref in children(billing, "InvoiceDocumentReference"):
            uuid = text(ref, "UUID")
            if uuid:
                references.append(uuid)
    facts.referenced_uuids = tuple(references)
    return facts


class _Checker:
    """Collects problems for one document; one method per validation step."""

    def __init__(self, invoice: Node, facts: DocumentFacts, received_at: datetime, config: ValidationConfig):
        self.invoice = invoice
        self.facts = facts
        self.received_at = received_at
        self.config = config
        self.problems: list[Problem] = []

    def add(self, step: int, code: str, message: str, message_ms: str, name: str | None, path: str | None) -> None:
        self.problems.append(Problem(step, code, message, message_ms, name, path))

    def require(self, node: Node | None, path: tuple[str, ...], label: str, code: str = "CF301") -> str | None:
        value = text(node, *path)
        if value is None or value == "":
            dotted = ".".join(path)
            self.add(
                CORE, code, f"{label} is required", f"{label} diperlukan", path[-1], f"{self._where(node)}.{dotted}"
            )
            return None
        return value

    def _where(self, node: Node | None) -> str:
        return self._paths.get(id(node), "Invoice")

    # -- steps ---------------------------------------------------------------------------------

    def run(self) -> list[Problem]:
        inv = self.invoice
        supplier = child(inv, "AccountingSupplierParty", "Party")
        buyer = child(inv, "AccountingCustomerParty", "Party")
        self._paths = {
            id(inv): "Invoice",
            id(supplier): "Invoice.AccountingSupplierParty.Party",
            id(buyer): "Invoice.AccountingCustomerParty.Party",
        }
        self.structure(supplier, buyer)
        self.core_header()
        self.core_party(supplier, "SUPPLIER", relaxed=False)
        self.core_party(buyer, "BUYER", relaxed=self.facts.buyer_tin in GENERAL_TINS)
        self.core_lines()
        self.signature()
        self.taxpayers()
        self.references()
        self.codes(supplier, buyer)
        self.currency()
        return self.problems

    def structure(self, supplier: Node | None, buyer: Node | None) -> None:
        for name, node in (("AccountingSupplierParty", supplier), ("AccountingCustomerParty", buyer)):
            if node is None:
                self.add(
                    STRUCTURE,
                    "CF001",
                    f"ArrayItemNotValid: #/Invoice[0]/{name} is missing or malformed",
                    f"Struktur tidak sah: {name}",
                    name,
                    f"#/Invoice[0]/{name}",
                )

    def core_header(self) -> None:
        inv, facts = self.invoice, self.facts
        internal_id = self.require(inv, ("ID",), "e-Invoice code/number")
        if internal_id and len(internal_id) > 50:
            self.add(
                CORE,
                "CF302",
                "e-Invoice code/number exceeds 50 characters",
                "Kod/nombor e-Invois melebihi 50 aksara",
                "ID",
                "Invoice.ID",
            )
        self.require(inv, ("IssueDate",), "Issue date")
        self.require(inv, ("IssueTime",), "Issue time")
        self.require(inv, ("InvoiceTypeCode",), "e-Invoice type code")
        if not facts.version:
            self.add(
                CORE,
                "CF301",
                "e-Invoice version (listVersionID) is required",
                "Versi e-Invois diperlukan",
                "listVersionID",
                "Invoice.InvoiceTypeCode.listVersionID",
            )
        self.require(inv, ("DocumentCurrencyCode",), "Invoice currency code")
        self.require(inv, ("TaxTotal", "TaxAmount"), "Total tax amount")
        subtotals = children(child(inv, "TaxTotal"), "TaxSubtotal")
        if not subtotals:
            self.add(
                CORE,
                "CF301",
                "At least one tax subtotal is required",
                "Sekurang-kurangnya satu subjumlah cukai diperlukan",
                "TaxSubtotal",
                "Invoice.TaxTotal.TaxSubtotal",
            )
        for subtotal in subtotals:
            self._tax_subtotal(subtotal, "Invoice.TaxTotal.TaxSubtotal")
        for name, label in (
            ("TaxExclusiveAmount", "Total excluding tax"),
            ("TaxInclusiveAmount", "Total including tax"),
            ("PayableAmount", "Total payable amount"),
        ):
            self.require(inv, ("LegalMonetaryTotal", name), label)
        if facts.type_code in NOTE_TYPES:
            refs = [r for b in children(inv, "BillingReference") for r in children(b, "InvoiceDocumentReference")]
            if not refs or not all(text(r, "ID") and text(r, "UUID") for r in refs):
                self.add(
                    CORE,
                    "CF307",
                    "Original e-Invoice reference (ID and UUID) is required for a note",
                    "Rujukan e-Invois asal (ID dan UUID) diperlukan",
                    "InvoiceDocumentReference",
                    "Invoice.BillingReference.InvoiceDocumentReference",
                )
        self._issue_moment()

    def _issue_moment(self) -> None:
        facts = self.facts
        if not facts.issue_date or not facts.issue_time:
            return
        if facts.issued_at is None:
            self.add(
                CORE,
                "CF303",
                "Issue date must be YYYY-MM-DD and issue time HH:MM:SSZ (UTC)",
                "Format tarikh/masa pengeluaran tidak sah",
                "IssueDate",
                "Invoice.IssueDate",
            )
            return
        age = self.received_at - facts.issued_at
        if age > timedelta(hours=self.config.max_issue_age_hours):
            self.add(
                CORE,
                "CF321",
                "Issuance date time value of the document is too old and cannot be submitted",
                "Tarikh dan masa pengeluaran dokumen terlalu lama dan tidak boleh dihantar",
                "IssueDate",
                "Invoice.IssueDate",
            )
        elif -age > timedelta(seconds=self.config.future_tolerance_seconds):
            self.add(
                CORE,
                "CF322",
                "Document issuance date and time is in the future",
                "Tarikh dan masa pengeluaran dokumen adalah pada masa hadapan",
                "IssueDate",
                "Invoice.IssueDate",
            )

    def _tax_subtotal(self, subtotal: Node, where: str) -> None:
        self._paths[id(subtotal)] = where
        self.require(subtotal, ("TaxAmount",), "Tax amount per tax type")
        self.require(subtotal, ("TaxCategory", "ID"), "Tax type")

    def core_party(self, party: Node | None, role: str, relaxed: bool) -> None:
        """Name, TIN, registration id, address and telephone; general-TIN buyers may give NA/blank."""
        if party is None:
            return
        name = self.require(party, ("PartyLegalEntity", "RegistrationName"), f"Name - {role}")
        _tin_scheme, tin = _party_id(party, ("TIN",))
        where = self._where(party)
        if name and len(name) > MAX_NAME:
            self.add(
                CORE,
                "CF330",
                f"Name - {role} exceeds {MAX_NAME} characters",
                f"Nama - {role} melebihi {MAX_NAME} aksara",
                "RegistrationName",
                f"{where}.PartyLegalEntity.RegistrationName",
            )
        _, sst = _party_id(party, ("SST",))
        if sst and len(sst) > MAX_SST:
            self.add(
                CORE,
                "CF333",
                f"SST registration number - {role} exceeds {MAX_SST} characters",
                f"Nombor pendaftaran SST - {role} melebihi {MAX_SST} aksara",
                "ID",
                f"{where}.PartyIdentification.ID",
            )
        telephone = text(party, "Contact", "Telephone")
        if telephone and not (relaxed and telephone.strip().upper() == "NA"):
            if len(telephone) > MAX_TELEPHONE or not _TELEPHONE.fullmatch(telephone):
                code = "CF351" if role == "BUYER" else "CF350"
                self.add(
                    CORE,
                    code,
                    f"Contact number - {role} '{telephone}' is not valid: at most {MAX_TELEPHONE} "
                    "characters, digits with an optional leading + (E.164), no spaces or letters",
                    f"Nombor telefon - {role} '{telephone}' tidak sah",
                    "Telephone",
                    f"{where}.Contact.Telephone",
                )
        if not tin:
            self.add(
                CORE,
                "CF301",
                f"TIN - {role} is required",
                f"TIN - {role} diperlukan",
                "PartyIdentification",
                f"{where}.PartyIdentification",
            )
        _scheme, value = _party_id(party, ID_SCHEMES)
        if not value:
            self.add(
                CORE,
                "CF301",
                f"Registration / identification number - {role} is required (BRN, NRIC, PASSPORT or ARMY)",
                f"Nombor pendaftaran / pengenalan - {role} diperlukan",
                "PartyIdentification",
                f"{where}.PartyIdentification",
            )
        if role == "SUPPLIER":
            msic = child(party, "IndustryClassificationCode")
            if msic is None or not text(msic):
                self.add(
                    CORE,
                    "CF301",
                    "MSIC code - SUPPLIER is required",
                    "Kod MSIC - PEMBEKAL diperlukan",
                    "IndustryClassificationCode",
                    f"{where}.IndustryClassificationCode",
                )
            elif not str(msic.get("name", "")).strip():
                self.add(
                    CORE,
                    "CF301",
                    "Business activity description - SUPPLIER is required",
                    "Perihalan aktiviti perniagaan - PEMBEKAL diperlukan",
                    "name",
                    f"{where}.IndustryClassificationCode.name",
                )
            elif len(str(msic.get("name", ""))) > MAX_BUSINESS_ACTIVITY:
                self.add(
                    CORE,
                    "CF331",
                    f"Business activity description - SUPPLIER exceeds {MAX_BUSINESS_ACTIVITY} characters",
                    f"Perihalan aktiviti perniagaan - PEMBEKAL melebihi {MAX_BUSINESS_ACTIVITY} aksara",
                    "name",
                    f"{where}.IndustryClassificationCode.name",
                )
        if relaxed:
            return
        self.require(party, ("PostalAddress", "AddressLine", "Line"), f"Address - {role}")
        self.require(party, ("PostalAddress", "CityName"), f"City name - {role}")
        self.require(party, ("PostalAddress", "CountrySubentityCode"), f"State - {role}")
        self.require(party, ("PostalAddress", "Country", "IdentificationCode"), f"Country - {role}")
        code = "CF349" if role == "BUYER" else "CF348"
        self.require(party, ("Contact", "Telephone"), f"Contact number - {role}", code=code)

    def core_lines(self) -> None:
        lines = children(self.invoice, "InvoiceLine")
        if not lines:
            self.add(
                CORE,
                "CF306",
                "At least one invoice line is required",
                "Sekurang-kurangnya satu baris invois diperlukan",
                "InvoiceLine",
                "Invoice.InvoiceLine",
            )
        for index, line in enumerate(lines):
            where = f"Invoice.InvoiceLine[{index}]"
            self._paths[id(line)] = where
            classes = [
                c
                for cc in children(child(line, "Item"), "CommodityClassification")
                for c in children(cc, "ItemClassificationCode")
                if c.get("listID") == "CLASS"
            ]
            if not classes:
                self.add(
                    CORE,
                    "CF301",
                    "Classification code (listID CLASS) is required",
                    "Kod klasifikasi diperlukan",
                    "ItemClassificationCode",
                    f"{where}.Item.CommodityClassification",
                )
            description = self.require(line, ("Item", "Description"), "Description of product or service")
            if description and len(description) > MAX_DESCRIPTION:
                self.add(
                    CORE,
                    "CF332",
                    f"Description of product or service exceeds {MAX_DESCRIPTION} characters",
                    f"Perihalan produk atau perkhidmatan melebihi {MAX_DESCRIPTION} aksara",
                    "Description",
                    f"{where}.Item.Description",
                )
            self.require(line, ("Price", "PriceAmount"), "Unit price")
            self.require(line, ("TaxTotal", "TaxAmount"), "Tax amount of the line")
            subtotals = children(child(line, "TaxTotal"), "TaxSubtotal")
            if not subtotals:
                self.add(
                    CORE,
                    "CF301",
                    "Tax subtotal of the line is required",
                    "Subjumlah cukai baris diperlukan",
                    "TaxSubtotal",
                    f"{where}.TaxTotal.TaxSubtotal",
                )
            for sub_index, subtotal in enumerate(subtotals):
                self._tax_subtotal(subtotal, f"{where}.TaxTotal.TaxSubtotal[{sub_index}]")
            self.require(line, ("ItemPriceExtension", "Amount"), "Subtotal")
            self.require(line, ("LineExtensionAmount",), "Total excluding tax of the line")

    def signature(self) -> None:
        # Version 1.0/1.2 documents are not signed; for 1.1/1.3 the simulator checks that a
        # signature is present but cannot verify it against a licensed CA.
        if self.facts.version in SIGNED_VERSIONS:
            if child(self.invoice, "Signature") is None or child(self.invoice, "UBLExtensions") is None:
                self.add(
                    SIGNATURE,
                    "DS301",
                    "Document signature is missing (UBLExtensions and Signature are required "
                    f"for version {self.facts.version})",
                    "Tandatangan dokumen tiada",
                    "Signature",
                    "Invoice.Signature",
                )

    def taxpayers(self) -> None:
        facts = self.facts
        self_billed = facts.self_billed
        for role, tin, allowed_general in (
            ("SUPPLIER", facts.supplier_tin, GENERAL_TINS_AS_SUPPLIER if self_billed else frozenset()),
            ("BUYER", facts.buyer_tin, GENERAL_TINS_AS_BUYER),
        ):
            if not tin:
                continue
            if not is_well_formed_tin(tin):
                self.add(
                    TAXPAYER,
                    "TX301",
                    f"TIN - {role} '{tin}' is not a well-formed TIN",
                    f"TIN - {role} '{tin}' tidak sah",
                    "TIN",
                    f"Invoice.Accounting{'Supplier' if role == 'SUPPLIER' else 'Customer'}Party.Party.PartyIdentification",
                )
            elif tin in GENERAL_TINS and tin not in allowed_general:
                self.add(
                    TAXPAYER,
                    "TX302",
                    f"General TIN {tin} cannot be used as {role} on a document of type {facts.type_code}",
                    f"TIN am {tin} tidak boleh digunakan sebagai {role}",
                    "TIN",
                    f"Invoice.Accounting{'Supplier' if role == 'SUPPLIER' else 'Customer'}Party.Party.PartyIdentification",
                )
        delivery = child(self.invoice, "Delivery", "DeliveryParty")
        _, recipient_tin = _party_id(delivery, ("TIN",))
        if recipient_tin and recipient_tin.upper() != "NA" and not is_well_formed_tin(recipient_tin):
            self.add(
                TAXPAYER,
                "TX301",
                f"TIN - SHIPPING RECIPIENT '{recipient_tin}' is not a well-formed TIN",
                f"TIN - PENERIMA '{recipient_tin}' tidak sah",
                "TIN",
                "Invoice.Delivery.DeliveryParty.PartyIdentification",
            )

    def references(self) -> None:
        # Originals issued before e-invoicing have no MyInvois UUID ("NA" is accepted); the
        # simulator does not refuse unknown UUIDs because its memory starts empty on every run.
        return

    def _code(self, table: str, value: str | None, label: str, name: str, path: str, code: str) -> None:
        if value is None or value == "":
            return
        if value not in code_table(table):
            self.add(
                CODES,
                code,
                f"{label} '{value}' is not in the {table} code list",
                f"{label} '{value}' tiada dalam senarai kod",
                name,
                path,
            )

    def codes(self, supplier: Node | None, buyer: Node | None) -> None:
        inv, facts = self.invoice, self.facts
        self._code(
            "EInvoiceTypes", facts.type_code, "e-Invoice type", "InvoiceTypeCode", "Invoice.InvoiceTypeCode", "CD401"
        )
        if facts.version and facts.version not in KNOWN_VERSIONS:
            self.add(
                CODES,
                "CD402",
                f"e-Invoice version '{facts.version}' is not supported",
                "Versi e-Invois tidak disokong",
                "listVersionID",
                "Invoice.InvoiceTypeCode.listVersionID",
            )
        self._code(
            "CurrencyCodes", facts.currency, "Currency", "DocumentCurrencyCode", "Invoice.DocumentCurrencyCode", "CD403"
        )
        self._code(
            "CurrencyCodes",
            text(inv, "TaxCurrencyCode"),
            "Currency",
            "TaxCurrencyCode",
            "Invoice.TaxCurrencyCode",
            "CD403",
        )
        for index, subtotal in enumerate(children(child(inv, "TaxTotal"), "TaxSubtotal")):
            self._code(
                "TaxTypes",
                text(subtotal, "TaxCategory", "ID"),
                "Tax type",
                "TaxCategory",
                f"Invoice.TaxTotal.TaxSubtotal[{index}].TaxCategory.ID",
                "CD404",
            )
        for role, party, path in (
            ("SUPPLIER", supplier, "Invoice.AccountingSupplierParty.Party"),
            ("BUYER", buyer, "Invoice.AccountingCustomerParty.Party"),
        ):
            address = child(party, "PostalAddress")
            self._code(
                "StateCodes",
                text(address, "CountrySubentityCode"),
                f"State - {role}",
                "CountrySubentityCode",
                f"{path}.PostalAddress.CountrySubentityCode",
                "CD405",
            )
            self._code(
                "CountryCodes",
                text(address, "Country", "IdentificationCode"),
                f"Country - {role}",
                "IdentificationCode",
                f"{path}.PostalAddress.Country.IdentificationCode",
                "CD406",
            )
            self._state_not_applicable(role, party, address, path)
        delivery = child(inv, "Delivery", "DeliveryParty")
        self._state_not_applicable(
            "SHIPPING RECIPIENT", delivery, child(delivery, "PostalAddress"), "Invoice.Delivery.DeliveryParty"
        )
        self._code(
            "MSICSubCategoryCodes",
            text(supplier, "IndustryClassificationCode"),
            "MSIC code",
            "IndustryClassificationCode",
            "Invoice.AccountingSupplierParty.Party.IndustryClassificationCode",
            "CD407",
        )
        for index, means in enumerate(children(inv, "PaymentMeans")):
            self._code(
                "PaymentMethods",
                text(means, "PaymentMeansCode"),
                "Payment mode",
                "PaymentMeansCode",
                f"Invoice.PaymentMeans[{index}].PaymentMeansCode",
                "CD408",
            )
        for index, line in enumerate(children(inv, "InvoiceLine")):
            where = f"Invoice.InvoiceLine[{index}]"
            for cc in children(child(line, "Item"), "CommodityClassification"):
                for code in children(cc, "ItemClassificationCode"):
                    if code.get("listID") == "CLASS":
                        self._code(
                            "ClassificationCodes",
                            text(code),
                            "Classification",
                            "ItemClassificationCode",
                            f"{where}.Item.CommodityClassification.ItemClassificationCode",
                            "CD409",
                        )
            quantity = child(line, "InvoicedQuantity")
            if quantity and quantity.get("unitCode"):
                self._code(
                    "UnitTypes",
                    str(quantity["unitCode"]),
                    "Unit of measurement",
                    "unitCode",
                    f"{where}.InvoicedQuantity.unitCode",
                    "CD410",
                )
            for sub_index, subtotal in enumerate(children(child(line, "TaxTotal"), "TaxSubtotal")):
                self._code(
                    "TaxTypes",
                    text(subtotal, "TaxCategory", "ID"),
                    "Tax type",
                    "TaxCategory",
                    f"{where}.TaxTotal.TaxSubtotal[{sub_index}].TaxCategory.ID",
                    "CD404",
                )
            origin = text(child(line, "Item"), "OriginCountry", "IdentificationCode")
            self._code(
                "CountryCodes",
                origin,
                "Country of origin",
                "IdentificationCode",
                f"{where}.Item.OriginCountry.IdentificationCode",
                "CD406",
            )

    def _state_not_applicable(self, role: str, party: Node | None, address: Node | None, path: str) -> None:
        """State 17 ("not applicable") on a Malaysian address is refused since 30 Apr 2026, except for
        the general-public party of a consolidated e-invoice (API.md §7.4)."""
        if text(address, "CountrySubentityCode") != STATE_NOT_APPLICABLE:
            return
        if (text(address, "Country", "IdentificationCode") or "").upper() != MALAYSIA:
            return
        _, tin = _party_id(party, ("TIN",))
        if tin == GENERAL_PUBLIC_TIN:
            return
        self.add(
            CODES,
            "CD411",
            f"State - {role} '17' (not applicable) is only allowed for a foreign address or the "
            "general public on a consolidated e-invoice; this address is in Malaysia",
            f"Negeri - {role} '17' hanya dibenarkan untuk alamat luar negara atau orang awam (e-Invois disatukan)",
            "CountrySubentityCode",
            f"{path}.PostalAddress.CountrySubentityCode",
        )

    def currency(self) -> None:
        facts = self.facts
        if not facts.currency or facts.currency == "MYR":
            return
        rate = child(self.invoice, "TaxExchangeRate")
        calculation_rate = number(rate, "CalculationRate")
        if rate is None or calculation_rate is None or calculation_rate <= 0:
            self.add(
                CURRENCY,
                "CF501",
                f"Currency exchange rate is required when the invoice currency is {facts.currency}",
                f"Kadar pertukaran mata wang diperlukan untuk {facts.currency}",
                "TaxExchangeRate",
                "Invoice.TaxExchangeRate.CalculationRate",
            )
            return
        source, target = text(rate, "SourceCurrencyCode"), text(rate, "TargetCurrencyCode")
        if source != facts.currency or target != "MYR":
            self.add(
                CURRENCY,
                "CF502",
                f"Exchange rate must convert {facts.currency} to MYR (got {source} to {target})",
                "Kadar pertukaran mesti daripada mata wang invois kepada MYR",
                "TaxExchangeRate",
                "Invoice.TaxExchangeRate",
            )


def check_document(
    invoice: Node, facts: DocumentFacts, received_at: datetime, config: ValidationConfig
) -> list[Problem]:
    """Every step except the duplicate check (which needs the store); ``facts`` from read_facts."""
    return _Checker(invoice, facts, received_at, config).run()


def duplicate_problem(earlier_uuid: str, this_uuid: str) -> Problem:
    return Problem(
        DUPLICATE,
        "DS302",
        f"This document is a duplicate of document {earlier_uuid}; this document {this_uuid} is refused",
        f"Dokumen ini adalah pendua bagi dokumen {earlier_uuid}; dokumen {this_uuid} ditolak",
        "document",
        "document",
    )


def _error(problem: Problem) -> dict:
    return {
        "propertyName": problem.property_name,
        "propertyPath": problem.property_path,
        "errorCode": problem.code,
        "error": problem.message,
        "errorMS": problem.message_ms,
        "target": problem.property_name,
        "innerError": None,
    }


def validation_steps(problems: tuple[Problem, ...] | list[Problem], final_status: str) -> list[dict]:
    """The ``validationSteps`` array: one entry per step, errors in the documented shape."""
    steps: list[dict[str, Any]] = []
    for index, name in enumerate(STEP_NAMES):
        if final_status == "Submitted":
            steps.append({"name": name, "status": "Submitted"})
            continue
        found = [p for p in problems if p.step == index]
        if not found:
            steps.append({"name": name, "status": "Valid"})
            continue
        label = name.split("-", 1)[1]
        steps.append(
            {
                "name": name,
                "status": "Invalid",
                "error": {
                    "propertyName": None,
                    "propertyPath": None,
                    "errorCode": f"Error{index + 1:02d}",
                    "error": label,
                    "errorMS": label,
                    "innerError": [_error(p) for p in found],
                },
            }
        )
    return steps
