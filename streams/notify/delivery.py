"""Delivering one notification to one webhook: signature, idempotency key, retries.

Every request carries

- ``X-Cityvitals-Signature: t=<unix seconds>,v1=<hex>``: HMAC-SHA256 with the
  receiver's secret over ``b"<t>." + body`` (the body exactly as sent). A
  receiver recomputes it, compares in constant time, and refuses timestamps
  older than a few minutes (:func:`verify_signature`; ``examples/receiver.py``
  is a runnable receiver);
- ``Idempotency-Key: <notification id>``: the same on every attempt and on
  every resend after a crash, so a receiver can drop duplicates.

Chat robots answer in their own way (``dialect``). A DingTalk robot with 加签
checks ``timestamp`` (milliseconds) and ``sign`` query parameters: base64 of
HMAC-SHA256 keyed with the secret over ``"<timestamp>\n<secret>"``
(:func:`dingtalk_sign`), made afresh for every attempt because DingTalk refuses
a timestamp more than an hour old. DingTalk and WeCom robots answer HTTP 200
with ``{"errcode": 0}`` when they took the message; any other ``errcode`` is a
failure: their rate limits (DingTalk 130101, WeCom 45009) are retried, anything
else (a bad signature, a wrong key, a malformed message) is ``dead`` with the
robot's ``errmsg``.

Outcomes: a 2xx answer is ``delivered``. A timeout, a connection failure, 408,
425, 429 and 5xx are retried with exponential backoff and jitter, or after the
``Retry-After`` the receiver asked for; any other 4xx will not get better and
is ``dead`` at once. After ``max_attempts`` or ``give_up_after_s`` the
notification is ``dead`` with the last error.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

SIGNATURE_HEADER = "X-Cityvitals-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# chat robots' rate limits: DingTalk "send too fast", WeCom "api freq out of limit"
ROBOT_RATE_LIMITED = frozenset({130101, 45009})
Outcome = Literal["delivered", "dead"]
Dialect = Literal["webhook", "dingtalk", "wecom"]


def dingtalk_sign(secret: bytes, timestamp_ms: int) -> str:
    """DingTalk's 加签 ``sign`` for ``timestamp_ms`` (before URL encoding)."""
    text = f"{timestamp_ms}\n".encode() + secret
    return base64.b64encode(hmac.new(secret, text, hashlib.sha256).digest()).decode("ascii")


def _robot_error(response: httpx.Response) -> tuple[int, str] | None:
    """A chat robot's refusal in a 200 answer: ``(errcode, errmsg)``, or None if it took it."""
    try:
        doc = response.json()
    except ValueError:
        return None  # not the robot's JSON (e.g. a proxy); HTTP 2xx decides
    if not isinstance(doc, dict) or doc.get("errcode", 0) in (0, None):
        return None
    code = doc["errcode"]
    return (code if isinstance(code, int) else -1), str(doc.get("errmsg", ""))[:200]


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str | None, body: bytes, *, now: float, tolerance_s: float = 300.0
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    if not header:
        return False
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard to try one receiver."""

    timeout_s: float = 10.0
    max_attempts: int = 12
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    give_up_after_s: float = 3600.0
    max_retry_after_s: float = 600.0  # a longer Retry-After is capped at this


DEFAULT_POLICY = DeliveryPolicy()


@dataclass(frozen=True)
class DeliveryResult:
    outcome: Outcome
    attempts: int
    status_code: int | None
    error: str | None
    seconds: float


class _Retryable(Exception):
    def __init__(self, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.status = status
        self.retry_after = retry_after


class _Permanent(Exception):
    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def _snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


def _signed_request(
    url: str,
    body: bytes,
    content_type: str,
    *,
    secret: bytes,
    idempotency_key: str,
    dialect: Dialect,
    clock: Callable[[], float],
) -> tuple[httpx.URL, dict[str, str]]:
    """Where one attempt posts ``body`` and with which headers: signed afresh for every
    attempt, since receivers refuse old timestamps."""
    stamp = int(clock())
    headers = {
        "Content-Type": content_type,
        SIGNATURE_HEADER: signature(secret, stamp, body),
        IDEMPOTENCY_HEADER: idempotency_key,
        "User-Agent": "cityvitals-notifier/1",
    }
    target = httpx.URL(url)
    if dialect == "dingtalk" and secret:
        ms = int(clock() * 1000)
        target = target.copy_merge_params({"timestamp": str(ms), "sign": dingtalk_sign(secret, ms)})
    return target, headers


def _judge(response: httpx.Response, dialect: Dialect, clock: Callable[[], float]) -> int:
    """The status of an answer that delivered the notification; raises :class:`_Retryable`
    for an answer worth another attempt and :class:`_Permanent` for the rest."""
    if response.is_success:
        refused = _robot_error(response) if dialect != "webhook" else None
        if refused is None:
            return response.status_code
        code, message = refused
        detail = f"HTTP {response.status_code}, {dialect} errcode {code}: {message}"
        if code in ROBOT_RATE_LIMITED:
            raise _Retryable(detail, response.status_code)
        raise _Permanent(detail, response.status_code)
    if response.status_code in RETRYABLE_STATUS:
        raise _Retryable(
            _snippet(response),
            response.status_code,
            retry_after_seconds(response.headers.get("retry-after"), clock()),
        )
    raise _Permanent(_snippet(response), response.status_code)


def _retrying(policy: DeliveryPolicy, sleep: Callable[[float], Awaitable[None]]) -> AsyncRetrying:
    """The attempts' schedule: exponential backoff with jitter, or the receiver's
    ``Retry-After`` (capped), until ``max_attempts`` or ``give_up_after_s``."""
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_backoff_s,
        max=policy.max_backoff_s,
        jitter=policy.initial_backoff_s,
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, policy.max_retry_after_s)
        return float(backoff(state))

    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.give_up_after_s),
        wait=wait,
        retry=retry_if_exception_type(_Retryable),
        sleep=sleep,
        reraise=True,
    )


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    content_type: str,
    *,
    secret: bytes,
    idempotency_key: str,
    dialect: Dialect = "webhook",
    policy: DeliveryPolicy = DEFAULT_POLICY,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> DeliveryResult:
    """POST ``body`` to ``url`` until it is delivered or dead (see the module docstring)."""
    started = time.monotonic()
    attempts = 0
    last_status: int | None = None

    async def attempt() -> int:
        nonlocal attempts, last_status
        attempts += 1
        target, headers = _signed_request(
            url,
            body,
            content_type,
            secret=secret,
            idempotency_key=idempotency_key,
            dialect=dialect,
            clock=clock,
        )
        try:
            response = await client.post(
                target, content=body, headers=headers, timeout=policy.timeout_s
            )
        except httpx.TimeoutException:
            last_status = None
            raise _Retryable(f"no answer within {policy.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            last_status = None
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        last_status = response.status_code
        return _judge(response, dialect, clock)

    try:
        status: int = await _retrying(policy, sleep)(attempt)
    except (_Retryable, _Permanent) as exc:
        return DeliveryResult("dead", attempts, last_status, str(exc), time.monotonic() - started)
    return DeliveryResult("delivered", attempts, status, None, time.monotonic() - started)
