"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with vLLM's status codes."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """An error to send to the client as-is (the request never reached the engine, or the engine failed)."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type or _TYPES.get(status, HTTPStatus(status).phrase.replace(" ", ""))

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.status}
        }

    def json(self) -> bytes:
        return orjson.dumps(self.body())


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param)
