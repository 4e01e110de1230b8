"""A token bucket shared by the sender threads of one process: a provider's rate limit.

Airflow pools cap how many delivery tasks run at once per channel; a bucket caps the
messages per second within a task, as the provider's contract asks (e.g. an SMS gateway's
"at most 100 requests per second"). Several tasks running at once each get their share:
set the connection's `rate_per_second` to the provider's limit divided by the pool's slots.
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """`rate` tokens per second, at most `burst` (default: one second's worth) saved up."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"a rate limit must be positive, not {rate}")
        self.rate = rate
        self.capacity = max(burst if burst is not None else rate, 1.0)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self, tokens: float = 1.0) -> float:
        """Wait until `tokens` are available and take them; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                wanted = min(tokens, self.capacity)
                if self._tokens >= wanted:
                    self._tokens -= tokens
                    return waited
                pause = (wanted - self._tokens) / self.rate
            time.sleep(pause)
            waited += pause
