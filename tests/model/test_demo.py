"""`gmaivl demo`, the README's main job, end to end through the command line."""

from __future__ import annotations

import json

from gmaivl.cli import main


def test_demo_answers_saves_and_reloads_identically(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--window", "40,400", "--max-new-tokens", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reload_identical"] is True
    assert summary["image_tokens"] == 576  # CLIP ViT-L/14 at 336 px, CLS dropped
    assert summary["window"] == [40.0, 400.0]
    assert "PatientName" not in summary["dicom_fields_used"]
    assert {"config.json", "model.safetensors", "modeling_gmaivl.py", "processor_config.json"} <= set(
        summary["saved_files"]
    )
    assert not list(out.glob("*.bin"))  # safetensors only
