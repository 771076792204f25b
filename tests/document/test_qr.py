"""The QR code of the validation link decodes, with a real decoder, to exactly that link."""

from __future__ import annotations

import pytest

from connector_core.document.qr import qr_png
from tests.qr_decode import decode_qr

LINK = "https://myinvois.hasil.gov.my/9UO2NWW6PUTIMP1MF6DFF7VJUV/share/QY597JJ2AD1RBY715KLDBQY75JG1PBS7CHYLP8RBRXC6R"


def test_the_png_decodes_to_the_validation_link():
    assert decode_qr(qr_png(LINK)) == [LINK]


def test_another_link_gives_another_code():
    other = LINK.replace("9UO2", "8UO2")
    assert decode_qr(qr_png(other)) == [other] != decode_qr(qr_png(LINK))


def test_no_link_no_code():
    with pytest.raises(ValueError, match="only a valid document has one"):
        qr_png("")
