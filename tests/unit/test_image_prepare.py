"""`images.prepare`, what `send_image` runs on the user's bytes: read the header, strip
the metadata, make the thumbnail. The pixels are decoded once, by the thumbnail, on
the bytes that will be posted; that decode is also the check that they decode, so a
truncated or corrupt image is refused as `inspect` refuses it."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core.imaging import ImageLimits, NotAnImage, inspect, strip_metadata
from gossipchat.daemon.images import prepare
from tests.unit.imaging_samples import SAMPLES, encode, picture

LIMITS = ImageLimits()


@pytest.mark.parametrize("keep_metadata", [False, True])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_prepare_posts_what_inspect_and_strip_give(name: str, keep_metadata: bool) -> None:
    data = SAMPLES[name]
    prepared = prepare(data, LIMITS, keep_metadata)
    info = inspect(data)
    assert prepared.info == info
    assert prepared.data == (data if keep_metadata else strip_metadata(data, info))
    assert prepared.thumbnail.startswith(b"\xff\xd8\xff")  # a JPEG preview


@pytest.mark.parametrize("keep_metadata", [False, True])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_prepare_refuses_truncated_images(fmt: str, keep_metadata: bool) -> None:
    data = encode(picture((200, 150)), fmt)
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(NotAnImage, match=r"^not an image: .*(truncat|corrupt|decode)"):
            prepare(data[:cut], LIMITS, keep_metadata)


@pytest.mark.parametrize("keep_metadata", [False, True])
def test_prepare_refuses_corrupt_pixel_data(keep_metadata: bool) -> None:
    data = bytearray(SAMPLES["PNG"])
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 30] = bytes(20)  # breaks the zlib stream, CRC stays stale
    with pytest.raises(NotAnImage, match="cannot decode the PNG data"):
        prepare(bytes(data), LIMITS, keep_metadata)
