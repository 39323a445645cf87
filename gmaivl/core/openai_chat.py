"""The one client for OpenAI-compatible `/chat/completions` endpoints (vLLM, SGLang, TGI, llama.cpp,
hosted APIs), used by the dataset builders' LLM backend, the evaluator's judge and served-model
evaluation.

It is `httpx` rather than `huggingface_hub.InferenceClient`: InferenceClient speaks this protocol
but hides the HTTP status and the `Retry-After` header, which the callers need to wait as long as
a busy server asks and to tell a busy server from a broken request.

`EndpointConfig` is the one owner of the connection settings (URL, model, key, timeout, retries,
connections) and their checks; the three callers take one, or build one from a URL and model.
One API-key convention: an explicit key, else the environment variable named by `api_key_env`
(`OPENAI_API_KEY` by default), else no `Authorization` header (local servers need none).
Messages and identities show the URL without its `user:password@` part (`redact_url`).
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import io
import math
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from PIL import Image


class ChatRequestError(RuntimeError):
    """A request failed for good: retries ran out, or a client error the server would repeat."""


class RateLimited(ChatRequestError):
    """HTTP 429 / 503: the server is up but busy; `retry_after` seconds as it asked (None if not)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status} (Retry-After: {retry_after})")
        self.status = status
        self.retry_after = retry_after


def image_data_url(image: Image.Image) -> str:
    """A PNG data URL (lossless: the server sees the pixels an in-process model sees)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def message_text(body: Any) -> str | None:
    """The first choice's message text of a chat completion body, or None for anything else."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if content is None:
        return ""
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


def _split_userinfo(url: str) -> tuple[str, str, str]:
    """(`scheme://`, `user:password@` or "", the rest) of a URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    cut = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    at = rest.rfind("@", 0, cut) + 1
    return scheme + sep, rest[:at], rest[at:]


def redact_url(url: str) -> str:
    """`url` without the `user:password@` userinfo of its authority, for messages and identities."""
    head, _, rest = _split_userinfo(url)
    return head + rest


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach one model on an OpenAI-compatible endpoint, checked on creation.

    Its `repr` shows neither `api_key` nor the URL's userinfo (`shown_url`: the URL without them).
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    max_connections: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str):
            raise ValueError(f"endpoint base_url must be a string, got {type(self.base_url).__name__}")
        base_url = self.base_url.strip().rstrip("/")
        shown = redact_url(base_url)
        try:
            parts = urllib.parse.urlsplit(base_url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(
                "endpoint base_url has an invalid host or port (percent-encode '/', '?', '#' or '@' "
                "in a user name or password)"
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint base_url must be an http:// or https:// URL, got {shown!r}")
        object.__setattr__(self, "base_url", base_url)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"endpoint model must be a non-empty name, got {self.model!r} ({shown})")
        for name in ("timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"endpoint {name} must be a number of seconds, got {value!r}")
            if value < 0 or (name == "timeout" and value == 0):
                bound = "positive" if name == "timeout" else "at least 0"
                raise ValueError(f"endpoint {name} must be {bound}, got {value!r}")
        for name, least in (("max_retries", 0), ("max_connections", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"endpoint {name} must be an integer of at least {least}, got {value!r}")
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("endpoint api_key must be a string")
        if self.api_key_env is not None and not isinstance(self.api_key_env, str):
            raise ValueError(f"endpoint api_key_env must be a variable name, got {self.api_key_env!r}")

    @classmethod
    def of(cls, endpoint: EndpointConfig | str, model: str | None = None, **settings: Any) -> EndpointConfig:
        """`endpoint` with `settings` replaced, or a new config from a base URL, model and settings."""
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"unknown endpoint setting(s) {', '.join(unknown)} (known: {known})")
        if isinstance(endpoint, EndpointConfig):
            if model is not None:
                settings["model"] = model
            return dataclasses.replace(endpoint, **settings) if settings else endpoint
        if model is None:
            raise ValueError(f"endpoint {redact_url(str(endpoint))!r} needs a model name")
        return cls(endpoint, model, **settings)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["base_url"] = self.shown_url
        return f"EndpointConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def url(self) -> str:
        """The chat completions URL requests go to."""
        return self.base_url + "/chat/completions"

    @property
    def shown_url(self) -> str:
        """`base_url` without credentials: the one to put in messages, logs and identities."""
        return redact_url(self.base_url)

    def resolve_api_key(self) -> str | None:
        """The explicit key, else the one in the environment variable `api_key_env`, else None."""
        return self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None) or None

    def connect(self, client: Any = None) -> ChatEndpoint:
        """A `ChatEndpoint` for this config (`client`: an httpx-like client to use instead)."""
        return ChatEndpoint(self, client=client)


class ChatEndpoint:
    """`complete(messages, **params)` against one endpoint and model, with bounded retries.

    Timeouts, connection failures, HTTP 429 / 5xx and malformed bodies are retried with
    exponential backoff (a `Retry-After` wins); other 4xx fail at once. `max_retries=0` hands every
    failure to the caller (`RateLimited` for 429/503), for callers with their own policy.
    Takes an `EndpointConfig`, or a base URL, model and its settings.
    """

    def __init__(
        self, endpoint: EndpointConfig | str, model: str | None = None, *, client: Any = None, **settings: Any
    ) -> None:
        import httpx

        self.config = config = EndpointConfig.of(endpoint, model, **settings)
        self.base_url, self.url, self.model = config.base_url, config.url, config.model
        self.shown_url = redact_url(self.url)
        self.max_retries = config.max_retries
        self.backoff, self.max_backoff = config.backoff, config.max_backoff
        key = config.resolve_api_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # what a message must never echo (a server's error body may): the userinfo (httpx sends it
        # as basic auth), the password and the key
        userinfo = _split_userinfo(config.base_url)[1].rstrip("@")
        basic = base64.b64encode(urllib.parse.unquote(userinfo).encode()).decode() if userinfo else ""
        self._secrets = [x for x in (userinfo, basic, userinfo.partition(":")[2], key) if x]
        self.client = client or httpx.Client(
            timeout=config.timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=config.max_connections),
        )

    def complete(self, messages: list[dict[str, Any]], *, where: str = "request", **params: Any) -> str:
        """The reply text; `params` (temperature, max_tokens, response_format...) go into the body."""
        import httpx

        body = {"model": self.model, "messages": messages, **params}
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                if not self.max_retries:
                    raise
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                if not self.max_retries:
                    raise
                problem = f"connection failed ({exc})"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    after = retry_after_seconds(resp.headers.get("retry-after"))
                    if not self.max_retries and resp.status_code in (429, 503):
                        raise RateLimited(resp.status_code, after)
                    problem = f"HTTP {resp.status_code}"
                    if after is not None:
                        wait = min(self.max_backoff, after)
                elif resp.status_code >= 400:
                    raise ChatRequestError(
                        self._scrub(
                            f"{where}: HTTP {resp.status_code} from {self.shown_url}: {resp.text[:200]}"
                        )
                    )
                else:
                    try:
                        text = message_text(resp.json())
                    except ValueError:
                        text = None
                    if text is not None:
                        return text
                    problem = f"malformed reply body: {resp.text[:120]!r}"
            if attempt < self.max_retries:
                time.sleep(wait)
        raise ChatRequestError(
            self._scrub(f"{where}: {problem} after {self.max_retries + 1} attempt(s) to {self.shown_url}")
        )

    def _scrub(self, message: str) -> str:
        """`message` with the URL's userinfo and the API key masked."""
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message
