"""`strip_metadata` (core/imaging/strip.py): nothing to strip gives the same bytes, and
formats without a stripper are refused."""

from __future__ import annotations

import pytest

from gossipchat.daemon.core.imaging import (
    ImageInfo,
    NotAnImage,
    UnsupportedFormat,
    inspect,
    strip_metadata,
)
from tests.unit.imaging_samples import (
    SAMPLES,
    info_for,
)


@pytest.mark.parametrize("name", ["PNG", "JPEG", "GIF", "WEBP", "APNG"])
def test_nothing_to_strip_returns_the_same_bytes(name: str) -> None:
    data = SAMPLES[name]
    assert strip_metadata(data, inspect(data)) is data


def test_strip_refuses_unknown_format_and_mismatched_info() -> None:
    with pytest.raises(UnsupportedFormat, match="format BMP is not allowed"):
        strip_metadata(b"BM", ImageInfo("image/bmp", "BMP", 1, 1))
    with pytest.raises(NotAnImage, match=r"^not an image: "):
        strip_metadata(SAMPLES["PNG"], info_for("JPEG"))
