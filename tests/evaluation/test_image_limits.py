"""A bad image fails its own question only: decompression bombs (planted here, a few hundred KB
declaring 20000x20000) are refused from their header, with flat memory; the run records the row
with its reason, goes on, and a rerun skips it (`retry_failed` asks it again)."""

import base64
import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import pandas as pd
import pytest
from PIL import Image

from gmaivl.core.tsv import (
    ImageDecodeError,
    ImageLimits,
    ImageTooLargeError,
    decode_base64_image,
    open_image_bytes,
    open_image_file,
)
from gmaivl.evaluation.loaders import load_vlmevalkit_tsv
from gmaivl.evaluation.predictions import forget_failed
from gmaivl.evaluation.report import write_reports
from gmaivl.evaluation.runner import RowError, evaluate, run_benchmark

from ._spy import batch_rows, spy_generate

BUDGET = {"mcq": 3, "closed": 3, "open": 3, "report": 3}


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of `width` x `height` black pixels, its IDAT zlib-compressed
    row by row (cheap to write; decoding it to RGB would take width * height * 3 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb_20k() -> bytes:
    return png_bomb(20000, 20000)


def _png(color="red", size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_the_planted_bomb_is_a_real_image():
    small = png_bomb(64, 48)  # the same writer at a decodable size: PIL reads it as a valid PNG
    with Image.open(io.BytesIO(small)) as img:
        img.load()
        assert img.size == (64, 48) and img.mode == "1"


def test_bomb_is_refused_from_its_header(bomb_20k):
    assert len(bomb_20k) < 400_000  # a few hundred KB on disk ...
    # over twice PIL's MAX_IMAGE_PIXELS: PIL's own header check refuses it, inside Image.open
    with pytest.raises(ImageTooLargeError, match=r"row 2: image over the pixel limit.*400000000 pixels"):
        open_image_bytes(bomb_20k, "row 2")
    # 144 M pixels: under PIL's refusal (it only warns there, and then decodes 432 MB of RGB) but
    # over our limit (PIL's MAX_IMAGE_PIXELS), checked on the parsed header before load()
    cell = base64.b64encode(png_bomb(12000, 12000)).decode()  # ... or as a base64 TSV cell
    assert len(cell) < 250_000
    with pytest.raises(ImageTooLargeError, match=r"b\.tsv row 3: image declares 12000x12000 = 144,000,000"):
        decode_base64_image(cell, "b.tsv row 3")


def test_bomb_decoding_memory_stays_flat(tmp_path, bomb_20k):
    """Peak resident memory of a fresh interpreter that refuses the bomb, against one that only
    imports the same modules: the refusal allocates no pixels (decoding would take 1.2 GB)."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_20k)
    code = textwrap.dedent(
        f"""
        import resource, sys
        from gmaivl.core.tsv import ImageTooLargeError, open_image_file
        if sys.argv[1] == "bomb":
            for _ in range(3):
                try:
                    open_image_file({str(path)!r}, "bomb")
                except ImageTooLargeError:
                    pass
                else:
                    raise SystemExit("not refused")
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )

    def peak_kib(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        return int(out.stdout.strip())

    baseline, bomb = peak_kib("baseline"), peak_kib("bomb")
    print(f"peak RSS: baseline {baseline / 1024:.1f} MiB, refusing the bomb 3x {bomb / 1024:.1f} MiB")
    assert bomb - baseline < 16 * 1024  # under 16 MiB above the imports (the file is 0.05 MiB)


def test_limits_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GMAIVL_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ImageTooLargeError, match=r"8x16 = 128 pixels, over the limit of 100"):
        open_image_bytes(_png(size=(8, 16)), "x")
    assert open_image_bytes(_png(size=(10, 10)), "x").size == (10, 10)
    monkeypatch.setenv("GMAIVL_MAX_IMAGE_BYTES", "50")
    (tmp_path / "a.png").write_bytes(_png())
    with pytest.raises(ImageTooLargeError, match=r"image file .*a\.png of \d+ bytes is over the limit of 50"):
        open_image_file(tmp_path / "a.png", "x")
    monkeypatch.setenv("GMAIVL_MAX_IMAGE_BYTES", "lots")
    with pytest.raises(ValueError, match="GMAIVL_MAX_IMAGE_BYTES must be a positive integer, got 'lots'"):
        ImageLimits.from_env()


def test_corrupt_and_truncated_images_name_their_row():
    with pytest.raises(ImageDecodeError, match=r"row 7: image cannot be decoded"):
        open_image_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "row 7")
    with pytest.raises(ImageDecodeError, match=r"row 8: image cannot be decoded"):
        open_image_bytes(_png(size=(64, 64))[:-30], "row 8")  # IDAT cut short


# --------------------------------------------------------------------------- the run goes on


