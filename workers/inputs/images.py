"""Image bytes to pixels: header checks, then one OpenCV decode (EXIF orientation applied)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from facesweep.workers.errors import ErrorKind, ImageError

MAX_PIXELS = 500_000_000
"""Images with more pixels are refused from their header, before any decoding (a forged or absurd header):
more than any camera writes, pixel-shift composites (400 MP) included. Below it, the actor's pixel budget
decides what an image may cost (`workers/job/budget.py`): a large JPEG is decoded at 1/2, 1/4 or 1/8
rather than refused."""
REDUCTIONS = (1, 2, 4, 8)
"""The scales (1/r) an image may be decoded at: libjpeg's DCT scaling for a JPEG, a resize after a whole
decode for any other format (`decode_at`)."""


@dataclass(frozen=True)
class Header:
    """What an image's header says, read before any decoding (`read_header`)."""

    kind: str | None  # the format ("JPEG", "PNG", ...), None when unrecognised
    size: tuple[int, int] | None  # (width, height) as stored; None: no header reader for the format
    coefficients: int = 0
    """Bytes libjpeg holds besides the pixels while it decodes, at any scale: a progressive JPEG's DCT
    coefficients, 2 per sample of each component at full size."""


def decode_image(data: bytes) -> np.ndarray:
    """BGR uint8 [H, W, 3] of encoded image bytes, upright per its EXIF orientation (`decode_reduced`)."""
    return decode_reduced(data)[0]


def read_header(data: bytes) -> Header:
    """The format (by its magic number) and the size, from the header only, refused above MAX_PIXELS, so
    a decoder never allocates it; a JPEG or PNG must also be whole (`decode_reduced`). An ImageError for
    what its header already shows to be bad."""
    if not data:
        raise ImageError("empty file", ErrorKind.NOT_AN_IMAGE)
    kind = image_format(data)
    if kind not in _SIZE_READERS:
        return Header(kind, None)
    size, coefficients = _jpeg_frame(data) if kind == "JPEG" else (_SIZE_READERS[kind](data), 0)
    _check_size(kind, *size)
    return Header(kind, size, coefficients)


def decode_reduced(
    data: bytes, reduction_for: Callable[[int, int], int] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """The decoded BGR image and the upright (width, height) of the full image.

    Before decoding, from the header only: the format (by its magic number), the size (refused above
    MAX_PIXELS, so a decoder never allocates it) and that the file is whole (libjpeg only warns about a
    cut JPEG, and OpenCV may return it with a grey bottom). Then one OpenCV decode; IMREAD_COLOR turns
    grayscale, alpha, CMYK and 16-bit images (high byte) into 8-bit BGR and applies EXIF orientation.
    Formats without a header reader here (PPM, HDR, AVIF...) are left to OpenCV's own checks.

    `reduction_for(width, height)` (stored size) may answer 2, 4 or 8 for a JPEG: libjpeg then decodes
    at 1/2, 1/4 or 1/8 of the size in its DCT (several times faster than a full decode and a resize);
    the image returned is that small, the size returned is still the full image's."""
    header = read_header(data)
    reduction = reduction_for(*header.size) if reduction_for and header.size and header.kind == "JPEG" else 1
    return decode_at(data, header, reduction)


def decode_at(data: bytes, header: Header, reduction: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """The image of `data` (its `header` read) decoded at 1/`reduction` (one of REDUCTIONS) of its size,
    and the upright (width, height) of the full image: a JPEG in libjpeg's DCT, any other format decoded
    whole, then resized (`shrink`)."""
    dct = reduction if header.kind == "JPEG" else 1
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS.get(dct, cv2.IMREAD_COLOR))
    except cv2.error as error:  # OpenCV's own limits, allocation failures
        kind = header.kind or "image"
        raise ImageError(f"cannot decode {kind}: {error.err}", ErrorKind.UNDECODABLE) from None
    if image is None:
        raise ImageError(*_undecodable(header.kind))
    _check_size(header.kind or "image", image.shape[1], image.shape[0])
    if dct == 1 or header.size is None:
        return shrink(image, reduction), (image.shape[1], image.shape[0])
    width, height = header.size
    stored_shape = (math.ceil(height / dct), math.ceil(width / dct))
    return image, (width, height) if image.shape[:2] == stored_shape else (height, width)  # EXIF-rotated


def shrink(image: np.ndarray, reduction: int) -> np.ndarray:
    """`image` at 1/`reduction` of its size, rounded up as libjpeg rounds (INTER_AREA: each pixel the mean
    of those it covers)."""
    if reduction == 1:
        return image
    height, width = image.shape[:2]
    size = (math.ceil(width / reduction), math.ceil(height / reduction))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def image_format(data: bytes) -> str | None:
    """The format that `data` starts like ("JPEG", "PNG", ...), or None."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":  # ISO base media: AVIF or HEIF by brand
        brands = data[8:12] + data[16 : int.from_bytes(data[:4], "big")]
        if b"avif" in brands or b"avis" in brands:
            return "AVIF"
        if any(brand in brands for brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")):
            return "HEIF"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as stored, read from the header (before EXIF orientation); None when this module
    has no header reader for the format. Raises ImageError for a header that is cut short or broken, and
    for a JPEG whose scan does not end (the JPEG reader checks completeness too)."""
    kind = image_format(data)
    return _SIZE_READERS[kind](data) if kind in _SIZE_READERS else None


def _check_size(kind: str, width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"corrupt {kind} (size {width}x{height} px)", ErrorKind.CORRUPT)
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image too large: {width}x{height} px (limit {MAX_PIXELS / 1e6:g} MP)", ErrorKind.TOO_LARGE
        )


