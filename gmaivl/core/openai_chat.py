"""The one client for OpenAI-compatible `/chat/completions` endpoints (vLLM, SGLang, TGI, llama.cpp,
hosted APIs), used by the dataset builders' LLM backend, the evaluator's judge and served-model
evaluation.

It is `httpx` rather than `huggingface_hub.InferenceClient`: InferenceClient speaks this protocol
but hides the HTTP status and the `Retry-After` header, which the callers need to wait as long as
a busy server asks and to tell a busy server from a broken request.

One API-key convention: an explicit key, else the environment variable named by `api_key_env`
(`OPENAI_API_KEY` by default), else no `Authorization` header (local servers need none).
"""

from __future__ import annotations

import base64
import email.utils
import io
import os
import time
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


class ChatEndpoint:
    """`complete(messages, **params)` against one endpoint and model, with bounded retries.

    Timeouts, connection failures, HTTP 429 / 5xx and malformed bodies are retried with
    exponential backoff (a `Retry-After` wins); other 4xx fail at once. `max_retries=0` hands every
    failure to the caller (`RateLimited` for 429/503), for callers with their own policy.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_connections: int = 8,
        client: Any = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.max_retries = max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = client or httpx.Client(
            timeout=timeout, headers=headers, limits=httpx.Limits(max_connections=max_connections)
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
                        f"{where}: HTTP {resp.status_code} from {self.url}: {resp.text[:200]}"
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
        raise ChatRequestError(f"{where}: {problem} after {self.max_retries + 1} attempt(s) to {self.url}")
