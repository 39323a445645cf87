"""A served model as the evaluator's backend: any OpenAI-compatible chat endpoint.

vLLM, SGLang and TGI serve the LLaVA export of GMAI-VL (and hosted VLMs) behind
`POST {base_url}/chat/completions`. Each question becomes one request with the same user turn
as the in-process path (`prompts.prompt_text`), its images first and inline as PNG data URLs,
greedy decoding (`temperature=0`) and the question type's token budget; replies are read by the
same rules and stored in the same resumable predictions file.

The client is `httpx` rather than `huggingface_hub.InferenceClient`: the evaluator needs the
`Retry-After` header of a 429, a per-request timeout it can tell apart from a server error, and
to retry a 200 whose body is not a chat completion; InferenceClient raises on those without
exposing a retry policy. Requests run in a bounded thread pool (`concurrency`); a request is
retried on 429 (waiting what `Retry-After` says, else exponential backoff), 5xx, timeouts,
connection errors and malformed bodies, up to `max_retries` times; other 4xx are not retried.
A question whose retries run out gets no prediction: the finished ones are saved and a rerun
retries only the rest.
"""

from __future__ import annotations

import base64
import email.utils
import io
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from .extraction import Judge
from .prompts import prompt_text
from .runner import DEFAULT_MAX_NEW_TOKENS, evaluate, protocol_header
from .samples import EvalSample


class ServedModelError(RuntimeError):
    """A request failed for good (retries exhausted, or a client error the server will repeat)."""


def image_data_url(image: Image.Image) -> str:
    """A PNG data URL (lossless, so the server sees the pixels the in-process path sees)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_messages(sample: EvalSample, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages: the images first (inline), then the evaluator's prompt text."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in sample.load_images()
    ]
    content.append({"type": "text", "text": prompt_text(sample)})
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
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


class ServedModel:
    """Chat completions from an OpenAI-compatible endpoint, with retries and bounded concurrency."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 5,
        timeout: float = 120.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        client: Any = None,
    ) -> None:
        import httpx

        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(
            timeout=timeout, headers=headers, limits=httpx.Limits(max_connections=concurrency)
        )
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, Any]], max_tokens: int, where: str = "request") -> str:
        """One chat completion's text; raises `ServedModelError` when retries run out."""
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        problem = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                resp = self.client.post(self.url, json=body)
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"connection failed ({exc})"
            else:
                if resp.status_code == 429 or resp.status_code >= 500:
                    problem = f"HTTP {resp.status_code}"
                    after = _retry_after(resp.headers.get("retry-after"))
                    if after is not None:
                        wait = min(self.max_backoff, after)
                elif resp.status_code >= 400:
                    raise ServedModelError(
                        f"{where}: HTTP {resp.status_code} from {self.url}: {resp.text[:200]}"
                    )
                else:
                    text = _content(resp)
                    if text is not None:
                        return text
                    problem = f"malformed reply body: {resp.text[:120]!r}"
            if attempt < self.max_retries:
                time.sleep(wait)
        raise ServedModelError(f"{where}: {problem} after {self.max_retries + 1} attempt(s) to {self.url}")

    def generate(
        self,
        batch: Sequence[EvalSample],
        budgets: dict[str, int],
        system_prompt: str | None = None,
    ) -> list[str | None]:
        """Replies for a batch, `concurrency` requests at a time; None where a request failed."""

        def one(sample: EvalSample) -> str | None:
            try:
                reply = self.complete(
                    chat_messages(sample, system_prompt),
                    budgets[sample.question_type],
                    where=f"question {sample.index}",
                )
            except ServedModelError as exc:
                with self._lock:
                    self.errors.append(str(exc))
                return None
            return reply.strip()

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, batch))


def _content(resp: Any) -> str | None:
    """The first choice's message text, or None for a body that is not a chat completion."""
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


def run_served_benchmark(
    served: ServedModel,
    samples: Sequence[EvalSample],
    predictions_path: str | os.PathLike,
    *,
    benchmark: str,
    model_id: str | None = None,
    batch_size: int = 8,
    max_new_tokens: dict[str, int] | None = None,
    judge: Judge | None = None,
    judge_id: str | None = None,
    system_prompt: str | None = None,
    breakdown_keys: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`runner.run_benchmark` with the served model generating: same prompts, file and scoring."""
    budgets = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
    protocol = protocol_header(budgets, system_prompt, judge, judge_id)
    protocol["backend"] = "openai-chat-completions"
    try:
        return evaluate(
            samples,
            predictions_path,
            lambda batch: served.generate(batch, budgets, system_prompt),
            benchmark=benchmark,
            model_id=model_id or served.model,
            protocol=protocol,
            batch_size=max(batch_size, served.concurrency),
            judge=judge,
            breakdown_keys=breakdown_keys,
            progress=progress,
        )
    except RuntimeError as exc:
        if served.errors:
            raise type(exc)(f"{exc}; last error: {served.errors[-1]}") from exc
        raise