def _undecodable(kind: str | None) -> tuple[str, ErrorKind]:
    """The error for bytes OpenCV would not decode."""
    if kind is None:
        return "not an image (unrecognised format)", ErrorKind.NOT_AN_IMAGE
    if kind == "HEIF":
        return "unsupported format: HEIF/HEIC (no decoder in this OpenCV)", ErrorKind.NOT_AN_IMAGE
    if kind in ("JPEG", "PNG"):
        return f"corrupt {kind}", ErrorKind.CORRUPT
    return f"corrupt or unsupported {kind}", ErrorKind.NOT_AN_IMAGE


def _jpeg_size(data: bytes) -> tuple[int, int]:
    return _jpeg_frame(data)[0]


def _jpeg_frame(data: bytes) -> tuple[tuple[int, int], int]:
    """Walks the marker segments to the first scan: the frame header's size, and the bytes of a
    progressive JPEG's coefficients (`Header.coefficients`); the scan must end in EOI.

    Completeness: entropy-coded data never holds FF D9 (an FF byte there is followed by 00 or a restart
    marker), so a JPEG is whole when FF D9 follows its first scan. Checked at the end of the file first
    (zero/whitespace padding allowed): O(1) for nearly every file; else searched after the scan, at
    memchr speed, to allow data after EOI (MPF, Motion Photos, trailing junk). An EXIF thumbnail's EOI
    lies in an APP1 segment, before the scan, so it never counts.

    Plausibility: a sequential Huffman JPEG (SOF0/SOF1) spends at least 2 bits on every 8x8 block (a DC
    code and an EOB code, each at least 1 bit), so it cannot be smaller than width*height/256 bytes. A
    frame header claiming more (a cut file with an EOI appended, a forged header) would decode into a
    grey picture, seconds long, and an `ok` row."""
    size, frame, pos, end = None, 0, 2, len(data)
    segment = b""
    while True:
        if pos + 2 > end:
            raise ImageError("truncated JPEG", ErrorKind.TRUNCATED)
        if data[pos] != 0xFF:
            raise ImageError("corrupt JPEG (bad marker)", ErrorKind.CORRUPT)
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            raise ImageError("corrupt JPEG (no image data)", ErrorKind.CORRUPT)
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if pos + 4 > end or pos + 2 + length > end:
            raise ImageError("truncated JPEG", ErrorKind.TRUNCATED)
        if length < 2:
            raise ImageError("corrupt JPEG (bad segment length)", ErrorKind.CORRUPT)
        if marker in _JPEG_FRAMES and length >= 7:
            frame, segment = marker, data[pos : pos + 2 + length]
            size = (
                int.from_bytes(data[pos + 7 : pos + 9], "big"),
                int.from_bytes(data[pos + 5 : pos + 7], "big"),
            )
        if marker == 0xDA:
            if size is None:
                raise ImageError("corrupt JPEG (no frame header)", ErrorKind.CORRUPT)
            scan = pos + 2 + length
            if (
                not data[-64:].rstrip(b"\x00 \t\r\n").endswith(b"\xff\xd9")
                and data.find(b"\xff\xd9", scan) < 0
            ):
                raise ImageError("truncated JPEG", ErrorKind.TRUNCATED)
            pixels = size[0] * size[1]
            if frame in (0xC0, 0xC1) and end * 256 < pixels <= MAX_PIXELS:  # larger: refused as too large
                raise ImageError(
                    f"corrupt JPEG (too little data for {size[0]}x{size[1]} px)", ErrorKind.CORRUPT
                )
            return size, _coefficients(segment, *size) if frame in _PROGRESSIVE else 0
        pos += 2 + length


def _coefficients(frame: bytes, width: int, height: int) -> int:
    """Bytes of a progressive JPEG's coefficient buffers, which libjpeg fills scan by scan before any
    pixel comes out: 2 per sample of each component of the frame header `frame` (its sampling factors
    relative to the largest: 3 bytes a pixel at 4:2:0, 6 at 4:4:4)."""
    factors = [(f >> 4, f & 15) for f in (frame[11 : 10 + 3 * frame[9] : 3] if len(frame) > 9 else b"")]
    h_max = max((h for h, _ in factors), default=0) or 1
    v_max = max((v for _, v in factors), default=0) or 1
    return sum(2 * math.ceil(width * h / h_max) * math.ceil(height * v / v_max) for h, v in factors)


