"""The CSV plugin writes the QR code of each valid invoice's validation link beside the outbox,
and it reads back, with a real decoder, as the link ``show`` gives."""

from __future__ import annotations

import csv
import json

from tests.qr_decode import decode_qr


def test_each_valid_invoice_has_a_png_that_decodes_to_its_validation_link(demo_run):
    qr_folder = demo_run.outbox.parent / "qr"
    with demo_run.outbox.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    valid = [r for r in rows if r["status"] == "valid"]
    assert len(valid) == 11
    assert sorted(p.name for p in qr_folder.iterdir()) == sorted(
        f"{r['invoice_number']}_{r['uuid']}.png" for r in valid
    )
    shown = json.loads(demo_run.cli("show", "DEMO-INV-1001", "--json").stdout)["versions"][-1]
    image = qr_folder / f"DEMO-INV-1001_{shown['uuid']}.png"
    assert decode_qr(image.read_bytes()) == [shown["validation_link"]]
    for row in valid:
        assert decode_qr((qr_folder / f"{row['invoice_number']}_{row['uuid']}.png").read_bytes()) == [
            row["validation_link"]
        ]
