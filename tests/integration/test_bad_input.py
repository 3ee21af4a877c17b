"""Bad input never crashes a job nor loses a neighbour: every input gets one row, with its faces or an error
that says in a few words what was wrong. Every case is a real file made here (OpenCV, NumPy, raw bytes)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from facesweep.workers.config import DetectorSettings, JobConfig
from facesweep.workers.inputs.images import MAX_PIXELS, ImageError, decode_image, image_format, image_size
from facesweep.workers.inputs.listing import InputError, list_uris
from facesweep.workers.job.driver import run_job
from facesweep.workers.model.nms import pairwise_iou
from facesweep.workers.storage import ObjectError, storage_for
from infra.demo import sample_photos
from infra.local_s3 import LocalS3
from tests.outputs import read_rows
from tests.photos import ASTRONAUT_FACE, astronaut, encode, exif_jpeg

TOO_LARGE = f"image too large: 30000x30000 px (limit {MAX_PIXELS / 1e6:g} MP)"
NOT_AN_IMAGE = "not an image (unrecognised format)"


# --- making the files -----------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png() -> bytes:
    """74 bytes whose IHDR claims 30000x30000 RGB."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(1000)))
        + png_chunk(b"IEND", b"")
    )


def huge_jpeg() -> bytes:
    """An 8x8 JPEG whose frame header claims 30000x30000; stock OpenCV decodes it into a 2.7 GB grey
    image (measured: 45 s, 5.2 GB peak memory)."""
    data = bytearray(encode(".jpg", np.zeros((8, 8, 3), np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    return bytes(data)


def jpeg_segments(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments of a one-scan JPEG up to its SOS, and its entropy-coded data."""
    pos, segments = 2, []
    while True:
        marker, length = jpeg[pos + 1], struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        segments.append((marker, jpeg[pos : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            return segments, jpeg[pos : jpeg.rindex(b"\xff\xd9")]


def cmyk_jpeg(bgr: np.ndarray) -> bytes:
    """An Adobe CMYK JPEG of `bgr`, inverted as Photoshop writes it. OpenCV cannot write one, so each ink
    is encoded as a grayscale JPEG (same standard tables) and its scan becomes one of the four
    one-component scans of a 4-component baseline frame, with an Adobe APP14 marker (transform 0)."""
    rgb = bgr[..., ::-1].astype(np.float64) / 255
    black = 1 - rgb.max(axis=2)
    inks = (1 - rgb - black[..., None]) / np.maximum(1 - black[..., None], 1e-9)
    planes = [*(1 - inks[..., i] for i in range(3)), 1 - black]  # stored inverted
    tables, scans = None, []
    for plane in planes:
        segments, scan = jpeg_segments(encode(".jpg", np.round(255 * plane).astype(np.uint8)))
        shared = b"".join(body for marker, body in segments if marker in (0xDB, 0xC4))  # DQT, DHT
        assert tables in (None, shared), "the grayscale encodings must share their tables"
        tables = shared
        scans.append(scan)
    height, width = bgr.shape[:2]
    adobe = b"\xff\xee" + struct.pack(">H", 14) + b"Adobe" + bytes([0, 100, 0, 0, 0, 0, 0])
    frame = b"\xff\xc0" + struct.pack(">HBHHB", 20, 8, height, width, 4)
    frame += b"".join(bytes([i + 1, 0x11, 0]) for i in range(4))
    body = b"".join(
        b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([i + 1, 0x00, 0, 63, 0]) + scan
        for i, scan in enumerate(scans)
    )
    return b"\xff\xd8" + adobe + tables + frame + body + b"\xff\xd9"


def flip_idat_byte(png: bytes) -> bytes:
    """One byte inverted in the middle of the first IDAT chunk: its CRC no longer matches."""
    idat = png.index(b"IDAT")
    length = struct.unpack(">I", png[idat - 4 : idat])[0]
    corrupt = bytearray(png)
    corrupt[idat + 4 + length // 2] ^= 0xFF
    return bytes(corrupt)


def with_alpha(bgr: np.ndarray) -> np.ndarray:
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = np.linspace(0, 255, bgr.shape[1], dtype=np.uint8)[None, :]
    return bgra


def bad_and_odd_files() -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, expected error, or None for a good image: the astronaut with its face, or 1x1)."""
    photo = astronaut()
    jpeg = encode(".jpg", photo, cv2.IMWRITE_JPEG_QUALITY, 90)
    png = encode(".png", photo)
    return {
        "empty.jpg": (b"", "empty file"),
        "text saved as.jpg": (b"this is not a photo\n" * 20, NOT_AN_IMAGE),
        "truncated.jpg": (jpeg[: len(jpeg) * 6 // 10], "truncated JPEG"),
        "truncated then zero-filled.jpg": (jpeg[: len(jpeg) * 99 // 100] + bytes(5000), "truncated JPEG"),
        "corrupt.png": (flip_idat_byte(png), "corrupt PNG"),
        "truncated.png": (png[: len(png) // 2], "truncated PNG"),
        "huge.png": (huge_png(), TOO_LARGE),
        "huge.jpg": (huge_jpeg(), TOO_LARGE),
        "16-bit.png": (encode(".png", photo.astype(np.uint16) * 257), None),
        "grayscale.png": (encode(".png", cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)), None),
        "grayscale.jpg": (encode(".jpg", cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)), None),
        "cmyk.jpg": (cmyk_jpeg(photo), None),
        "alpha.png": (encode(".png", with_alpha(photo)), None),
        "exif-rotated.jpg": (exif_jpeg(photo[:400]), None),  # upright: 512 wide, 400 high
        "webp.webp": (encode(".webp", photo, cv2.IMWRITE_WEBP_QUALITY, 90), None),
        "bmp.bmp": (encode(".bmp", photo), None),
        "tiff.tiff": (encode(".tiff", photo), None),
        "astronaut ü 日本 фото (1).png": (png, None),
        "1x1.png": (encode(".png", np.full((1, 1, 3), 128, np.uint8)), None),
    }


# --- images.py, case by case ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> dict[str, tuple[bytes, str | None]]:
    return bad_and_odd_files()


@pytest.mark.parametrize("name", [name for name, (_, error) in bad_and_odd_files().items() if error])
def test_bad_file_is_an_image_error(files: dict[str, tuple[bytes, str | None]], name: str) -> None:
    data, expected = files[name]
    with pytest.raises(ImageError) as raised:
        decode_image(data)
    assert str(raised.value) == expected


def test_size_is_checked_from_the_header_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded an image its header refuses")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for data in (huge_png(), huge_jpeg()):
        assert image_size(data) == (30000, 30000)
        with pytest.raises(ImageError, match="image too large"):
            decode_image(data)


def test_a_jpeg_too_small_for_its_frame_is_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sequential JPEG needs at least 2 bits per 8x8 block; the tightest real one meets the bound."""
    blank = np.zeros((2000, 2000), np.uint8)
    tightest = encode(".jpg", blank, cv2.IMWRITE_JPEG_QUALITY, 1, cv2.IMWRITE_JPEG_OPTIMIZE, 1)
    assert 2000 * 2000 / 256 <= len(tightest) < 2000 * 2000 / 256 * 1.05
    assert decode_image(tightest).shape == (2000, 2000, 3)
    forged = bytearray(encode(".jpg", np.zeros((8, 8, 3), np.uint8)))
    sof = forged.index(b"\xff\xc0")
    forged[sof + 5 : sof + 9] = struct.pack(">HH", 10000, 10000)  # stock OpenCV: 1.3 s, a grey 100 MP image
    monkeypatch.setattr(cv2, "imdecode", None)
    with pytest.raises(ImageError) as raised:
        decode_image(bytes(forged))
    assert str(raised.value) == "corrupt JPEG (too little data for 10000x10000 px)"


def test_good_variants_decode_to_the_right_pixels(files: dict[str, tuple[bytes, str | None]]) -> None:
    photo = astronaut()

    def decoded(name: str) -> np.ndarray:
        image = decode_image(files[name][0])
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        return image

    # 16 bit: OpenCV keeps the high byte (libpng's strip_16), within 1 of exact rounding, never saturated
    sixteen = photo.astype(np.uint16) * 257 + np.uint16(200)
    image = decode_image(encode(".png", sixteen))
    assert np.array_equal(image, (sixteen >> 8).astype(np.uint8))
    assert np.abs(image - np.round(sixteen / 257)).max() <= 1
    assert np.array_equal(decoded("16-bit.png"), photo)
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    for name in ("grayscale.png", "grayscale.jpg"):
        image = decoded(name)
        assert (image == image[..., :1]).all() and np.abs(image[..., 0].astype(int) - gray).mean() < 2
    assert np.abs(decoded("cmyk.jpg").astype(int) - photo).mean() < 3  # not inverted, not swapped
    assert np.array_equal(decoded("alpha.png"), photo)  # alpha dropped, colour kept (not premultiplied)
    upright = decoded("exif-rotated.jpg")
    assert upright.shape == (400, 512, 3) and np.abs(upright.astype(int) - photo[:400]).mean() < 3
    for name in ("bmp.bmp", "tiff.tiff"):
        assert np.array_equal(decoded(name), photo)
    assert np.abs(decoded("webp.webp").astype(int) - photo).mean() < 3
    assert decoded("1x1.png").shape == (1, 1, 3)


@pytest.mark.parametrize("cut", [0.05, 0.3, 0.6, 0.9, 0.99])
@pytest.mark.parametrize("progressive", [0, 1])
def test_truncated_jpeg_at_any_point(cut: float, progressive: int) -> None:
    jpeg = encode(".jpg", astronaut(), cv2.IMWRITE_JPEG_PROGRESSIVE, progressive)
    part = jpeg[: int(len(jpeg) * cut)]
    for data in (part, part + bytes(3000), part + b"\n"):
        with pytest.raises(ImageError, match=r"^truncated JPEG$"):
            decode_image(data)


def test_complete_jpeg_with_padding_or_data_after_its_end() -> None:
    """Zero padding, a trailing newline, or a whole file after EOI (Motion Photos append an MP4) are fine;
    an EXIF thumbnail's own EOI does not make a truncated photo whole."""
    photo = astronaut()
    jpeg = encode(".jpg", photo)
    for data in (jpeg + bytes(100_000), jpeg + b"\r\n", jpeg + b"ftypmp42" + bytes(50_000) + b"\xff\xd8"):
        assert decode_image(data).shape == photo.shape
    thumbnail = encode(".jpg", cv2.resize(photo, (64, 64)))
    with_thumbnail = exif_jpeg(photo, thumbnail)
    assert decode_image(with_thumbnail).shape == photo.shape
    with pytest.raises(ImageError, match=r"^truncated JPEG$"):
        decode_image(with_thumbnail[: len(with_thumbnail) * 8 // 10])


def test_broken_headers_say_which_format() -> None:
    jpeg, png = encode(".jpg", astronaut()), encode(".png", astronaut())
    assert image_format(jpeg) == "JPEG" and image_format(png) == "PNG"
    for data, expected in [
        (jpeg[:20], "truncated JPEG"),
        (b"\xff\xd8\xff", "truncated JPEG"),
        (b"\xff\xd8\xff\xd9", "corrupt JPEG (no image data)"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(9) + b"\xff\xd9", "corrupt JPEG (no image data)"),
        (png[:20], "truncated PNG"),
        (png[:8] + png_chunk(b"IDAT", b"") + bytes(20), "corrupt PNG (no IHDR)"),
        (b"BM" + bytes(30), "corrupt BMP (unknown header)"),
        (b"GIF89a\x00\x00\x10\x00" + bytes(20), "corrupt GIF (size 0x16 px)"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100), None),
    ]:
        with pytest.raises(ImageError) as raised:
            decode_image(data)
        if expected is None:  # HEIF: OpenCV has no decoder; the row says so
            assert str(raised.value).startswith("unsupported format: HEIF")
        else:
            assert str(raised.value) == expected


def raw_codestream(jp2: bytes) -> bytes:
    return jp2[jp2.index(b"jp2c") + 4 :]


def tiff_header(order: str, big: bool, width: int, height: int, kind: int) -> bytes:
    """A TIFF header and first IFD with ImageWidth/ImageLength as `kind` (3 SHORT, 4 LONG, 16 LONG8)."""
    end = "<" if order == "II" else ">"
    field = 8 if big else 4  # an entry's value field

    def entry(tag: int, value: int) -> bytes:
        count = struct.pack(end + ("HHQ" if big else "HHI"), tag, kind, 1)
        return count + struct.pack(end + {3: "H", 4: "I", 16: "Q"}[kind], value).ljust(field, b"\x00")

    if big:  # version 43, 8-byte offsets, first IFD at 16, 8-byte entry count
        head = order.encode() + struct.pack(end + "HHHQQ", 43, 8, 0, 16, 2)
    else:
        head = order.encode() + struct.pack(end + "HIH", 42, 8, 2)
    return head + entry(256, width) + entry(257, height) + bytes(field)


@pytest.mark.parametrize(
    "make",
    [
        lambda im: encode(".jpg", im),
        lambda im: encode(".jpg", im, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        lambda im: encode(".png", im),
        lambda im: encode(".gif", im),
        lambda im: encode(".bmp", im),
        lambda im: encode(".webp", im),  # lossless: VP8L
        lambda im: encode(".webp", im, cv2.IMWRITE_WEBP_QUALITY, 80),  # lossy: VP8
        lambda im: encode(".tiff", im),
        lambda im: encode(".jp2", im),
        lambda im: raw_codestream(encode(".jp2", im)),
        lambda im: cmyk_jpeg(im),
    ],
    ids=[
        "jpeg",
        "progressive",
        "png",
        "gif",
        "bmp",
        "webp-lossless",
        "webp-lossy",
        "tiff",
        "jp2",
        "j2k",
        "cmyk",
    ],
)
def test_header_size_matches_the_decoded_size(make: Callable[[np.ndarray], bytes]) -> None:
    image = astronaut()[:96, :333]  # not square, odd width
    data = make(image)
    assert image_size(data) == (333, 96)
    assert decode_image(data).shape == image.shape


def test_header_sizes_of_variants_opencv_does_not_write() -> None:
    for order in ("II", "MM"):
        for big, kind in ((False, 3), (False, 4), (True, 3), (True, 4), (True, 16)):
            assert image_size(tiff_header(order, big, 40000, 30000, kind)) == (40000, 30000)
    vp8x = b"RIFF" + bytes(4) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4)
    vp8x += (30000 - 1).to_bytes(3, "little") + (20000 - 1).to_bytes(3, "little")
    assert image_size(vp8x) == (30000, 20000)
    os2_bmp = b"BM" + bytes(12) + struct.pack("<IHHHH", 12, 640, 480, 1, 24) + bytes(8)
    assert image_size(os2_bmp) == (640, 480)
    with pytest.raises(ImageError, match="image too large: 40000x30000 px"):
        decode_image(tiff_header("II", False, 40000, 30000, 4))


def test_unknown_formats_are_left_to_opencv() -> None:
    photo = astronaut()
    for ext in (".ppm", ".avif"):
        data = encode(ext, photo)
        assert image_size(data) is None
        assert decode_image(data).shape == photo.shape


def test_listing_skips_non_images_by_extension(tmp_path: Path) -> None:
    (tmp_path / "a b").mkdir()
    for name in ("x.JPG", "a b/ü.png", "notes.txt", "a b/README", "photo.heic", "song.mp3", "clip.mp4"):
        (tmp_path / name).write_bytes(b"")
    listed = {Path(uri).relative_to(tmp_path).as_posix() for uri in list_uris(str(tmp_path))}
    # a video is listed as its pieces; one that cannot be opened, as one piece from 0 (its error row's)
    assert listed == {"x.JPG", "a b/ü.png", "photo.heic", "clip.mp4#t=000000.000,000030.000"}


def test_manifest_with_a_byte_order_mark_crlf_and_non_ascii_names(tmp_path: Path) -> None:
    names = ["ü 日本 фото.jpg", "with space.png", "sub dir/x.jpg"]
    manifest = tmp_path / "images.txt"
    manifest.write_bytes("\ufeff# photos\r\n".encode() + "\r\n".join(names).encode() + b"\r\n")
    assert list(list_uris(str(manifest))) == sorted(str(tmp_path / name) for name in names)  # uri order
    manifest.write_bytes("café.jpg\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text"):
        list(list_uris(str(manifest)))


def test_a_missing_s3_object_is_this_objects_error(s3_env: LocalS3) -> None:
    s3_env.client().create_bucket(Bucket="bad-input-missing")
    with pytest.raises(ObjectError, match="does not exist"):
        storage_for("s3://bad-input-missing/no such photo.jpg").get(
            "s3://bad-input-missing/no such photo.jpg"
        )


# --- whole jobs -----------------------------------------------------------------------------------------


def job(input_: str, output: str) -> JobConfig:
    return JobConfig(
        input=input_,
        output=output,
        detector=DetectorSettings(model="retinaface-mnet025", precision="f32"),
        actors=1,
        cpus_per_actor=1,
        shard_size=4,
    )


def assert_astronaut_face(row: dict) -> None:
    assert row["status"] == "ok" and row["error"] is None, row
    face = row["faces"][0]
    box = np.array([[face["x1"], face["y1"], face["x2"], face["y2"]]], np.float32)
    assert pairwise_iou(box, ASTRONAUT_FACE, plus_one=False)[0, 0] >= 0.8, (row["uri"], box)


def assert_good_neighbours(rows: dict[str, dict]) -> None:
    def row(name: str) -> dict:
        [found] = [r for uri, r in rows.items() if uri.endswith(f"/{name}")]
        assert found["status"] == "ok", found
        return found

    assert_astronaut_face(row("astronaut.png"))
    assert len(row("camera.png")["faces"]) >= 1
    assert row("coffee.png")["faces"] == [] and row("rocket.jpg")["faces"] == []


@pytest.mark.slow
def test_one_local_job_with_every_bad_file_among_good_photos(ray_local: None, tmp_path: Path) -> None:
    folder = tmp_path / "bad input"
    folder.mkdir()
    photos = [(Path(key).name, path.read_bytes(), None) for key, path in sample_photos()[:6]]
    cases = [(name, data, error) for name, (data, error) in bad_and_odd_files().items()]
    expected: dict[str, str | None] = {}
    for i, case in enumerate(cases):  # the good photos spread between the bad files
        for name, data, error in [*photos[i // 3 : i // 3 + 1], case] if i % 3 == 0 else [case]:
            (folder / name).write_bytes(data)
            expected[str(folder / name)] = error
    (folder / "notes.txt").write_text("not an image")
    expected[str(folder / "notes.txt")] = NOT_AN_IMAGE
    missing = str(folder / "deleted since listing.jpg")
    expected[missing] = "fetch failed"
    manifest = tmp_path / "images.txt"
    manifest.write_text("\n".join(expected) + "\n", encoding="utf-8")

    result = run_job(job(str(manifest), str(tmp_path / "out")))

    rows = read_rows(str(tmp_path / "out"))
    assert set(rows) == set(expected), "one row per input"
    for uri, error in expected.items():
        row = rows[uri]
        if error is None:
            assert row["status"] == "ok" and row["error"] is None, row
            continue
        assert row["status"] == "error" and row["faces"] is None, row
        assert row["width"] is None and row["height"] is None, row
        if uri == missing:
            assert row["error"] == f"fetch failed: {missing}: No such file or directory"
        else:
            assert row["error"] == error, row
    assert_good_neighbours(rows)
    for name, (_, error) in bad_and_odd_files().items():
        row = rows[str(folder / name)]
        if error is None and name != "1x1.png":
            assert_astronaut_face(row)  # the rotated one too: upright pixels, upright box
    upright = rows[str(folder / "exif-rotated.jpg")]
    assert (upright["width"], upright["height"]) == (512, 400)
    tiny = rows[str(folder / "1x1.png")]
    assert (tiny["width"], tiny["height"], tiny["faces"]) == (1, 1, [])
    errors = sum(error is not None for error in expected.values())
    assert (result.images, result.errors) == (len(expected), errors)
    assert not result.failed_shards
    assert result.faces == sum(len(row["faces"]) for row in rows.values() if row["faces"])


@pytest.mark.slow
def test_s3_keys_with_spaces_and_non_ascii(ray_local: None, local_s3: LocalS3, tmp_path: Path) -> None:
    client = local_s3.client()
    client.create_bucket(Bucket="bad-input")
    photo = astronaut()
    keys = {
        "odd keys/with space.png": encode(".png", photo),
        "odd keys/ünïcödé 日本語 фото.jpg": encode(".jpg", photo),
        "odd keys/a+b %20 (1) & c=d?.jpg": encode(".jpg", photo),
        "odd keys/sub folder/camera.png": dict(sample_photos())["skimage/camera.png"].read_bytes(),
        "odd keys/empty.jpg": b"",
        "odd keys/README.md": b"# not an image: the listing skips it",
    }
    for key, data in keys.items():
        client.put_object(Bucket="bad-input", Key=key, Body=data)

    result = run_job(job("s3://bad-input/odd keys", "s3://bad-input/out"))

    s3 = local_s3.arrow_filesystem()
    rows = read_rows("bad-input/out", s3)
    assert set(rows) == {f"s3://bad-input/{key}" for key in keys if not key.endswith(".md")}
    for key in list(keys)[:3]:
        assert_astronaut_face(rows[f"s3://bad-input/{key}"])
    assert len(rows["s3://bad-input/odd keys/sub folder/camera.png"]["faces"]) >= 1
    assert rows["s3://bad-input/odd keys/empty.jpg"]["error"] == "empty file"
    assert (result.images, result.errors) == (5, 1)
