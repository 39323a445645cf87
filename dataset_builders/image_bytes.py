"""A source PNG or JPEG published as its own compressed pixel stream, every metadata segment left out.

Re-encoding every image as PNG is private but costly: the encoder is the slowest step of a unit,
and a JPEG source comes out 3-10x larger. When the published pixels are exactly the source's
(8-bit greyscale or RGB, not resized, not windowed), the source's compressed stream can be
published instead, rebuilt from an allow-list of the segments a decoder needs:

- PNG: `IHDR`, `IDAT`, `IEND`; every other chunk (`tEXt`, `zTXt`, `iTXt`, `eXIf`, `tIME`, `iCCP`,
  palettes...) is left out;
- JPEG: the frame, tables, scans and restart markers; every `APPn` segment (JFIF, EXIF, XMP, ICC,
  maker notes) and every comment is left out.

Nothing outside the allow-list can reach a published byte, whatever a file carries. The build
decodes the rebuilt stream itself (`metadata_free_stream`, then `imaging.read_image(data=...)`),
once per image, so the pixels it hashes, checks and publishes are by construction those of the
published bytes; a stream that does not decode as 8-bit greyscale or RGB, or pixels that change
on the way (windowing, resizing), fall back to a PNG re-encode. `stripped_stream` checks a stream
against given pixels by decoding it.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

STREAM_SUFFIXES = (".png", ".jpg", ".jpeg")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEPT = {b"IHDR", b"IDAT", b"IEND"}
#: JPEG markers whose segments are kept: frames (SOF0-3, 5-7, 9-11, 13-15), DHT, DAC, DQT, DRI,
#: DNL, DHP, EXP and SOS; everything else with a length (APPn, COM, JPG extensions) is dropped
JPEG_KEPT = {*range(0xC0, 0xD0)} - {0xC8} | {0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xDA}
JPEG_ADOBE = 0xEE


def _png_stream(data: bytes) -> bytes | None:
    if not data.startswith(PNG_SIGNATURE):
        return None
    out = [PNG_SIGNATURE]
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(data):
            return None
        if kind == b"IHDR":
            bit_depth, colour_type = data[at + 16], data[at + 17]
            if bit_depth != 8 or colour_type not in (0, 2):  # 8-bit greyscale or RGB only
                return None
        if kind in PNG_KEPT:
            chunk = data[at:end]
            if zlib.crc32(chunk[4:-4]) != struct.unpack(">I", chunk[-4:])[0]:
                return None
            out.append(chunk)
        elif not kind[:1].islower():  # an unknown critical chunk (PLTE included): not ours to drop
            return None
        at = end
        if kind == b"IEND":
            return b"".join(out)
    return None


def _jpeg_stream(data: bytes) -> bytes | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    out = [b"\xff\xd8"]
    at = 2
    n = len(data)
    while at + 2 <= n:
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if at + 4 > n:
            return None
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if length < 2 or end > n:
            return None
        if marker == JPEG_ADOBE:  # its colour transform flag changes the decode
            return None
        if marker in JPEG_KEPT:
            out.append(data[at:end])
        elif not (0xE0 <= marker <= 0xEF or marker == 0xFE or 0xF0 <= marker <= 0xFD):
            return None
        at = end
        if marker == 0xDA:  # entropy-coded data up to the next marker (not a stuffed 0 or RST)
            scan = at
            while at + 1 < n and not (data[at] == 0xFF and data[at + 1] not in (0x00, *range(0xD0, 0xD8))):
                at += 1
            out.append(data[scan:at])
    return None


def metadata_free_stream(data: bytes) -> bytes | None:
    """PNG or JPEG bytes rebuilt from the allow-listed segments only, or None (another format, an
    unusual file). Not decoded here: the build decodes this stream itself, so the pixels it
    publishes are by construction the pixels of these bytes (`adapters.SourceReader.image_records`)."""
    return _png_stream(data) if data.startswith(PNG_SIGNATURE) else _jpeg_stream(data)


def stripped_stream(path: str | Path, pixels: np.ndarray) -> bytes | None:
    """The source's PNG or JPEG stream without metadata if it decodes to exactly `pixels`; else None."""
    stream = metadata_free_stream(Path(path).read_bytes())
    if stream is None:
        return None
    try:
        with Image.open(io.BytesIO(stream)) as image:
            if image.mode not in ("L", "RGB"):
                return None
            decoded = np.asarray(image)
    except Exception:
        return None
    return stream if decoded.shape == pixels.shape and np.array_equal(decoded, pixels) else None