def _png_size(data: bytes) -> tuple[int, int]:
    """IHDR's size, once the chunk lengths are seen to lead from chunk to chunk to IEND within the file.

    The walk (lengths and types only, O(chunks)) matters: OpenCV allocates a chunk's declared length
    before reading it, so one flipped length byte made a 10 KB PNG cost 2.4 GB and 4 s. A PNG cut short
    ends without IEND (OpenCV refuses those too)."""
    if len(data) < 24:
        raise ImageError("truncated PNG", ErrorKind.TRUNCATED)
    if data[12:16] != b"IHDR":
        raise ImageError("corrupt PNG (no IHDR)", ErrorKind.CORRUPT)
    pos, end = 8, len(data)
    while data[pos + 4 : pos + 8] != b"IEND":
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
        if pos + 12 > end:
            raise ImageError("truncated PNG", ErrorKind.TRUNCATED)
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _gif_size(data: bytes) -> tuple[int, int]:
    if len(data) < 10:
        raise ImageError("truncated GIF", ErrorKind.TRUNCATED)
    return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageError("truncated BMP", ErrorKind.TRUNCATED)
    info = int.from_bytes(data[14:18], "little")
    if info == 12:  # OS/2 BITMAPCOREHEADER
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    if info not in (40, 52, 56, 64, 108, 124):
        raise ImageError("corrupt BMP (unknown header)", ErrorKind.CORRUPT)
    width = int.from_bytes(data[18:22], "little", signed=True)
    return width, abs(int.from_bytes(data[22:26], "little", signed=True))  # negative: top-down rows


def _webp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 30:
        raise ImageError("truncated WebP", ErrorKind.TRUNCATED)
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: canvas size, 24-bit minus one
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one after the 0x2F signature
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":  # lossy: after the frame tag and the 9D 01 2A start code
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    raise ImageError("corrupt WebP (unknown chunk)", ErrorKind.CORRUPT)


def _tiff_size(data: bytes) -> tuple[int, int]:
    """ImageWidth (256) and ImageLength (257) of the first IFD, the page OpenCV reads; classic or BigTIFF."""
    order = "little" if data[:2] == b"II" else "big"

    def number(offset: int, size: int) -> int:
        if offset + size > len(data):
            raise ImageError("truncated TIFF", ErrorKind.TRUNCATED)
        return int.from_bytes(data[offset : offset + size], order)

    big = number(2, 2) == 43
    ifd = number(8, 8) if big else number(4, 4)
    count, first, step = (number(ifd, 8), ifd + 8, 20) if big else (number(ifd, 2), ifd + 2, 12)
    found: dict[int, int] = {}
    for entry in range(first, first + step * min(count, 4096), step):
        tag, kind = number(entry, 2), number(entry + 2, 2)
        if tag in (256, 257) and kind in _TIFF_INTEGERS:
            found[tag] = number(entry + (12 if big else 8), _TIFF_INTEGERS[kind])
    if len(found) < 2:
        raise ImageError("corrupt TIFF (no image size)", ErrorKind.CORRUPT)
    return found[256], found[257]


def _jp2_size(data: bytes) -> tuple[int, int]:
    """The SIZ segment of a raw codestream, or the ihdr box inside a JP2 file's jp2h box."""
    if data.startswith(b"\xff\x4f\xff\x51"):
        if len(data) < 24:
            raise ImageError("truncated JPEG 2000", ErrorKind.TRUNCATED)
        x, y, x0, y0 = (int.from_bytes(data[i : i + 4], "big") for i in (8, 12, 16, 20))
        return x - x0, y - y0
    pos = 0
    while pos + 8 <= len(data):
        length, box = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        header = 16 if length == 1 else 8
        if length == 1:  # a 64-bit length follows the type
            length = int.from_bytes(data[pos + 8 : pos + 16], "big")
        if box == b"jp2h":  # its first child is the ihdr box: height, then width
            ihdr = pos + header
            if data[ihdr + 4 : ihdr + 8] != b"ihdr" or ihdr + 16 > len(data):
                break
            return int.from_bytes(data[ihdr + 12 : ihdr + 16], "big"), int.from_bytes(
                data[ihdr + 8 : ihdr + 12], "big"
            )
        if length < header:
            break
        pos += length
    raise ImageError("corrupt JPEG 2000 (no image header)", ErrorKind.CORRUPT)


_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_SIZE_READERS = {
    "JPEG": _jpeg_size,
    "PNG": _png_size,
    "GIF": _gif_size,
    "BMP": _bmp_size,
    "WebP": _webp_size,
    "TIFF": _tiff_size,
    "JPEG 2000": _jp2_size,
}
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 but DHT, JPG, DAC
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})  # the progressive frames (Huffman, arithmetic)
_TIFF_INTEGERS = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8: bytes
