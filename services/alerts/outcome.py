"""The result of one delivery attempt, decided by the sender, acted on by the deliverer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """``ok``: delivered. Otherwise ``retryable`` says whether another attempt may succeed."""

    ok: bool
    retryable: bool = False
    status_code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @classmethod
    def success(cls, status_code: int | None = None) -> Outcome:
        return cls(ok=True, status_code=status_code)

    @classmethod
    def transient(cls, error: str, *, status_code: int | None = None, retry_after_s: float | None = None) -> Outcome:
        return cls(ok=False, retryable=True, status_code=status_code, error=error, retry_after_s=retry_after_s)

    @classmethod
    def permanent(cls, error: str, *, status_code: int | None = None) -> Outcome:
        return cls(ok=False, retryable=False, status_code=status_code, error=error)
