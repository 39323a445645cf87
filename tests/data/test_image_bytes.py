"""Source PNG / JPEG streams published without metadata, and the benchmark against plain datasets."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, PngImagePlugin

from gmaivl.dataset_builders.benchmark_vs_datasets import compare, format_table
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
    # the QC floor does a strict part of the build's per-image work: it cannot take longer
    assert 0 < result["QC floor"]["seconds"] < result["gmaivl build"]["seconds"]
    assert "QC floor / plain datasets" in format_table(result)
    assert result["gmaivl build"]["rows"]["percept"] >= 2 * result["gmaivl build"]["records"]
    for config, ratio in result["storage_ratio"].items():
        assert ratio <= 1.1, (config, ratio)


def test_greyscale_and_its_rgb_copy_have_imagehash_phash_and_the_md5_of_the_grey_plane():
    import hashlib

    import imagehash

    from gmaivl.dataset_builders.records import image_phash, pixel_md5

    rng = np.random.default_rng(3)
    for _ in range(50):
        grey = rng.integers(0, 256, tuple(rng.integers(20, 90, 2)), dtype=np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        assert image_phash(grey) == image_phash(rgb) == str(imagehash.phash(Image.fromarray(rgb)))
        digest = hashlib.md5(str(grey.shape).encode())
        digest.update(grey.tobytes())
        assert pixel_md5(rgb) == pixel_md5(grey) == digest.hexdigest()
        colour = rgb.copy()
        colour[0, 0, 2] ^= 1  # one channel of one pixel differs: an RGB image, hashed as RGB
        digest = hashlib.md5(str(colour.shape).encode())
        digest.update(colour.tobytes())
        assert pixel_md5(colour) == digest.hexdigest() != pixel_md5(rgb)


def test_shard_writer_tables_give_the_bytes_of_row_by_row_writes(tmp_path):
    import pyarrow as pa

    from gmaivl.dataset_builders.records import record_features
    from gmaivl.dataset_builders.writer import ShardWriter, row_bytes

    rng = np.random.default_rng(0)
    rows = []
    for i in range(37):
        png = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(png, format="PNG")
        rows.append(
            {
                **{k: f"v{i}" for k in ("record_id", "modality", "label", "department", "source_dataset")},
                "image": {"bytes": png.getvalue(), "path": None},
                "split": "train",
                "width": 8,
                "height": 8,
            }
        )
    features = record_features()
    by_row = ShardWriter(tmp_path / "a", "train", features, 10**9, 2000, row_group_rows=10)
    for row in rows:
        by_row.write(row, row_bytes(row))
    by_table = ShardWriter(tmp_path / "b", "train", features, 10**9, 2000, row_group_rows=10)
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    by_table.write_table(table.slice(0, 20), [row_bytes(r) for r in rows[:20]])
    by_table.write(rows[20], row_bytes(rows[20]))
    by_table.write_table(table.slice(21), [row_bytes(r) for r in rows[21:]])
    (a,), (b,) = by_row.close(), by_table.close()
    assert pq.ParquetFile(a).metadata.num_row_groups > 37 // 10  # the byte limit cut groups too
    assert a.read_bytes() == b.read_bytes()
