"""The CSV plugin: the shared plugin contract, plus what is particular to files."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

import myinvois_csv.plugin as csv_plugin
from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_csv.options import CsvSourceOptions
from myinvois_csv.reader import read_file
from tests.plugin_contract import DEMO_SUPPLIER, ErpStatus, PluginContract

COLUMNS = [
    "invoice_number", "document_type", "party_name", "party_tin", "party_id_type", "party_id_value",
    "party_phone", "party_address1", "party_city", "party_postcode", "party_state", "party_country",
    "description", "classification", "quantity", "unit_code", "unit_price", "tax_type", "tax_rate",
]  # fmt: skip

COMPANY = {
    "name": DEMO_SUPPLIER["name"],
    "tin": DEMO_SUPPLIER["tin"],
    "id_type": "BRN",
    "id_value": DEMO_SUPPLIER["brn"],
    "msic_code": DEMO_SUPPLIER["msic_code"],
    "business_activity": "Wholesale of computer hardware",
    "phone": "+60312345678",
    "address": {"lines": ["Lot 66"], "city": "Kuala Lumpur", "postal_zone": "50480", "state": "14"},
}


def row(number: str, **overrides: str) -> dict[str, str]:
    base = {
        "invoice_number": number,
        "document_type": "invoice",
        "party_name": "Pelanggan Contoh Sdn. Bhd.",
        "party_tin": "C58101234560",
        "party_id_type": "BRN",
        "party_id_value": "200501012345",
        "party_phone": "+60387654321",
        "party_address1": "No. 12, Jalan SS 2/24",
        "party_city": "Petaling Jaya",
        "party_postcode": "47300",
        "party_state": "10",
        "party_country": "MYS",
        "description": "Laptop",
        "classification": "022",
        "quantity": "2",
        "unit_code": "C62",
        "unit_price": "1000.00",
        "tax_type": "01",
        "tax_rate": "10",
    }
    base.update(overrides)
    return base


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_source(tmp_path: Path, name: str = "erp", **overrides) -> Source:
    """A CSV source; its files are read as soon as written (settle_seconds 0) unless overridden."""
    options = CsvSourceOptions(
        inbox=tmp_path / "inbox",
        archive=tmp_path / "archive",
        outbox=tmp_path / "outbox" / "results.csv",
        company=COMPANY,
        **{"settle_seconds": 0, **overrides},
    )
    options.inbox.mkdir(parents=True, exist_ok=True)
    return Source(name=name, kind="csv", profile="demo", options=options, state_dir=tmp_path)


def fetch(source: Source, limit: int = 1000) -> list[Invoice | RejectedRecord]:
    return list(csv_plugin.fetch_pending_invoices(source=source, limit=limit))


class TestCsvPluginContract(PluginContract):
    @pytest.fixture()
    def plugin_module(self):
        return csv_plugin

    @pytest.fixture()
    def source(self, tmp_path, request) -> Source:
        # A fresh source name per test: the plugin keeps per-source memory between hook calls.
        return make_source(tmp_path, name=f"csv-{request.node.name}")

    @pytest.fixture()
    def seed_invoices(self, source):
        counter = itertools.count(1)
        files = itertools.count(1)

        def seed(n: int) -> list[str]:
            keys = [f"INV-{next(counter):04d}" for _ in range(n)]
            write_csv(source.options.inbox / f"{next(files):03d}-seed.csv", [row(k) for k in keys])
            return keys

        # Bad records and good ones interleave in file-name order: share one file counter.
        seed.files = files  # type: ignore[attr-defined]
        return seed

    @pytest.fixture()
    def seed_bad_record(self, source, seed_invoices):
        def seed_bad() -> tuple[str, str]:
            write_csv(source.options.inbox / f"{next(seed_invoices.files):03d}-bad.csv", [row("BAD-1", unit_price="")])
            return "BAD-1", "unit_price"

        return seed_bad

    @pytest.fixture()
    def read_back(self, source):
        def read(source_key: str) -> ErpStatus:
            outbox = source.options.outbox
            if not outbox.exists():
                return ErpStatus(status=None)
            with outbox.open(encoding="utf-8", newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r["invoice_number"] == source_key]
            if not rows:
                return ErpStatus(status=None)
            # The last row of the newest version: after valid, a version gets further rows.
            newest = max(int(r["version"]) for r in rows)
            latest = [r for r in rows if int(r["version"]) == newest][-1]
            return ErpStatus(
                status=latest["status"],
                uuid=latest["uuid"] or None,
                long_id=latest["long_id"] or None,
                validation_link=latest["validation_link"] or None,
                errors=latest["errors"] or None,
                reason=latest["reason"] or None,
            )

        return read


def test_malformed_rows_name_file_row_and_fix_and_other_invoices_go_on(tmp_path):
    source = make_source(tmp_path)
    write_csv(
        source.options.inbox / "a.csv",
        [
            row("GOOD-1"),
            row("BAD-PRICE", unit_price="12,50"),
            row("BAD-TYPE", document_type="quote"),
            row("GOOD-2"),
        ],
    )
    items = {item.source_key: item for item in fetch(source)}
    assert isinstance(items["GOOD-1"], Invoice) and isinstance(items["GOOD-2"], Invoice)
    price = items["BAD-PRICE"]
    assert isinstance(price, RejectedRecord)
    # Named where the clerk finds the file: in the archive, where it is moved once recorded.
    assert price.location == f"{source.options.archive / 'a.csv'} row 3"
    assert "unit_price '12,50' is not a number" in price.errors[0] and "1250.00" in price.errors[0]
    kind = items["BAD-TYPE"]
    assert isinstance(kind, RejectedRecord) and "document_type 'quote'" in kind.errors[0]


def test_rows_of_one_invoice_must_agree_on_header_columns(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "a.csv", [row("INV-1"), row("INV-1", party_tin="C20880050010")])
    (item,) = fetch(source)
    assert isinstance(item, RejectedRecord)
    assert item.location == f"{source.options.archive / 'a.csv'} rows 2, 3"
    assert item.errors == [
        "row 3: party_tin differs from row 2 of the same invoice; header columns must be the same on every line of an invoice"
    ]


def test_several_rows_make_one_invoice_with_tax_computed_from_the_rate(tmp_path):
    source = make_source(tmp_path)
    write_csv(
        source.options.inbox / "a.csv",
        [row("INV-1", quantity="3", unit_price="19.99", tax_rate="8", tax_type="02"), row("INV-1", description="Mouse", unit_price="5")],
    )
    (invoice,) = fetch(source)
    assert isinstance(invoice, Invoice)
    assert [str(line.total_excluding_tax) for line in invoice.lines] == ["59.97", "10.00"]
    # 8 % of 59.97 is 4.7976, rounded half-up to the cent; 10 % of 10.00 is 1.00.
    assert [str(line.tax_amount) for line in invoice.lines] == ["4.80", "1.00"]
    assert str(invoice.payable_amount) == "75.77"


def test_self_billed_documents_make_the_company_the_buyer(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "a.csv", [row("SB-1", document_type="self_billed_invoice")])
    (invoice,) = fetch(source)
    assert invoice.document_type.value == "11"
    assert invoice.buyer.tin == COMPANY["tin"] and invoice.supplier.tin == "C58101234560"
    assert invoice.issuer.tin == COMPANY["tin"]


def test_a_file_is_archived_once_all_its_invoices_are_recorded(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "a.csv", [row("INV-1"), row("INV-2")])
    fetch(source)
    csv_plugin.on_invoices_recorded(source=source, source_keys=["INV-1"])
    assert (source.options.inbox / "a.csv").exists()
    csv_plugin.on_invoices_recorded(source=source, source_keys=["INV-2"])
    assert not (source.options.inbox / "a.csv").exists()
    assert (source.options.archive / "a.csv").exists()
    # The same file name dropped again later is archived beside the first, never over it.
    write_csv(source.options.inbox / "a.csv", [row("INV-3")])
    fetch(source)
    csv_plugin.on_invoices_recorded(source=source, source_keys=["INV-3"])
    assert sorted(p.name for p in source.options.archive.iterdir()) == ["a.1.csv", "a.csv"]


def test_unreadable_files_are_rejected_as_a_whole_with_the_fix(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "no-price.csv", [row("X")], columns=[c for c in COLUMNS if c != "unit_price"])
    (source.options.inbox / "latin1.csv").write_bytes("invoice_number\nFACTURE-\xe9\n".encode("latin-1"))
    items = {item.source_key: item for item in fetch(source)}
    assert "UTF-8" in items["file:inbox/latin1.csv"].errors[0]
    assert "has no column 'unit_price'" in items["file:inbox/no-price.csv"].errors[0]
    assert items["file:inbox/no-price.csv"].location == str(source.options.archive / "no-price.csv")


def test_outbox_rows_are_written_once_per_outcome(tmp_path):
    source = make_source(tmp_path)
    outcome = DocumentOutcome(source_key="INV-1", number="INV-1", version=1, state=DocumentState.VALID, uuid="U" * 26, long_id="L")
    csv_plugin.on_submission_result(source=source, outcomes=[outcome])
    csv_plugin.on_submission_result(source=source, outcomes=[outcome])
    rows = list(csv.DictReader(source.options.outbox.open(encoding="utf-8")))
    assert [(r["invoice_number"], r["status"], r["uuid"]) for r in rows] == [("INV-1", "valid", "U" * 26)]


def test_seed_dir_is_copied_into_the_inbox_only_once(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    write_csv(seed / "demo.csv", [row("DEMO-1")])
    source = make_source(tmp_path)
    options = source.options.model_copy(update={"seed_dir": seed})
    source = Source(name="seeded", kind="csv", profile="demo", options=options)
    assert [i.source_key for i in fetch(source)] == ["DEMO-1"]
    csv_plugin.on_invoices_recorded(source=source, source_keys=["DEMO-1"])
    assert fetch(source) == []


def test_reader_accepts_an_excel_byte_order_mark(tmp_path):
    path = write_csv(tmp_path / "bom.csv", [row("INV-BOM")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    (invoice,) = read_file(path, company=CsvSourceOptions(inbox=tmp_path, archive=tmp_path, outbox=tmp_path / "o.csv", company=COMPANY).company)
    assert isinstance(invoice, Invoice) and invoice.number == "INV-BOM"
