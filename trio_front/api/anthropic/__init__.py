"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) on the chat path.

``request.py`` converts a request to a chat request (vLLM 0.32's mapping), ``effort.py`` resolves
``thinking.disabled``, ``blocks.py`` turns assistant events into content blocks and stream events,
``messages.py`` serves both routes, ``errors.py`` is Anthropic's error shape.
"""
