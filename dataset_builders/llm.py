"""Pluggable LLM backends with JSON validation, a bounded retry budget and a content-hash cache.

- `OpenAIBackend`: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, or local vLLM / TGI
  / llama.cpp servers), over httpx; images travel as base64 data URLs.
- `TransformersBackend`: a local transformers model (causal LM with its tokenizer, or a
  vision-language model with its processor), greedy decoding.
- `LLMClient.request_json`: sends a prompt, parses and validates the JSON reply, retries up to
  `max_attempts`. Only a reply that passed validation is stored in the SQLite cache (keyed by the
  content hash of backend, prompt version, task, prompt and image hashes), so a crashed run replays
  what it already paid for, several worker processes share one cache, and a rejected reply is asked
  again on the next run. Replies holding chat-template special tokens or image placeholders are
  rejected. A 429/503 with `Retry-After` waits as long as the server asks; `breaker_failures`
  consecutive transport failures raise `BackendUnavailable`, which stops the build (finished work
  units stay) instead of marking every row as failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from gmaivl.core.openai_chat import ChatEndpoint, EndpointConfig, RateLimited, image_data_url, redact_url

from .prompts import PROMPT_VERSION, SYSTEM


class LLMError(RuntimeError):
    """No valid reply within the retry budget (the message shows the last reply)."""


class BackendUnavailable(LLMError):
    """The backend failed `breaker_failures` times in a row (down, unreachable): stop the build."""


# chat-template control tokens of common model families, and image placeholders
SPECIAL_TOKENS = re.compile(
    r"<\|[^|<>\s]{1,40}\|>"  # <|im_start|>, <|endoftext|>, <|eot_id|>, <|image_pad|> ...
    r"|</?s>|\[/?INST\]|<<SYS>>|<</SYS>>|<start_of_turn>|<end_of_turn>|<bos>|<eos>"
    r"|<image>|</?img>|<IMG_CONTEXT>|<image_\d+>",
    re.IGNORECASE,
)


def check_reply_text(text: str) -> None:
    """Reject text that carries chat special tokens or image placeholders into training rows."""
    found = SPECIAL_TOKENS.search(text)
    if found:
        raise ValueError(f"reply contains the special token {found.group(0)!r}")


class Backend(Protocol):
    identity: str

    def complete(self, system: str, prompt: str, images: list[Image.Image]) -> str: ...


class OpenAIBackend:
    """OpenAI-compatible chat completions over HTTP (works for vLLM/TGI `--api` servers too).

    `endpoint` is an `EndpointConfig`, or a base URL with `model` and `EndpointConfig` settings.
    The endpoint's own retries are off (`max_retries=0`): `LLMClient` waits on `RateLimited` and
    counts failures for its breaker.
    """

    def __init__(
        self,
        endpoint: EndpointConfig | str,
        model: str | None = None,
        *,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        json_mode: bool = False,
        send_images: bool = True,
        client: Any = None,
        **settings: Any,
    ) -> None:
        self.config = EndpointConfig.of(endpoint, model, **{**settings, "max_retries": 0})
        self.base_url = self.config.base_url
        self.model = self.config.model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.send_images = send_images
        self._endpoint = ChatEndpoint(self.config, client=client)
        self.identity = f"openai:{self.config.shown_url}:{self.model}:{temperature}:{max_tokens}"

    def complete(self, system: str, prompt: str, images: list[Image.Image]) -> str:
        content: Any = prompt
        if images and self.send_images:
            content = [
                *({"type": "image_url", "image_url": {"url": image_data_url(i)}} for i in images),
                {"type": "text", "text": prompt},
            ]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            params["response_format"] = {"type": "json_object"}
        return self._endpoint.complete(messages, where=self.identity, **params)


class TransformersBackend:
    """A local transformers model; `processor` may be a tokenizer or a multimodal processor."""

    def __init__(
        self, model: Any, processor: Any, max_new_tokens: int = 256, name: str | None = None
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.identity = f"transformers:{name or getattr(model.config, '_name_or_path', type(model).__name__)}:{max_new_tokens}"

    @classmethod
    def from_pretrained(cls, path: str, max_new_tokens: int = 256, **kwargs: Any) -> TransformersBackend:
        from gmaivl import register_auto_classes

        register_auto_classes()  # a GMAI-VL folder loads without trust_remote_code
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        try:
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
            processor = AutoProcessor.from_pretrained(path, **kwargs)
        except (ValueError, OSError, KeyError):
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
            processor = AutoTokenizer.from_pretrained(path, **kwargs)
        return cls(model, processor, max_new_tokens, name=path)

    def complete(self, system: str, prompt: str, images: list[Image.Image]) -> str:
        import torch

        multimodal = hasattr(self.processor, "image_processor") and images
        if multimodal:
            user: Any = [*({"type": "image"} for _ in images), {"type": "text", "text": prompt}]
        else:
            user = prompt
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if multimodal:
            inputs = self.processor(text=text, images=images, return_tensors="pt")
        else:
            tokenizer = getattr(self.processor, "tokenizer", self.processor)
            inputs = tokenizer(text, return_tensors="pt")
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id
                if tokenizer.pad_token_id is not None
                else tokenizer.eos_token_id,
            )
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


class ReplyCache:
    """SQLite key -> raw reply store, safe for several processes (WAL, busy timeout)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)"
        )

    def get(self, key: str) -> str | None:
        row = self._connection.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, reply: str) -> None:
        self._connection.execute("INSERT OR REPLACE INTO replies (key, reply) VALUES (?, ?)", (key, reply))

    def __len__(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM replies").fetchone()[0])


def extract_json(text: str) -> Any:
    """Parse the JSON object/array of a reply, tolerating ```json fences and surrounding prose."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ValueError("reply contains no JSON object")
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]"))
    if end <= start:
        raise ValueError("reply contains no complete JSON object")
    return json.loads(text[start : end + 1])


class LLMClient:
    """Backend + cache + validation: `request_json(task, prompt, images, validate)`."""

    def __init__(
        self,
        backend: Backend,
        cache: ReplyCache | None = None,
        max_attempts: int = 3,
        backoff: float = 0.5,
        breaker_failures: int = 5,
        max_wait: float = 600.0,
        max_rate_limited: int = 20,
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.max_attempts = max(1, int(max_attempts))
        self.backoff = backoff
        self.breaker_failures = max(1, int(breaker_failures))
        self.max_wait = max_wait
        self.max_rate_limited = max_rate_limited
        self.calls = 0  # replies paid for (not served from the cache)
        self.cache_hits = 0
        self.invalid_replies = 0
        self.rate_limited = 0
        self.waited_seconds = 0.0
        self._consecutive_failures = 0

    def counters(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "invalid_replies": self.invalid_replies,
            "rate_limited": self.rate_limited,
        }

    def _key(self, task: str, prompt: str, image_keys: list[str]) -> str:
        payload = json.dumps([self.backend.identity, PROMPT_VERSION, task, SYSTEM, prompt, image_keys])
        return hashlib.sha256(payload.encode()).hexdigest()

    @staticmethod
    def _parse(reply: str, validate: Callable[[Any], Any]) -> Any:
        check_reply_text(reply)
        return validate(extract_json(reply))

    def request_json(
        self,
        task: str,
        prompt: str,
        images: list[Image.Image] | None = None,
        image_keys: list[str] | None = None,
        validate: Callable[[Any], Any] = lambda x: x,
    ) -> Any:
        images = images or []
        keys = (
            image_keys if image_keys is not None else [hashlib.md5(i.tobytes()).hexdigest() for i in images]
        )
        key = self._key(task, prompt, keys)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            try:
                result = self._parse(cached, validate)
                self.cache_hits += 1
                return result
            except (ValueError, TypeError, KeyError):
                pass  # a cache written by older rules: ask again
        last = ""
        for _attempt in range(self.max_attempts):
            reply = self._call(prompt, images)
            self.calls += 1
            try:
                result = self._parse(reply, validate)
            except (ValueError, TypeError, KeyError) as error:
                self.invalid_replies += 1
                last = f"{reply[:200]!r} ({error})"
                continue
            if self.cache is not None:
                self.cache.put(key, reply)
            return result
        raise LLMError(f"{task}: no valid JSON reply after {self.max_attempts} attempts; last: {last}")

    def _call(self, prompt: str, images: list[Image.Image]) -> str:
        error: Exception | None = None
        attempt = rate_limited = 0
        while attempt < self.max_attempts:
            try:
                reply = self.backend.complete(SYSTEM, prompt, images)
                self._consecutive_failures = 0
                return reply
            except RateLimited as exc:  # the server is up but busy: wait as long as it asks
                rate_limited += 1
                self.rate_limited += 1
                if rate_limited > self.max_rate_limited:
                    raise LLMError(f"still rate limited after {rate_limited} waits ({exc})") from None
                wait = exc.retry_after if exc.retry_after is not None else self.backoff * (2**rate_limited)
                wait = min(wait, self.max_wait)
                self.waited_seconds += wait
                time.sleep(wait)
            except Exception as exc:  # transport errors: bounded retries, never cached
                error = exc
                attempt += 1
                self._consecutive_failures += 1
                if self._consecutive_failures >= self.breaker_failures:
                    where = redact_url(getattr(self.backend, "base_url", self.backend.identity))
                    raise BackendUnavailable(
                        f"LLM backend {where} failed {self._consecutive_failures} times in a row "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                time.sleep(self.backoff * (2 ** (attempt - 1)))
        raise LLMError(f"backend failed {self.max_attempts} times: {type(error).__name__}: {error}")


# -- reply validators ----------------------------------------------------------------------------
def validate_caption(data: Any, region: bool) -> str:
    caption = data.get("caption") if isinstance(data, dict) else None
    if not isinstance(caption, str) or len(caption.split()) < 3:
        raise ValueError("missing or too short 'caption'")
    caption = caption.strip()
    if region and not caption.lower().startswith("this region"):
        raise ValueError("region caption must start with 'This region'")
    return caption


def validate_pairs(data: Any) -> list[dict[str, str]]:
    pairs = data.get("pairs") if isinstance(data, dict) else data
    if isinstance(pairs, dict):
        pairs = [pairs]
    if not isinstance(pairs, list) or not pairs:
        raise ValueError("expected a non-empty list of question/answer pairs")
    out = []
    for pair in pairs:
        if (
            not isinstance(pair, dict)
            or not str(pair.get("question", "")).strip()
            or not str(pair.get("answer", "")).strip()
        ):
            raise ValueError(f"bad pair {str(pair)[:80]}")
        out.append({"question": str(pair["question"]).strip(), "answer": str(pair["answer"]).strip()})
    return out


def validate_translation(data: Any, original: list[dict[str, str]]) -> list[dict[str, str]]:
    messages = data.get("messages") if isinstance(data, dict) else data
    if not isinstance(messages, list) or len(messages) != len(original):
        raise ValueError("translation must keep the number of turns")
    out = []
    for source, turn in zip(original, messages):
        content = turn.get("content") if isinstance(turn, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise ValueError("empty translated turn")
        if not re.search(r"[\u4e00-\u9fff]", content) and re.search(r"[A-Za-z]{4,}", source["content"]):
            raise ValueError("translated turn contains no Chinese characters")
        out.append({"role": source["role"], "content": content.strip()})
    return out


def validate_score(data: Any) -> tuple[float, str]:
    if not isinstance(data, dict) or "score" not in data:
        raise ValueError("missing 'score'")
    # the first whole number in the reply ("3", "3/5", "4 out of 5"); "10" or "-1" is not a 1
    match = re.search(r"(?<![\d.-])\d+(?:\.\d+)?(?![\d.])", str(data["score"]))
    if not match:
        raise ValueError(f"score {data['score']!r} is not within 1-5")
    score = float(match.group(0))
    if not 1.0 <= score <= 5.0:
        raise ValueError(f"score {score} is not within 1-5")
    return score, str(data.get("comments", ""))


# generation.openai: the endpoint's settings (`EndpointConfig`, less its retries) and the backend's
OPENAI_ENDPOINT_OPTIONS = tuple(
    f.name
    for f in dataclasses.fields(EndpointConfig)
    if f.name not in ("max_retries", "backoff", "max_backoff")
)
OPENAI_OPTIONS = ("temperature", "max_tokens", "json_mode", "send_images")


def backend_from_config(config: dict[str, Any]) -> Backend | None:
    """Build the backend named in a spec's `generation` block (None for `templates`)."""
    kind = config.get("backend", "templates")
    if kind == "templates":
        return None
    if kind == "openai":
        options = dict(config.get("openai") or {})
        if "base_url" not in options or "model" not in options:
            raise ValueError("generation.openai needs 'base_url' and 'model'")
        unknown = sorted(set(options) - set(OPENAI_OPTIONS) - set(OPENAI_ENDPOINT_OPTIONS))
        if unknown:
            known = ", ".join((*OPENAI_ENDPOINT_OPTIONS, *OPENAI_OPTIONS))
            raise ValueError(
                f"generation.openai: unknown option(s) {', '.join(unknown)} (known: {known}; "
                "retries are generation.max_attempts)"
            )
        own = {k: options.pop(k) for k in OPENAI_OPTIONS if k in options}
        return OpenAIBackend(EndpointConfig(**options), **own)
    if kind == "transformers":
        options = dict(config.get("transformers") or {})
        if "model" not in options:
            raise ValueError("generation.transformers needs 'model' (a local path)")
        return TransformersBackend.from_pretrained(options.pop("model"), **options)
    raise ValueError(f"unknown generation backend {kind!r} (templates, openai, transformers)")
