"""The build side by side with a plain `datasets` script on the same images, in one run.

Inputs: `--images` distinct greyscale 128 px PNGs in 10 class folders (seeded noise, upsampled).
Both contenders run in a fresh child process each, with `datasets` already imported (the baseline
needs it too), which reports its wall time, its CPU time and its peak resident memory (its own and
its children's); `--repeat N` alternates them N times and reports the medians, with the load
average, so that a shared machine's noise shows:

- baseline, named `plain datasets`: `Dataset.from_generator` over (image bytes, class) with an
  `Image()` feature, then `to_parquet`: the files as they are, one row each, no QC, no text;
- `gmaivl build`: the full build (engine tasks, templates backend, records + caption + instruct +
  percept, QC, Parquet shards, card);
- `QC floor` (not a contender, a lower bound of the build): only the per-image work the build's QC
  cannot skip, with the build's own functions: the metadata-free stream, its decode, the pixel md5
  and the pHash (perceptual dedup and decontamination need the pixels, which the baseline never
  decodes); no text, no Parquet, no engine.

Printed: seconds, images/s, peak RSS, published bytes, the time ratio (build / baseline) and, per
config, the published Parquet bytes over the source PNG bytes of the images it uses.

    python -m gmaivl.dataset_builders.benchmark_vs_datasets --images 2000 --workers 1 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

CLASSES = 10


def make_inputs(folder: Path, images: int, seed: int = 0) -> Path:
    """Write `images` distinct grey PNGs into `folder/src/class_<k>/` and a build spec."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        target = folder / "src" / f"class_{i % CLASSES}"
        target.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(small).resize((128, 128), Image.Resampling.BICUBIC).save(target / f"{i:07d}.png")
    spec = {
        "name": "benchmark-vs-datasets",
        "sources": [
            {
                "name": "grey",
                "type": "class_folders",
                "root": "src",
                "modality": "X-ray",
                "department": "Radiology",
            }
        ],
        "generation": {"backend": "templates"},
        "qc": {"min_image_side": 64},
    }
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _plain(folder: Path, out: Path) -> dict[str, Any]:
    from datasets import Dataset, Features, Image, Value

    files = sorted((folder / "src").glob("*/*.png"))

    def rows():
        for path in files:
            yield {"image": {"bytes": path.read_bytes(), "path": None}, "label": path.parent.name}

    started = time.perf_counter()
    features = Features({"image": Image(), "label": Value("string")})
    dataset = Dataset.from_generator(rows, features=features, cache_dir=str(out / "cache"))
    dataset.to_parquet(str(out / "plain.parquet"))
    return {
        "seconds": time.perf_counter() - started,
        "published_bytes": (out / "plain.parquet").stat().st_size,
    }


def _qc_floor(folder: Path, out: Path) -> dict[str, Any]:
    from .image_bytes import metadata_free_stream
    from .imaging import read_image
    from .records import image_phash, pixel_md5

    files = sorted((folder / "src").glob("*/*.png"))
    image_phash(np.zeros((8, 8), np.uint8))  # imagehash's (and scipy's) import is untimed, as `datasets`'
    started = time.perf_counter()
    for path in files:
        stream = metadata_free_stream(path.read_bytes())
        plane = read_image(path, data=stream, modes=("L", "RGB"))
        pixel_md5(plane)
        image_phash(plane)
    return {"seconds": time.perf_counter() - started, "published_bytes": 0}


def _build(folder: Path, out: Path, workers: int) -> dict[str, Any]:
    from .engine import run_build

    started = time.perf_counter()
    report = run_build(folder / "build.yaml", out / "corpus", workers=workers, progress=False)
    seconds = time.perf_counter() - started
    configs = {
        config: sum(p.stat().st_size for p in (out / "corpus" / config).glob("*.parquet"))
        for config in report.rows_published
    }
    configs["records"] = sum(p.stat().st_size for p in (out / "corpus" / "records").glob("*.parquet"))
    return {
        "seconds": seconds,
        "published_bytes": sum(configs.values()),
        "config_bytes": configs,
        "rows": report.rows_published,
        "records": report.records_kept,
    }


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _child(kind: str, folder: str, out: str, workers: int) -> None:
    import datasets  # noqa: F401  (both contenders start with it imported: the baseline's own import is untimed)

    folder_path, out_path = Path(folder), Path(out)
    cpu = _cpu_seconds()
    if kind == "plain":
        result = _plain(folder_path, out_path)
    elif kind == "floor":
        result = _qc_floor(folder_path, out_path)
    else:
        result = _build(folder_path, out_path, workers)
    result["cpu_seconds"] = _cpu_seconds() - cpu
    result["cpu_before"] = cpu  # the interpreter's start and imports: not the contender's
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _tree_sample(process, cpu: dict[int, float]) -> int:
    """Resident bytes of a process and all its descendants (psutil, a dependency of accelerate);
    records each one's CPU seconds so far in `cpu` (by pid)."""
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that just ended
            total += member.memory_info().rss
            times = member.cpu_times()
            cpu[member.pid] = times.user + times.system
    return total


