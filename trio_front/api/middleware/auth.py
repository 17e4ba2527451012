"""API keys (``--api-key``, repeatable, or ``VLLM_API_KEY``): vLLM's ``AuthenticationMiddleware``.

As vLLM: the guarded paths are those starting with ``/v1``, ``/v2``, ``/inference`` or ``/cohere`` (a bare
prefix test, as vLLM's), ``OPTIONS`` requests are let through (CORS preflights carry no credentials), the
key is the parameter of ``Authorization: <scheme> <key>`` with the scheme ``bearer`` in any case, and the
candidate's SHA-256 is compared with every key's in constant time, all keys every time, so neither the
answer's timing nor the number of comparisons says which key (or how much of one) matched.

Deliberate differences from vLLM:

* ``/tokenize`` and ``/detokenize`` are guarded too (vLLM leaves them open; they reach our tokenizer and
  issue 11 asks for them). ``/health``, ``/ping``, ``/version``, ``/metrics`` and ``/load`` stay open.
* the 401 is an OpenAI-style error (``{"error": {"message", "type", "param", "code"}}``, with
  ``WWW-Authenticate: Bearer``) rather than ``{"error": "Unauthorized"}``, so the openai SDK raises
  ``AuthenticationError`` with a message;
* on Anthropic's ``/v1/messages...`` routes, ``x-api-key: <key>`` (Anthropic's header) is accepted as
  well, and a refusal is in Anthropic's error shape (``authentication_error``); elsewhere only
  ``Authorization`` counts, as vLLM;
* a WebSocket may also carry its key as the subprotocol ``openai-insecure-api-key.<key>``, the form
  browsers use for OpenAI's Realtime API (they cannot set headers); it is refused before the upgrade with
  a real 401 response, so nothing of the socket's handler runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from secrets import compare_digest

from ..anthropic.errors import AnthropicAPIError
from ..errors import APIError
from ..http import Receive, Scope, Send
from .plumbing import first, refuse

#: vLLM's ``GUARDED_PREFIX`` plus the tokenizer routes
GUARDED_PREFIXES = ("/v1", "/v2", "/inference", "/cohere", "/tokenize", "/detokenize")
#: Anthropic's Messages routes answer a refusal in Anthropic's error shape
ANTHROPIC_PREFIX = "/v1/messages"
#: the browser's way to send a key on a WebSocket (OpenAI's Realtime API)
KEY_SUBPROTOCOL = "openai-insecure-api-key."

_MISSING = "missing API key: send it as 'Authorization: Bearer <key>'"
_WRONG = "incorrect API key provided"
_CHALLENGE = [(b"www-authenticate", b"Bearer")]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Auth:
    """ASGI layer: requests to a guarded path need one of *keys*; others pass untouched."""

    def __init__(self, app, keys: Iterable[str]) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        # Comparing digests (fixed length) keeps the comparison's time independent of the key's length too.
        self.digests = [_digest(key) for key in keys if key]
        if not self.digests:
            raise ValueError("Auth needs at least one non-empty API key")

    def matches(self, token: str) -> bool:
        """Whether *token* is one of the keys: every key's digest is compared, without short-circuit."""
        candidate = _digest(token)
        found = False
        for digest in self.digests:
            found |= compare_digest(candidate, digest)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            kind not in ("http", "websocket")
            or scope.get("method") == "OPTIONS"
            or not scope["path"].startswith(GUARDED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        tokens = list(_tokens(scope))
        found = False
        for token in tokens:  # all of them: no early exit on a match
            found |= self.matches(token)
        if found:
            await self.app(scope, receive, send)
            return
        message = _WRONG if tokens else _MISSING
        if scope["path"].startswith(ANTHROPIC_PREFIX):  # the anthropic SDK's shape
            error: APIError = AnthropicAPIError(401, message)
        else:
            error = APIError(401, message, type="AuthenticationError")
        await refuse(scope, receive, send, error, _CHALLENGE)


def _tokens(scope: Scope) -> Iterator[str]:
    """The keys a request presents: ``x-api-key`` on the Anthropic routes, the ``Authorization`` header's
    bearer parameter (vLLM's parsing: the first header, split at the first space, scheme compared
    case-insensitively), and on a WebSocket each ``openai-insecure-api-key.<key>`` subprotocol."""
    api_key = first(scope["headers"], b"x-api-key")  # Anthropic's header (its SDK sends only this one)
    if api_key and scope["path"].startswith(ANTHROPIC_PREFIX):
        yield api_key.decode("latin-1")
    value = first(scope["headers"], b"authorization")
    if value:
        scheme, _, param = value.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer":
            yield param
    if scope["type"] == "websocket":
        for protocol in scope.get("subprotocols") or ():
            if protocol.startswith(KEY_SUBPROTOCOL):
                yield protocol[len(KEY_SUBPROTOCOL) :]