def _bench_with_bomb(path, bomb: bytes):
    cells = [_png("red"), bomb, _png("blue")]
    pd.DataFrame(
        {
            "index": ["1", "2", "3"],
            "question": ["Which organ?", "Which one?", "Which side?"],
            "A": ["liver", "CT", "left"],
            "B": ["kidney", "MR", "right"],
            "answer": ["B", "A", "B"],
            "image": [base64.b64encode(c).decode() for c in cells],
        }
    ).to_csv(path, sep="\t", index=False)
    return load_vlmevalkit_tsv(path)


def test_a_bomb_in_row_2_of_3_fails_that_row_only(tiny_shared, answer_b, tmp_path):
    model, processor = tiny_shared
    samples = _bench_with_bomb(tmp_path / "b.tsv", png_bomb(20000, 20000))
    pred = tmp_path / "p.jsonl"
    kw = dict(benchmark="b", batch_size=3, max_new_tokens=BUDGET, generation_kwargs=answer_b, progress=False)
    with spy_generate(model) as calls:
        result = run_benchmark(model, processor, samples, pred, **kw)
    assert batch_rows(calls) == [2]  # the two good questions, asked together
    lines = [json.loads(x) for x in pred.read_text().splitlines()[1:]]
    assert [r["index"] for r in lines] == ["1", "2", "3"]
    assert [r["prediction"] for r in lines] == ["B", "", "B"]
    assert "400000000 pixels" in lines[1]["error"] and "b.tsv row 3 (index 2)" in lines[1]["error"]
    assert result["n"] == 2 and result["metrics"]["accuracy"] == 100.0  # rows 1 and 3 have key B
    assert result["failed_rows"]["indices"] == ["2"]
    md = write_reports(result, tmp_path / "r", print_tables=False)["markdown"].read_text()
    assert "Rows that failed" in md and "400000000 pixels" in md

    with spy_generate(model) as calls:  # the rerun does not ask it again
        again = run_benchmark(model, processor, samples, pred, **kw)
    assert batch_rows(calls) == [] and again["failed_rows"] == result["failed_rows"]

    with spy_generate(model) as calls:  # retry_failed asks it again (and it fails again)
        retried = run_benchmark(model, processor, samples, pred, retry_failed=True, **kw)
    assert batch_rows(calls) == [] and retried["failed_rows"]["indices"] == ["2"]
    assert len(pred.read_text().splitlines()) == 1 + 3  # its line was replaced, not repeated

    fixed_bench = _bench_with_bomb(tmp_path / "b.tsv", _png("green"))  # the image is replaced
    with spy_generate(model) as calls:  # (the text is unchanged, so is the file's fingerprint)
        still = run_benchmark(model, processor, fixed_bench, pred, **kw)
    assert batch_rows(calls) == [] and still["failed_rows"]["indices"] == ["2"]  # recorded: not asked
    assert forget_failed(pred) == 1  # what --retry-failed does: the failed line goes ...
    with spy_generate(model) as calls:
        fixed = run_benchmark(model, processor, fixed_bench, pred, **kw)
    assert batch_rows(calls) == [1] and "failed_rows" not in fixed and fixed["n"] == 3  # ... and it is asked


def test_a_backend_that_decodes_inside_asks_each_good_question_once(tmp_path):
    """The served backend decodes inside `generate`: a bad image there fails its question, and
    the others of the batch are asked again together, each once more at most."""
    samples = _bench_with_bomb(tmp_path / "b.tsv", png_bomb(20000, 20000))
    asked = []

    def generate(batch):
        for s in batch:
            s.load_images()  # raises for the bomb, as chat_messages would
        asked.append([s.index for s in batch])
        return ["B" for _ in batch]

    result = evaluate(samples, tmp_path / "p.jsonl", generate, benchmark="b", model_id="m", protocol={},
                      batch_size=3, progress=False)  # fmt: skip
    assert asked == [["1", "3"]] and result["failed_rows"]["indices"] == ["2"]
    replies = {"x": RowError("why")}
    assert replies["x"].reason == "why"


def test_cli_notes_failed_rows(tiny_checkpoint, tmp_path, capsys):
    from gmaivl.app.cli import main

    _bench_with_bomb(tmp_path / "b.tsv", png_bomb(20000, 20000))
    args = ["eval", "--model", str(tiny_checkpoint), "--benchmark", str(tmp_path / "b.tsv"),
            "--out", str(tmp_path / "out"), "--max-new-tokens", "mcq=2", "--quiet"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "note: 1 question(s) failed and are left out of the metrics (first: ['2'])" in err
    result = json.loads((tmp_path / "out" / "b" / "results.json").read_text())
    assert result["n"] == 2 and "400000000 pixels" in result["failed_rows"]["reasons"]["2"]
    _bench_with_bomb(tmp_path / "b.tsv", _png("green"))
    assert main([*args, "--retry-failed"]) == 0
    assert "question(s) failed" not in capsys.readouterr().err
    result = json.loads((tmp_path / "out" / "b" / "results.json").read_text())
    assert result["n"] == 3 and "failed_rows" not in result
