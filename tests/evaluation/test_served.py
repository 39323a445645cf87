"""`gmaivl eval --endpoint`: a fake OpenAI-compatible server on 127.0.0.1, started here, that
misbehaves on purpose (429, 500, malformed bodies, timeouts) and, for the parity test, serves the
tiny GMAI-VL itself."""

import base64
import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from gmaivl.app.cli import main
from gmaivl.evaluation.loaders import load_vlmevalkit_tsv
from gmaivl.evaluation.runner import GenerationFailedError, _generate, run_benchmark
from gmaivl.evaluation.served import ServedModel, run_served_benchmark

BUDGET = {"mcq": 4, "closed": 4, "open": 4, "report": 4}


class FakeServer:
    """`script` is a list of behaviours taken one per request ("429", "500", "malformed",
    "timeout"); when it is empty, `answer(body)` gives the reply text."""

    def __init__(self, answer, script=()):
        self.answer, self.script, self.bodies = answer, list(script), []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.bodies.append(body)
                    action = fake.script.pop(0) if fake.script else "ok"
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if action.startswith("429"):
                        after = action.partition(":")[2] or "0"
                        self._send(429, b'{"error": "rate limited"}', {"Retry-After": after})
                    elif action == "400":
                        self._send(400, b'{"error": "unknown model"}')
                    elif action == "500":
                        self._send(500, b"internal error")
                    elif action == "malformed":
                        self._send(200, b'{"choices": []}')
                    elif action == "timeout":
                        time.sleep(0.6)
                        self._send(200, b"{}")
                    else:
                        text = fake.answer(body)
                        payload = {"choices": [{"message": {"role": "assistant", "content": text}}]}
                        self._send(200, json.dumps(payload).encode())
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def _send(self, code, data, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def samples(bench_tsv):
    return load_vlmevalkit_tsv(bench_tsv)


def _client(url, **kw):
    return ServedModel(url, "gmai-vl-7b", backoff=0.01, timeout=kw.pop("timeout", 5.0), **kw)


def test_requests_carry_the_prompt_and_inline_images(samples, tmp_path):
    with FakeServer(lambda body: "B") as server:
        result = run_served_benchmark(
            _client(server.url, concurrency=3), samples[:6], tmp_path / "p.jsonl", benchmark="b",
            max_new_tokens=BUDGET, progress=False,
        )  # fmt: skip
    body = server.bodies[0]
    assert body["model"] == "gmai-vl-7b" and body["temperature"] == 0 and body["max_tokens"] == 4
    image_part, text_part = body["messages"][0]["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == samples[0].load_images()[0].size
    assert text_part["text"].startswith("Question: ") and "Options:\nA. " in text_part["text"]
    assert result["n"] == 6 and 1 <= server.max_in_flight <= 3


def test_retries_429_500_malformed_and_timeouts(samples, tmp_path):
    script = ["429", "500", "malformed", "timeout"]
    with FakeServer(lambda body: "The answer is B.", script) as server:
        result = run_served_benchmark(
            _client(server.url, concurrency=1, max_retries=4, timeout=0.3), samples[:2], tmp_path / "p.jsonl",
            benchmark="b", max_new_tokens=BUDGET, progress=False,
        )  # fmt: skip
    assert len(server.bodies) == 2 + len(script)  # every failure retried, then both answered
    recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()[1:]]
    assert [r["extracted"] for r in recs] == [["B"], ["B"]] and result["n"] == 2


def test_retries_run_out_then_a_rerun_resumes(samples, tmp_path):
    path = tmp_path / "p.jsonl"
    # the first question's request fails three times (max_retries=2): it gets no prediction
    failing = FakeServer(lambda body: "B", ["500", "500", "500"])
    with (
        failing as server,
        pytest.raises(GenerationFailedError, match=r"1 question\(s\) got no reply.*HTTP 500"),
    ):
        run_served_benchmark(
            _client(server.url, concurrency=1, max_retries=2), samples[:3], path, benchmark="b",
            max_new_tokens=BUDGET, progress=False,
        )  # fmt: skip
    assert len(path.read_text().splitlines()) == 1 + 2  # header + the two that succeeded
    with FakeServer(lambda body: "C") as server:
        result = run_served_benchmark(
            _client(server.url), samples[:3], path, benchmark="b", max_new_tokens=BUDGET, progress=False
        )
    assert len(server.bodies) == 1 and result["n"] == 3  # only the missing question was asked


def test_client_errors_are_not_retried(samples):
    with FakeServer(lambda body: "B", ["400"]) as server:
        served = _client(server.url, max_retries=3)
        out = served.generate(samples[:1], BUDGET)
    assert out == [None] and len(server.bodies) == 1
    assert "question 0: HTTP 400" in served.errors[0]


def test_served_tiny_model_gives_the_in_process_predictions(tiny_shared, samples, tmp_path):
    """The fake serves the tiny GMAI-VL (chat template, processor, greedy generate): the served
    path must produce exactly the in-process predictions."""
    model, processor = tiny_shared
    lock = threading.Lock()

    def answer(body):
        messages, images = [], []
        for m in body["messages"]:
            content = []
            for part in m["content"]:
                if part["type"] == "image_url":
                    data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                    content.append({"type": "image"})
                else:
                    content.append({"type": "text", "text": part["text"]})
            messages.append({"role": m["role"], "content": content})
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        with lock:
            return _generate(model, processor, [prompt], images, body["max_tokens"], {})[0]

    subset = samples[:8]
    local = run_benchmark(
        model, processor, subset, tmp_path / "local.jsonl", benchmark="b", batch_size=1,
        max_new_tokens=BUDGET, progress=False,
    )  # fmt: skip
    tsv = tmp_path / "b.tsv"
    import pandas as pd

    pd.read_csv(subset[0].images[0].source, sep="\t", dtype=str, keep_default_na=False).head(8).to_csv(
        tsv, sep="\t", index=False
    )
    with FakeServer(answer) as server:
        args = ["eval", "--endpoint", server.url, "--served-model", "tiny", "--benchmark", str(tsv),
                "--out", str(tmp_path / "out"), "--benchmark-name", "b", "--max-new-tokens",
                "mcq=4,closed=4,open=4,report=4", "--concurrency", "2", "--quiet"]  # fmt: skip
        assert main(args) == 0

    def preds(p):
        return {json.loads(x)["index"]: json.loads(x)["prediction"] for x in p.read_text().splitlines()[1:]}

    served = preds(tmp_path / "out" / "b" / "predictions.jsonl")
    assert served == preds(tmp_path / "local.jsonl")
    result = json.loads((tmp_path / "out" / "b" / "results.json").read_text())
    assert result["metrics"] == local["metrics"]


def test_429_waits_what_retry_after_says(samples, monkeypatch):
    import gmaivl.core.openai_chat as client_module

    waits = []
    monkeypatch.setattr(client_module.time, "sleep", waits.append)
    with FakeServer(lambda body: "B", ["429:7", "500"]) as server:
        served = ServedModel(server.url, "m", backoff=0.5, max_backoff=60)
        assert served.generate(samples[:1], BUDGET) == ["B"]
    assert waits == [7.0, 0.5 * 2]  # Retry-After honoured, then exponential backoff (attempt 1)


def test_eval_needs_a_model_or_an_endpoint(bench_tsv):
    with pytest.raises(ValueError, match="needs --model .* or --endpoint"):
        main(["eval", "--benchmark", str(bench_tsv)])
    with pytest.raises(ValueError, match="--endpoint needs --served-model"):
        main(["eval", "--endpoint", "http://127.0.0.1:9/v1", "--benchmark", str(bench_tsv)])


def test_a_bad_endpoint_is_refused_without_echoing_its_credentials(bench_tsv, tmp_path):
    argv = ["eval", "--endpoint", "ftp://admin:pw-123@h/v1", "--served-model", "m"]
    with pytest.raises(ValueError, match=r"http:// or https:// URL, got 'ftp://h/v1'") as info:
        main([*argv, "--benchmark", str(bench_tsv), "--output-dir", str(tmp_path)])
    assert "pw-123" not in str(info.value) and not any(tmp_path.iterdir())
