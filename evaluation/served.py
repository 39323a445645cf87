"""A served model as the evaluator's backend: any OpenAI-compatible chat endpoint.

vLLM, SGLang and TGI serve the LLaVA export of GMAI-VL (and hosted VLMs) behind
`POST {base_url}/chat/completions`. Each question becomes one request with the same user turn
as the in-process path (`prompts.prompt_text`), its images first and inline as PNG data URLs,
greedy decoding (`temperature=0`) and the question type's token budget; replies are read by the
same rules and stored in the same resumable predictions file.

Requests go through the package's one OpenAI-compatible client (`gmaivl.core.openai_chat`) in a
bounded thread pool (`concurrency`); a request is retried on 429 (waiting what `Retry-After`
says, else exponential backoff), 5xx, timeouts, connection errors and malformed bodies, up to
`max_retries` times; other 4xx are not retried.
A question whose retries run out gets no prediction: the finished ones are saved and a rerun
retries only the rest.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gmaivl.core.openai_chat import ChatEndpoint, ChatRequestError, EndpointConfig, image_data_url

from .extraction import Judge
from .prompts import build_messages
from .runner import DEFAULT_MAX_NEW_TOKENS, evaluate, protocol_header
from .samples import EvalSample

ServedModelError = ChatRequestError


def chat_messages(sample: EvalSample, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages: the images first (inline PNG data URLs), then the evaluator's prompt."""
    return build_messages(
        sample,
        system_prompt,
        lambda image: {"type": "image_url", "image_url": {"url": image_data_url(image)}},
    )


class ServedModel:
    """Chat completions from an OpenAI-compatible endpoint, with retries and bounded concurrency.

    `endpoint` is an `EndpointConfig`, or a base URL with `model` and `EndpointConfig` settings
    (`api_key`, `timeout`, `max_retries`, ...); `concurrency` (default: the config's
    `max_connections`) is the requests in flight and the connection pool's size.
    """

    def __init__(
        self,
        endpoint: EndpointConfig | str,
        model: str | None = None,
        *,
        concurrency: int | None = None,
        client: Any = None,
        **settings: Any,
    ) -> None:
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
            settings["max_connections"] = concurrency
        self.config = EndpointConfig.of(endpoint, model, **settings)
        self.endpoint = ChatEndpoint(self.config, client=client)
        self.model = self.config.model
        self.concurrency = self.config.max_connections
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, Any]], max_tokens: int, where: str = "request") -> str:
        """One chat completion's text, greedy; raises `ServedModelError` when retries run out."""
        return self.endpoint.complete(messages, where=where, max_tokens=max_tokens, temperature=0)

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
