"""Model-family output formats, sans-IO: tool-call parsers (``tools/``) and reasoning parsers
(``reasoning/``).

A parser turns one generation's text, fed in arbitrary pieces, into ordered events. It never sees a
socket or a protocol shape; the assistant layer (``trio_front.assistant``) drives it for every API.
Each parser is per request (it holds that request's state) and lives inside the request's scope.

The contract that matters: **feeding the whole text at once and feeding it in any chunking give the
same events once merged**, so a streamed answer, assembled as a client does, equals the non-streamed one.
"""
