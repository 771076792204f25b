"""Reading a QR code back from the PNG bytes our plugins write, with a real decoder (zxing-cpp),
so a test checks what a phone would read, not how the image was made.

The PNG is read here with the standard library (zlib): segno writes 1-bit greyscale, and
zxing-cpp takes a plain buffer of 8-bit pixels, so neither Pillow nor numpy is needed."""

from __future__ import annotations

import struct
import zlib

import zxingcpp


def png_pixels(data: bytes) -> tuple[int, int, bytearray]:
    """(width, height, one byte per pixel: 0 black, 255 white) of a 1-bit greyscale PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (1, 0, 0), "expected a 1-bit greyscale PNG"
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    previous = bytearray(stride)
    pixels = bytearray()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # PNG's row filters (one byte per "pixel" unit at 1 bit)
            left = row[i - 1] if i else 0
            up = previous[i]
            up_left = previous[i - 1] if i else 0
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
        previous = row
        pixels.extend(255 if row[x // 8] >> (7 - x % 8) & 1 else 0 for x in range(width))
    return width, height, pixels


def decode_qr(data: bytes) -> list[str]:
    """The texts of every QR code in the PNG image ``data``."""
    width, height, pixels = png_pixels(data)
    found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", (height, width)))
    return [code.text for code in found if code.format == zxingcpp.BarcodeFormat.QRCode]
