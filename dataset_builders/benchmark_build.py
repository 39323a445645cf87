"""Benchmark of the build: throughput (1 vs 2 worker processes) and memory flatness as rows grow.

Inputs are DICOM and NIfTI files derived from the real files of pydicom (`CT_small.dcm`) and nibabel
(`anatomical.nii`): each copy gets its own pixel noise so no QC step removes it. Every measurement
runs the full build (ingest -> templates -> QC -> Parquet) in a fresh child process, which reports its
wall time and peak resident memory (its own and its worker processes').

    python -m gmaivl.dataset_builders.benchmark_build --dicom 200 --nifti 8 --sizes 1 2 4

Baseline named in the output: the 1-process build of the same inputs.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def make_inputs(folder: Path, dicom: int, nifti: int, seed: int = 0) -> Path:
    """Write `dicom` CT files and `nifti` MR volumes (+ label volumes) and a build spec."""
    import nibabel as nib
    import pydicom

    from .demo import package_files

    files = package_files()
    rng = np.random.default_rng(seed)
    base = pydicom.dcmread(files["CT_small.dcm"])
    pixels = base.pixel_array.astype(np.int16)
    (folder / "ct").mkdir(parents=True, exist_ok=True)
    for i in range(dicom):
        ds = base.copy()
        noisy = pixels + rng.integers(-40, 40, pixels.shape).astype(np.int16)
        ds.PixelData = np.roll(noisy, i % 97, axis=1).astype(np.int16).tobytes()
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(folder / "ct" / f"ct_{i:05d}.dcm")
    image = nib.load(str(files["anatomical.nii"]))
    data = np.asarray(image.dataobj, dtype=np.float32)
    labels = (data > np.percentile(data, 70)).astype(np.uint8)
    (folder / "mr" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "mr" / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(nifti):
        # a different shift per volume keeps every slice distinct for the perceptual-hash dedup
        shift = (3 * i % data.shape[0], 5 * i % data.shape[1])
        noisy = data + rng.normal(0, data.std() * 0.05, data.shape).astype(np.float32)
        noisy = np.roll(noisy, shift, axis=(0, 1))
        nib.save(nib.Nifti1Image(noisy, image.affine), str(folder / "mr" / "images" / f"mr_{i:04d}.nii.gz"))
        nib.save(
            nib.Nifti1Image(np.roll(labels, shift, axis=(0, 1)), image.affine),
            str(folder / "mr" / "labels" / f"mr_{i:04d}.nii.gz"),
        )
    spec = {
        "name": "benchmark",
        "sources": [
            {
                "name": "bench-ct",
                "type": "dicom",
                "root": "ct",
                "modality": "CT",
                "department": "Oncology (Medical)",
                "label": "no abnormality",
                "unit_size": 16,
                "min_side": 224,
            },
            {
                "name": "bench-mr",
                "type": "nifti",
                "root": "mr",
                "images_dir": "images",
                "labels_dir": "labels",
                "modality": "MR",
                "department": "Neurology",
                "clinical_task": "Organ Recognition - Head and Neck",
                "mask": {"values": {1: "brain tissue"}, "min_area": 9, "max_per_label": 2},
                "min_side": 224,
            },
        ],
        "generation": {"backend": "templates"},
        "qc": {"min_image_side": 64},
        "publish": {"max_shard_size": "64MB"},
    }
    path = folder / "build.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _child(spec: str, out: str, workers: int) -> None:
    from .engine import run_build

    started = time.perf_counter()
    report = run_build(spec, out, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": report.rows_total,
                "records": report.records_kept,
                "dropped": report.dropped_qc,
                "seconds": seconds,
                "peak_rss_mb": own,
                "peak_child_rss_mb": children,
            }
        )
    )


def measure(spec: Path, workers: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="gmaivl-bench-out-"))
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gmaivl.dataset_builders.benchmark_build",
                "--child",
                str(spec),
                str(out),
                str(workers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dicom", type=int, default=120, help="DICOM files at size 1")
    parser.add_argument("--nifti", type=int, default=4, help="NIfTI volumes at size 1")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1, 2, 4], help="corpus multipliers for the memory sweep"
    )
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    root = Path(tempfile.mkdtemp(prefix="gmaivl-bench-"))
    try:
        print(
            f"memory sweep (1 process): corpus x{args.sizes}, {args.dicom} DICOM + {args.nifti} NIfTI per unit of size"
        )
        print(f"{'size':>5} {'rows':>7} {'rows/s':>8} {'peak RSS MB':>12}  QC drops")
        sweep = []
        for size in args.sizes:
            spec = make_inputs(root / f"x{size}", args.dicom * size, args.nifti * size)
            result = measure(spec, 1)
            sweep.append(result)
            rate = result["rows"] / result["seconds"]
            print(
                f"{size:>5} {result['rows']:>7} {rate:>8.1f} {result['peak_rss_mb']:>12.0f}  {result['dropped']}"
            )
        growth = sweep[-1]["peak_rss_mb"] / sweep[0]["peak_rss_mb"]
        print(f"rows grew x{sweep[-1]['rows'] / sweep[0]['rows']:.1f}; peak RSS grew x{growth:.2f}")
        spec = root / f"x{args.sizes[-1]}" / "build.yaml"
        print("\nthroughput on the largest corpus (DICOM/NIfTI -> Parquet, full build)")
        base = sweep[-1]
        two = measure(spec, 2)
        print(
            f"  1 process (baseline): {base['rows'] / base['seconds']:.1f} rows/s ({base['seconds']:.1f} s)"
        )
        print(
            f"  2 processes:          {two['rows'] / two['seconds']:.1f} rows/s ({two['seconds']:.1f} s), peak worker RSS {two['peak_child_rss_mb']:.0f} MB"
        )
        print(f"  speed-up vs 1 process: x{base['seconds'] / two['seconds']:.2f}")
        assert two["rows"] == base["rows"], "1- and 2-process builds published different row counts"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
