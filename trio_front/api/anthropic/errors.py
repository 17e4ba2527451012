"""Anthropic's error shape, ``{"type": "error", "error": {"type", "message"}}``, for every failure on the
``/v1/messages`` routes (the anthropic SDK picks its exception class from the status code).

:class:`AnthropicAPIError` is an :class:`~trio_front.api.errors.APIError` whose body is Anthropic's, so the
app's error path (``send_error``), the auth layer's refusal and an in-band stream ``error`` event all
speak it without knowing the API.
"""

from __future__ import annotations

from typing import Any

from ..errors import APIError

#: Anthropic's error types by status (https://docs.anthropic.com/en/api/errors); 503 is the engine being
#: unavailable, which Anthropic calls overloaded (its own 529).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's type for *status*: ``invalid_request_error`` for other 4xx, ``api_error`` for 5xx."""
    return _TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")


class AnthropicAPIError(APIError):
    """An :class:`APIError` answered in Anthropic's shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, type=error_type(status))

    @classmethod
    def of(cls, exc: APIError) -> AnthropicAPIError:
        if isinstance(exc, AnthropicAPIError):
            return exc
        return cls(exc.status, exc.message)

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.type, "message": self.message}}


def stream_error(status: int, message: str) -> dict[str, Any]:
    """The in-band ``error`` event of a stream that already started."""
    return AnthropicAPIError(status, message).body()
