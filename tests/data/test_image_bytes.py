"""Source PNG / JPEG streams published without metadata, and the benchmark against plain datasets."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from gmaivl.dataset_builders.benchmark_vs_datasets import compare
from gmaivl.dataset_builders.image_bytes import stripped_stream

SECRET = "DOE^JOHN MRN-4471"


def planted(tmp_path, kind: str, mode: str, seed: int):
    rng = np.random.default_rng(seed)
    shape = (40, 56) if mode == "L" else (40, 56, 3)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010E] = SECRET  # ImageDescription
    path = tmp_path / f"x.{kind}"
    if kind == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("Patient", SECRET)
        info.add_itxt("Comment", SECRET, zip=True)
        image.save(path, pnginfo=info, exif=exif)
    else:
        image.save(path, exif=exif, comment=SECRET.encode(), quality=90)
    return path, np.asarray(Image.open(path))


@pytest.mark.parametrize("kind", ["png", "jpg"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("seed", [0, 1])
def test_streams_keep_the_pixels_and_lose_every_metadata_segment(tmp_path, kind, mode, seed):
    path, pixels = planted(tmp_path, kind, mode, seed)
    assert SECRET.encode() in path.read_bytes() or kind == "png"  # iTXt is compressed
    stream = stripped_stream(path, pixels)
    assert stream is not None and len(stream) < path.stat().st_size
    assert b"DOE" not in stream and b"Exif" not in stream and b"tEXt" not in stream
    decoded = Image.open(io.BytesIO(stream))
    assert not decoded.info.get("exif") and "Patient" not in decoded.info
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_other_pixels_or_formats_fall_back_to_a_re_encode(tmp_path):
    path, pixels = planted(tmp_path, "png", "RGB", 0)
    assert stripped_stream(path, pixels[:, :, ::-1]) is None  # not the pixels the build publishes
    Image.fromarray(pixels).convert("P").save(tmp_path / "p.png")  # a palette PNG
    palette = tmp_path / "p.png"
    assert stripped_stream(palette, np.asarray(Image.open(palette).convert("RGB"))) is None
    (tmp_path / "cut.jpg").write_bytes(planted(tmp_path, "jpg", "L", 0)[0].read_bytes()[:300])
    assert stripped_stream(tmp_path / "cut.jpg", pixels) is None


def test_benchmark_prints_ratios_and_each_config_stores_an_image_once(tmp_path):
    result = compare(images=120, folder=tmp_path)
    assert result["baseline"] == "plain datasets" and result["time_ratio"] > 0
    assert result["gmaivl build"]["rows"]["percept"] >= 2 * result["gmaivl build"]["records"]
    for config, ratio in result["storage_ratio"].items():
        assert ratio <= 1.1, (config, ratio)
