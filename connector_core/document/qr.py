"""The QR code of a validated document: its validation link, drawn as a PNG image.

LHDN asks that the printed or shared invoice carry a QR code of the validation link
(``{portal}/{uuid}/share/{longId}``, BEYOND-V1.md §3), made with any QR generator. segno is a
maintained, pure-Python generator (no Pillow, no native code), so every plugin renders the
same image through this one function from the link its outcome already carries.
"""

from __future__ import annotations

import io

import segno

#: Pixels per QR module: ~4 cm wide at 300 dpi for a typical link (version 5-6), sharp in print.
SCALE = 8
#: The quiet zone the QR specification requires around the code, in modules.
BORDER = 4


def qr_png(link: str) -> bytes:
    """PNG bytes of a QR code that decodes to ``link`` exactly (error correction M, 15%:
    enough for a printed or photographed page)."""
    if not link:
        raise ValueError("a QR code needs the validation link; only a valid document has one")
    qr = segno.make(link, error="m", micro=False, boost_error=False)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=SCALE, border=BORDER)
    return out.getvalue()
