"""LLM-backed generation against a local fake OpenAI-compatible endpoint, and a tiny local model."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from datasets import load_dataset
from PIL import Image

from gmaivl.dataset_builders import iter_records
from gmaivl.dataset_builders.engine import run_build
from gmaivl.dataset_builders.generate import RowGenerator
from gmaivl.dataset_builders.llm import LLMClient, LLMError, ReplyCache, TransformersBackend, extract_json

MAX_REQUESTS = 3000


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers like a chat model, by prompt type; some prompts get non-JSON replies on purpose."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.requests += 1
            count = server.requests
        if count > MAX_REQUESTS or self.path != "/v1/chat/completions":
            self.send_response(503)
            self.end_headers()
            return
        user = body["messages"][-1]["content"]
        text = user if isinstance(user, str) else next(c["text"] for c in user if c["type"] == "text")
        has_image = not isinstance(user, str) and any(
            c["type"] == "image_url" and c["image_url"]["url"].startswith("data:image/png;base64,")
            for c in user
        )
        with server.lock:
            server.seen[text] = server.seen.get(text, 0) + 1
            attempt = server.seen[text]
            server.images += int(has_image)
        reply = self.reply(text, attempt)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    @staticmethod
    def reply(text: str, attempt: int) -> str:
        label = re.search(r"annotated label: (.*)", text)
        label = label.group(1).strip() if label else ""
        if text.startswith("Score the quality"):
            score = 4 if "Label: no abnormality" in text else 2
            return json.dumps({"score": str(score), "comments": "checked"})
        if text.startswith("Translate"):
            turns = json.loads(text.splitlines()[1])
            return (
                "```json\n"
                + json.dumps(
                    {
                        "messages": [
                            {"role": t["role"], "content": "中文翻译：" + t["content"]} for t in turns
                        ]
                    },
                    ensure_ascii=False,
                )
                + "\n```"
            )
        if label == "microaneurysm" and "description" in text:
            return "I am sorry, I cannot produce JSON today."  # always invalid
        if label == "diabetic retinopathy" and attempt == 1:
            return "Here is the caption: {caption: unquoted"  # invalid once, then fine
        if "question-answer pairs" in text:
            return json.dumps(
                {
                    "pairs": [
                        {
                            "question": f"What suggests {label}?",
                            "answer": f"The visible pattern is typical of {label}.",
                        },
                        {"question": "Where is it?", "answer": "Mostly in the centre of the image."},
                    ]
                }
            )
        if "boxed region" in text:
            return json.dumps(
                {
                    "caption": f"This region shows a well defined {label} with sharp borders against the surrounding background."
                }
            )
        return json.dumps(
            {
                "caption": f"The image shows features consistent with {label}, with even illumination and clear structures."
            }
        )


@pytest.fixture()
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.lock = threading.Lock()
    server.requests = 0
    server.images = 0
    server.seen = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def llm_spec(demo_spec, tmp_path, port) -> str:
    demo = yaml.safe_load(demo_spec.read_text())
    keep = {"demo-fundus", "demo-cells", "demo-ct"}
    sources = []
    for source in demo["sources"]:
        if source["name"] in keep:
            sources.append({**source, "root": str(demo_spec.parent / source["root"])})
    spec = {
        "name": "llm-demo",
        "seed": 0,
        "sources": sources,
        "generation": {
            "backend": "openai",
            "openai": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "fake-medical", "timeout": 10},
            "translate_fraction": 0.3,
            "max_attempts": 2,
            "judge": {"samples": 30, "threshold": 3.0},
        },
        "qc": {"min_image_side": 64},
        "publish": {"row_group_rows": 8},
    }
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_llm_generation_translation_judge_and_cache(demo_spec, tmp_path, fake_server):
    spec = llm_spec(demo_spec, tmp_path, fake_server.server_address[1])
    out = tmp_path / "out"
    report = run_build(spec, out, progress=False)
    assert fake_server.images > 0  # captions and QA see the image

    captions = load_dataset(str(out), "caption", split="train")
    english = [r for r in captions if r["language"] == "en"]
    assert english and all(r["generator"].startswith("llm:openai:") for r in english)
    regions = [r for r in english if r["bbox"] is not None]
    assert regions and all(r["messages"][1]["content"].startswith("This region") for r in regions)
    # microaneurysm captions never got valid JSON: counted, named, and the rest of the build went on
    errors = [e for e in report["errors"]["items"] if e["kind"] == "llm_invalid_reply"]
    micro = {r.record_id for r in iter_records(out) if r.label == "microaneurysm"}
    assert errors and {e["item"] for e in errors} <= micro
    assert report["errors"]["by_kind"]["llm_invalid_reply"] == len(errors)
    assert "microaneurysm" not in {r["label"] for r in english}
    assert report["llm"]["invalid_replies"] >= len(errors) * 2 + 1  # DR captions were retried once

    # translation: exactly the rows chosen by the deterministic ~30% rule, in Chinese
    instruct = load_dataset(str(out), "instruct", split="train")
    chooser = RowGenerator({"translate_fraction": 0.3}, seed=0)
    english_ids = {r["row_id"] for ds in (captions, instruct) for r in ds if r["language"] == "en"}
    zh = [r for ds in (captions, instruct) for r in ds if r["language"] == "zh"]
    assert zh and all("中文翻译" in m["content"] for r in zh for m in r["messages"])
    assert {r["row_id"][:-3] for r in zh} == {i for i in english_ids if chooser._selected_for_translation(i)}
    assert 0.1 < len(zh) / len(english_ids) < 0.6
    assert len(instruct[0]["messages"]) == 4  # two generated QA pairs -> two turns each

    # judge: the CT source scores 4 > 3 and is dropped from the judged configs; others accepted
    assert report["judge"]["demo-ct"]["accepted"] is False and report["judge"]["demo-ct"]["mean_score"] == 4.0
    assert report["judge"]["demo-fundus"]["accepted"] is True
    assert report["judge"]["demo-fundus"]["scored"] == min(30, report["judge"]["demo-fundus"]["sampled"])
    assert "demo-ct" not in set(captions["source_dataset"])
    assert "demo-ct" in set(load_dataset(str(out), "percept", split="train")["source_dataset"])

    # resume after losing every unit shard: the reply cache answers every validated reply; the
    # rejected ones (never cached) are asked again, so a fixed server would now be heard
    paid = fake_server.requests
    import shutil

    shutil.rmtree(out / "_work" / "units")
    again = run_build(spec, out, progress=False)
    assert fake_server.requests - paid == 2 * len(errors)  # max_attempts = 2 per rejected caption
    assert again["rows"] == report["rows"]
    assert again["llm"]["calls"] == 2 * len(errors) and again["llm"]["cache_hits"] > 0


def test_extract_json_tolerates_fences_and_prose():
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Sure! {"pairs": [{"question": "q", "answer": "a"}]} Hope it helps') == {
        "pairs": [{"question": "q", "answer": "a"}]
    }
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_local_transformers_backend_with_tiny_model(tmp_path):
    from gmaivl.core.tiny import build_tiny_gmaivl

    model, processor = build_tiny_gmaivl()
    backend = TransformersBackend(model, processor, max_new_tokens=6, name="tiny")
    image = Image.new("RGB", (56, 56), "gray")
    first = backend.complete("system", "Describe the image.", [image])
    assert isinstance(first, str) and first == backend.complete("system", "Describe the image.", [image])
    client = LLMClient(backend, ReplyCache(tmp_path / "cache.sqlite"), max_attempts=2)
    # a random tiny model does not write JSON: a bounded number of attempts, then a clear error
    with pytest.raises(LLMError, match="no valid JSON reply after 2 attempts"):
        client.request_json("caption", "Describe the image.", [image], validate=lambda d: d["caption"])
    assert client.calls == 2 and client.invalid_replies == 2
    # rejected replies are not cached: the next run asks again
    replay = LLMClient(backend, ReplyCache(tmp_path / "cache.sqlite"), max_attempts=2)
    with pytest.raises(LLMError):
        replay.request_json("caption", "Describe the image.", [image], validate=lambda d: d["caption"])
    assert replay.calls == 2 and replay.cache_hits == 0 and len(ReplyCache(tmp_path / "cache.sqlite")) == 0


class ScriptedBackend:
    """Replies from a script; an Exception instance in the script is raised instead."""

    identity = "scripted"

    def __init__(self, script, default: str | None = '{"caption": "A clear image of the chest."}'):
        self.script = list(script)
        self.default = default
        self.calls = 0

    def complete(self, system, prompt, images):
        self.calls += 1
        if self.script:
            reply = self.script.pop(0)
        else:  # like the fake server when no default is given
            reply = self.default if self.default is not None else FakeOpenAI.reply(prompt, 2)
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.mark.parametrize(
    "token", ["<|im_end|>", "<image>", "</s>", "[INST]", "<|eot_id|>", "<start_of_turn>"]
)
def test_replies_with_special_tokens_are_rejected_and_not_cached(tmp_path, token):
    bad = json.dumps({"caption": f"A clear image of the chest.{token}"})
    backend = ScriptedBackend([bad])
    client = LLMClient(backend, ReplyCache(tmp_path / "c.sqlite"), max_attempts=2)
    caption = client.request_json("caption", "p", validate=lambda d: d["caption"])
    assert caption == "A clear image of the chest." and client.invalid_replies == 1 and client.calls == 2
    cache = ReplyCache(tmp_path / "c.sqlite")
    assert len(cache) == 1
    # the next run replays the validated reply only
    replay = LLMClient(ScriptedBackend([bad]), cache, max_attempts=2)
    assert replay.request_json("caption", "p", validate=lambda d: d["caption"]) == caption
    assert replay.calls == 0 and replay.cache_hits == 1


class RateLimitedServer(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.hits += 1
        if self.server.hits <= 2:
            self.send_response(429)
            self.send_header("Retry-After", "7")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps(
            {"choices": [{"message": {"content": '{"caption": "A clear chest film."}'}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_429_waits_as_long_as_retry_after_says(monkeypatch):
    from gmaivl.dataset_builders import llm
    from gmaivl.dataset_builders.llm import OpenAIBackend

    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimitedServer)
    server.hits = 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    sleeps = []
    monkeypatch.setattr(llm.time, "sleep", sleeps.append)
    try:
        backend = OpenAIBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", timeout=5)
        client = LLMClient(backend, None, max_attempts=1, backoff=0.01)
        assert client.request_json("caption", "p", validate=lambda d: d["caption"]) == "A clear chest film."
    finally:
        server.shutdown()
        server.server_close()
    assert sleeps == [7.0, 7.0] and client.rate_limited == 2 and server.hits == 3


def test_circuit_breaker_stops_the_build_and_keeps_finished_units(demo_spec, tmp_path, cli_exit):
    """The server goes down mid-build: one clear error, finished units kept, the rerun resumes."""
    import socket

    demo = yaml.safe_load(demo_spec.read_text())
    sources = [
        {**s, "root": str(demo_spec.parent / s["root"]), "unit_size": 2}
        for s in demo["sources"]
        if s["name"] == "demo-fundus"
    ]
    spec = tmp_path / "s.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "b", "sources": sources, "generation": {"configs": ["caption"], "translate_fraction": 0}}
        )
    )
    good = json.dumps({"caption": "The image shows a retina with clear vessels and an even background."})
    backend = ScriptedBackend([good] * 4 + [ConnectionError("connection refused")] * 10, default=None)

    def factory(out):
        return LLMClient(backend, ReplyCache(out / "_work" / "c.sqlite"), backoff=0.0, breaker_failures=3)

    out = tmp_path / "out"
    with pytest.raises(
        LLMError,
        match=r"failed 3 times in a row \(ConnectionError: connection refused\); task 0 stopped after 2 of 5",
    ):
        run_build(spec, out, client_factory=factory, progress=False)
    assert backend.calls == 4 + 3  # no unit after the breaker opened asked again
    done = sorted(p.name for p in (out / "_work" / "units").iterdir() if not p.name.startswith("."))
    assert len(done) == 2
    backend.script = []  # the server is back
    report = run_build(spec, out, client_factory=factory, progress=False)
    assert report.ingest["skipped"] == 2 and report.ingest["processed"] == 3 and report.usable
    # from the command line, a dead server is one line and exit status 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generation = {
        "backend": "openai",
        "openai": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "timeout": 2},
        "backoff": 0.0,
        "breaker_failures": 2,
    }
    spec.write_text(yaml.safe_dump({"name": "b", "sources": sources, "generation": generation}))
    code, line = cli_exit(["data", "build", "--spec", str(spec), "--out", str(tmp_path / "dead"), "--quiet"])
    assert code == 2 and line.startswith("gmaivl: error: LLM backend http://127.0.0.1") and "in a row" in line
