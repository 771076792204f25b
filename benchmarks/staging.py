"""A SQLite ERP for the benchmarks: the shipped staging DDL, filled with well-formed invoices.

Rows are inserted with the standard library's sqlite3 in one transaction, so a 100,000-invoice
backlog is ready in seconds and costs the connector nothing (it is made before the connector starts).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

DDL = Path(__file__).resolve().parents[1] / "config" / "sql" / "staging-sqlite.sql"

#: The simulator's default demo taxpayer (supplier) and buyer; the profile's TIN is the supplier's.
SUPPLIER = {"name": "Syarikat Demo Sdn. Bhd.", "tin": "C25845632020", "brn": "202001234567", "msic_code": "46510"}
BUYER = {"name": "Pembeli Demo Sdn. Bhd.", "tin": "C58101234560", "brn": "200501012345"}


def _header(key: int, supplier: dict[str, str] = SUPPLIER, prefix: str = "BENCH") -> dict[str, object]:
    return {
        "id": key,
        "invoice_number": f"{prefix}-{key:07d}",
        "document_type": "01",
        "currency": "MYR",
        "supplier_name": supplier["name"],
        "supplier_tin": supplier["tin"],
        "supplier_id_type": "BRN",
        "supplier_id_value": supplier["brn"],
        "supplier_sst": "NA",
        "supplier_msic_code": supplier.get("msic_code", SUPPLIER["msic_code"]),
        "supplier_business_activity": "Wholesale of computer hardware, software and peripherals",
        "supplier_address_line1": "Lot 66, Bangunan Merdeka",
        "supplier_address_line2": "Persiaran Jaya",
        "supplier_city": "Kuala Lumpur",
        "supplier_postal_zone": "50480",
        "supplier_state": "14",
        "supplier_country": "MYS",
        "supplier_phone": "+60123456789",
        "supplier_email": "billing@demo.example",
        "buyer_name": BUYER["name"],
        "buyer_tin": BUYER["tin"],
        "buyer_id_type": "BRN",
        "buyer_id_value": BUYER["brn"],
        "buyer_address_line1": "No. 8, Jalan Contoh",
        "buyer_city": "Shah Alam",
        "buyer_postal_zone": "40000",
        "buyer_state": "10",
        "buyer_country": "MYS",
        "buyer_phone": "+60387654321",
    }


def _lines(key: int) -> list[dict[str, object]]:
    # Two to four lines per invoice, so documents are not all the same size.
    count = 2 + key % 3
    lines = []
    for n in range(1, count + 1):
        quantity = 1 + (key + n) % 5
        price = f"{50 + (key * 7 + n * 13) % 400}.50"
        tax = (quantity * float(price)) * 0.10
        lines.append(
            {
                "header_id": key,
                "line_no": n,
                "description": f"Item {n} of order {key}",
                "classification_codes": "022",
                "quantity": str(quantity),
                "unit_code": "C62",
                "unit_price": price,
                "tax_type": "01",
                "tax_rate": "10",
                "tax_amount": f"{tax:.2f}",
            }
        )
    return lines


def create_staging_db(path: Path, invoices: int, *, supplier: dict[str, str] = SUPPLIER, prefix: str = "BENCH") -> None:
    """Create ``path`` afresh with the staging tables and ``invoices`` pending invoices issued by
    ``supplier`` (a taxpayer the simulator knows), numbered ``<prefix>-0000001`` on."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    try:
        # A scratch file made before the connector starts: no crash to survive, so no journal
        # and no fsync (a million invoices in about half a minute).
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(DDL.read_text("utf-8"))
        first = _header(1)
        header_sql = f"INSERT INTO einvoice_header ({', '.join(first)}) VALUES ({', '.join(':' + c for c in first)})"
        line_cols = list(_lines(1)[0])
        line_sql = f"INSERT INTO einvoice_line ({', '.join(line_cols)}) VALUES ({', '.join(':' + c for c in line_cols)})"
        with conn:
            for start in range(1, invoices + 1, 5000):
                keys = range(start, min(invoices, start + 4999) + 1)
                conn.executemany(header_sql, [_header(k, supplier, prefix) for k in keys])
                conn.executemany(line_sql, [line for k in keys for line in _lines(k)])
    finally:
        conn.close()


def status_counts(path: Path) -> dict[str, int]:
    """How the ERP sees its invoices after a run: myinvois_status -> count."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT coalesce(myinvois_status, 'pending'), count(*) FROM einvoice_header GROUP BY 1").fetchall()
    finally:
        conn.close()
    return dict(rows)