def measure(kind: str, folder: Path, out: Path, workers: int = 1, interval: float = 0.1) -> dict[str, Any]:
    """One contender in a fresh child process; its JSON result, with `peak_tree_rss_mb`: the
    largest sum of the resident memory of the child and its worker processes, sampled every
    `interval` seconds, and `cpu_seconds`: the larger of the child's own count (itself and the
    children it waited for) and the sum over it and all its descendants as last sampled, less its
    own start (a pool's forkserver workers are grandchildren no rusage of the child counts)."""
    import psutil

    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", __spec__.name, "--child", kind, str(folder), str(out), str(workers)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        process, peak, cpu = psutil.Process(child.pid), 0, {}
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, _tree_sample(process, cpu))
            time.sleep(interval)
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    if child.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{err_text[-4000:]}")
    result = json.loads(out_text.strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = max(peak / 2**20, result["peak_rss_mb"])
    result["cpu_seconds"] = max(result["cpu_seconds"], sum(cpu.values()) - result["cpu_before"])
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's seconds and the medians of time and CPU."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {
        **ordered[(len(ordered) - 1) // 2],
        "seconds": statistics.median(r["seconds"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "runs_seconds": [round(r["seconds"], 3) for r in runs],
    }


def compare(
    images: int, workers: int = 1, seed: int = 0, folder: Path | None = None, repeat: int = 1
) -> dict[str, Any]:
    """Inputs, then the baseline and the build on them, alternately `repeat` times (a fresh output
    folder each time); the medians and ratios."""
    import shutil

    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "build": [], "floor": []}
    with tempfile.TemporaryDirectory(prefix="gmaivl-bench-") as scratch:
        root = Path(folder or scratch)
        make_inputs(root / "inputs", images, seed)
        source_bytes = sum(p.stat().st_size for p in (root / "inputs" / "src").glob("*/*.png"))
        for _ in range(max(1, repeat)):
            for kind in ("plain", "build", "floor"):
                shutil.rmtree(root / kind, ignore_errors=True)
                runs[kind].append(measure(kind, root / "inputs", root / kind, workers))
    plain, build, floor = (_median_run(runs[kind]) for kind in ("plain", "build", "floor"))
    return {
        "images": images,
        "workers": workers,
        "repeat": max(1, repeat),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "source_png_bytes": source_bytes,
        "baseline": "plain datasets",
        "plain datasets": {**plain, "images_per_s": images / plain["seconds"]},
        "gmaivl build": {**build, "images_per_s": images / build["seconds"]},
        "QC floor": {**floor, "images_per_s": images / floor["seconds"]},
        "time_ratio": build["seconds"] / plain["seconds"],
        "floor_ratio": floor["seconds"] / plain["seconds"],
        "cpu_ratio": build["cpu_seconds"] / plain["cpu_seconds"],
        "storage_ratio": {c: b / source_bytes for c, b in sorted(build["config_bytes"].items())},
        "baseline_storage_ratio": plain["published_bytes"] / source_bytes,
    }


def format_table(result: dict[str, Any]) -> str:
    load = result["load_average"]
    lines = [
        f"{result['images']} grey 128 px PNGs ({result['source_png_bytes'] / 1e6:.1f} MB), "
        f"build workers: {result['workers']}, medians of {result['repeat']} alternated runs, "
        f"load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after "
        f"({os.cpu_count()} CPUs)",
        f"{'':16} {'seconds':>8} {'CPU s':>7} {'images/s':>9} {'peak RSS MB':>12} {'published MB':>13}",
        "(peak RSS: all processes of the run together, sampled every 0.1 s)",
    ]
    for name in ("plain datasets", "gmaivl build", "QC floor"):
        r = result[name]
        lines.append(
            f"{name:16} {r['seconds']:8.2f} {r['cpu_seconds']:7.2f} {r['images_per_s']:9.0f} "
            f"{r['peak_tree_rss_mb']:12.0f} {r['published_bytes'] / 1e6:13.1f}"
        )
    lines.append(
        f"time ratio (build / plain datasets): {result['time_ratio']:.2f}x "
        f"(CPU time {result['cpu_ratio']:.2f}x)"
    )
    lines.append(
        f"QC floor / plain datasets: {result['floor_ratio']:.2f}x (decode + md5 + pHash per image, "
        "one process: what any build with perceptual dedup does before writing a byte)"
    )
    ratios = ", ".join(f"{c} {v:.2f}x" for c, v in result["storage_ratio"].items())
    lines.append(
        f"published bytes / source bytes per config: {ratios} (plain {result['baseline_storage_ratio']:.2f}x)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="number of images (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="build processes (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images (default: %(default)s)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternated runs of each (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, folder, out, workers = args.child
        _child(kind, folder, out, int(workers))
        return
    result = compare(args.images, args.workers, args.seed, repeat=args.repeat)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
