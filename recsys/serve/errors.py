"""The API's one error type, raised anywhere a request is refused and answered as ``{"error": {"code", "message"}}``."""

from __future__ import annotations


class ApiError(Exception):
    """A client-facing error: HTTP status, a stable machine code, a human message and extra response headers
    (``Retry-After`` of a 429)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
