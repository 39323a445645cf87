"""`gmaivl model demo`, the README's main job, end to end through the console command (a fresh
process, as a user runs it: the command line does not register the auto classes on import)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_answers_saves_and_reloads_identically(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "gmaivl", "model", "demo", "--output-dir", str(out), "--window", "40,400"]
    proc = subprocess.run([*cmd, "--max-new-tokens", "4"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["reload_identical"] is True
    assert summary["image_tokens"] == 576  # CLIP ViT-L/14 at 336 px, CLS dropped
    assert summary["window"] == [40.0, 400.0]
    assert "PatientName" not in summary["dicom_fields_used"]
    assert {"config.json", "model.safetensors", "modeling_gmaivl.py", "processor_config.json"} <= set(
        summary["saved_files"]
    )
    assert not list(out.glob("*.bin"))  # safetensors only
