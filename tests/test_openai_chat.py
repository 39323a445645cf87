"""`EndpointConfig`: the one owner of the endpoint settings that the served-model backend, the LLM
judge and the dataset builders' OpenAI backend are built from; its checks; no echoed credentials."""

import contextlib
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gmaivl.core.openai_chat import ChatEndpoint, ChatRequestError, EndpointConfig, redact_url
from gmaivl.dataset_builders.llm import BackendUnavailable, LLMClient, OpenAIBackend, backend_from_config
from gmaivl.evaluation.extraction import OpenAIJudge
from gmaivl.evaluation.served import ServedModel

SECRET = "s3cr3t-pw"


@contextlib.contextmanager
def fake_server(status=200, reply='{"caption": "A clear chest film of the lungs."}', echo_auth=False):
    """A chat completions server on 127.0.0.1 that records (path, auth, body) per request."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            auth = self.headers.get("Authorization")
            seen.append((self.path, auth, body))
            if status == 200:
                data = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
            else:  # a server that echoes what it was sent, as some do in their errors
                data = json.dumps({"error": f"bad credentials {auth} for {self.path}"}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_one_config_drives_the_served_model_the_judge_and_the_generation_backend(monkeypatch):
    monkeypatch.setenv("GMAIVL_TEST_KEY", "k-123")
    with fake_server(reply="B") as (host, seen):
        config = EndpointConfig(f"http://{host}/v1/", "med-vlm", api_key_env="GMAIVL_TEST_KEY", timeout=5)
        served = ServedModel(config)
        judge = OpenAIJudge(config)
        backend = OpenAIBackend(config, temperature=0.0, max_tokens=16)
        assert served.config is config and judge.config is config
        assert served.complete([{"role": "user", "content": "q"}], max_tokens=4) == "B"
        assert judge("q?", {"A": "x", "B": "y"}, "hmm") == "B"
        assert backend.complete("sys", "p", []) == "B"
    assert [(path, auth, body["model"]) for path, auth, body in seen] == [
        ("/v1/chat/completions", "Bearer k-123", "med-vlm")
    ] * 3
    # each keeps only its own policy: the pool size, and no retries under LLMClient's own
    assert served.concurrency == config.max_connections == 8
    assert backend.config.max_retries == 0 and backend.config.timeout == 5 and config.max_retries == 5
    assert backend.identity == f"openai:http://{host}/v1:med-vlm:0.0:16"
    assert ServedModel(config, concurrency=3).config.max_connections == 3


def test_a_url_with_settings_builds_the_same_config():
    config = EndpointConfig("http://127.0.0.1:9/v1", "m", timeout=7.0, max_retries=2)
    assert ServedModel("http://127.0.0.1:9/v1", "m", timeout=7.0, max_retries=2).config == config
    assert OpenAIJudge("http://127.0.0.1:9/v1", "m", timeout=7.0, max_retries=2).config == config
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "m").config  # the judge's own defaults
    assert (judge.timeout, judge.max_retries) == (60.0, 3)
    assert (
        ChatEndpoint(config).config is config
        and config.connect().url == "http://127.0.0.1:9/v1/chat/completions"
    )
    backend = backend_from_config(
        {"backend": "openai", "openai": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 7.0}}
    )
    assert backend.config == EndpointConfig("http://127.0.0.1:9/v1", "m", timeout=7.0, max_retries=0)


def test_api_key_from_the_key_else_the_named_variable_else_none(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "default-key")
    monkeypatch.setenv("OTHER_KEY", "other-key")
    assert EndpointConfig("http://h/v1", "m").resolve_api_key() == "default-key"
    assert EndpointConfig("http://h/v1", "m", api_key="explicit").resolve_api_key() == "explicit"
    assert EndpointConfig("http://h/v1", "m", api_key_env="OTHER_KEY").resolve_api_key() == "other-key"
    # a named variable that is unset never falls back to OPENAI_API_KEY (another server's key)
    assert EndpointConfig("http://h/v1", "m", api_key_env="UNSET_GMAIVL_KEY").resolve_api_key() is None
    assert EndpointConfig("http://h/v1", "m", api_key_env=None).resolve_api_key() is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"base_url": "ftp://h/v1"}, r"base_url must be an http:// or https:// URL, got 'ftp://h/v1'"),
        ({"base_url": "localhost:8000/v1"}, r"base_url must be an http:// or https:// URL"),
        ({"base_url": "http:///v1"}, r"base_url must be an http:// or https:// URL"),
        ({"base_url": None}, r"base_url must be a string"),
        ({"model": " "}, r"model must be a non-empty name"),
        ({"timeout": 0}, r"timeout must be positive, got 0"),
        ({"timeout": -1.0}, r"timeout must be positive"),
        ({"timeout": math.nan}, r"timeout must be a number of seconds"),
        ({"timeout": "10"}, r"timeout must be a number of seconds, got '10'"),
        ({"backoff": -0.5}, r"backoff must be at least 0"),
        ({"max_retries": -1}, r"max_retries must be an integer of at least 0, got -1"),
        ({"max_retries": 1.5}, r"max_retries must be an integer of at least 0"),
        ({"max_retries": True}, r"max_retries must be an integer"),
        ({"max_connections": 0}, r"max_connections must be an integer of at least 1, got 0"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(settings, message):
    values = {"base_url": "http://127.0.0.1:8000/v1", "model": "m", **settings}
    with pytest.raises(ValueError, match=message):
        EndpointConfig(**values)
    with pytest.raises(ValueError, match=message):  # the same checks behind every user
        ServedModel(values.pop("base_url"), values.pop("model"), **values)


def test_user_errors_of_the_three_users():
    with pytest.raises(ValueError, match="--concurrency must be at least 1, got 0"):
        ServedModel("http://h/v1", "m", concurrency=0)
    with pytest.raises(ValueError, match=r"unknown endpoint setting\(s\) tiemout \(known: base_url, model"):
        OpenAIJudge("http://h/v1", "m", tiemout=3)
    with pytest.raises(ValueError, match="needs a model name"):
        ServedModel("http://h/v1")
    with pytest.raises(
        ValueError, match=r"generation.openai: unknown option\(s\) max_retries .*max_attempts"
    ):
        backend_from_config(
            {"backend": "openai", "openai": {"base_url": "http://h/v1", "model": "m", "max_retries": 3}}
        )


def test_redact_url():
    assert (
        redact_url(f"https://user:{SECRET}@api.example.org:8443/v1?x=1")
        == "https://api.example.org:8443/v1?x=1"
    )
    assert redact_url(f"user:{SECRET}@host/v1") == "host/v1"
    assert redact_url("http://host/v1/a@b") == "http://host/v1/a@b"  # an '@' in the path is no userinfo
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_credentials_are_never_echoed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + SECRET)
    # in the config's checks, its repr and the identities
    with pytest.raises(ValueError) as bad_scheme:
        EndpointConfig(f"ftp://admin:{SECRET}@h/v1", "m")
    with pytest.raises(ValueError) as bad_port:
        EndpointConfig(f"http://admin:{SECRET}/x@h/v1", "m")  # an unencoded '/' in the password
    with pytest.raises(ValueError) as no_model:
        ServedModel(f"http://admin:{SECRET}@h/v1")
    with pytest.raises(ValueError) as bad_model:
        EndpointConfig(f"http://admin:{SECRET}@h/v1", "")
    for error in (bad_scheme, bad_port, no_model, bad_model):
        assert SECRET not in str(error.value) and "admin" not in str(error.value)
    assert "'ftp://h/v1'" in str(bad_scheme.value)
    config = EndpointConfig(f"http://admin:{SECRET}@h/v1", "m", api_key="sk-" + SECRET)
    assert SECRET not in repr(config) and "base_url='http://h/v1'" in repr(config)
    assert config.shown_url == "http://h/v1" and config.base_url == f"http://admin:{SECRET}@h/v1"
    assert OpenAIBackend(config).identity == "openai:http://h/v1:m:0.2:1024"
    # in request errors, even when the server's error body echoes what it was sent
    with fake_server(status=401) as (host, seen):
        with pytest.raises(ChatRequestError) as basic:  # httpx sends the userinfo as basic auth
            ServedModel(f"http://admin:{SECRET}@{host}/v1", "m", max_retries=0).complete([], max_tokens=1)
        with pytest.raises(ChatRequestError) as bearer:
            ServedModel(f"http://{host}/v1", "m", max_retries=0).complete([], max_tokens=1)
    assert [auth.split()[0] for _, auth, _ in seen] == ["Basic", "Bearer"]
    for error in (basic, bearer):
        assert f"from http://{host}/v1/chat/completions: " in str(error.value) and "***" in str(error.value)
        assert SECRET not in str(error.value) and seen[0][1].split()[1] not in str(error.value)
    # in the dataset builders' circuit breaker message when the server is down
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(f"http://admin:{SECRET}@127.0.0.1:{port}/v1", "m", timeout=2)
    client = LLMClient(backend, None, max_attempts=2, backoff=0.0, breaker_failures=2)
    with pytest.raises(BackendUnavailable) as down:
        client.request_json("caption", "p")
    assert SECRET not in str(down.value) and f"LLM backend http://127.0.0.1:{port}/v1 failed" in str(
        down.value
    )
