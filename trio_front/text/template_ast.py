"""Which message-content shape a chat template expects, found from its Jinja AST as vLLM 0.32 does
(``vllm/renderers/hf.py::_detect_content_format``).

A template that loops over a message's content (``{% for part in message['content'] %}``, directly, via a
variable assigned from it, or via a macro parameter bound to it) wants OpenAI-style lists of parts
(``"openai"``); any other template gets each message's content as one string (``"string"``). Like vLLM,
this ignores scoping: it is a heuristic over assignments, not a data-flow analysis.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Literal

import jinja2.nodes as nodes


def _is_var(node: nodes.Node, name: str) -> bool:
    return isinstance(node, nodes.Name) and node.ctx == "load" and node.name == name


def _is_attr(node: nodes.Node, name: str, key: str) -> bool:
    if isinstance(node, nodes.Getitem):
        return _is_var(node.node, name) and isinstance(node.arg, nodes.Const) and node.arg.value == key
    if isinstance(node, nodes.Getattr):
        return _is_var(node.node, name) and node.attr == key
    return False


def _accesses(node: nodes.Node, name: str, key: str | None = None) -> bool:
    """``name`` (or ``name[key]``/``name.key``), possibly through filters, tests or slicing."""
    if isinstance(node, nodes.Filter):
        return node.node is not None and _accesses(node.node, name, key)
    if isinstance(node, nodes.Test):
        return _accesses(node.node, name, key)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _accesses(node.node, name, key)
    return _is_attr(node, name, key) if key else _is_var(node, name)


class _Unsupported(Exception):
    """A construct vLLM's detector asserts against (tuple targets, ``ns.x`` targets); vLLM then falls back
    to ``"string"``, and so do we."""


def _name_of(target: nodes.Node) -> str:
    if not isinstance(target, nodes.Name):
        raise _Unsupported
    return target.name


def _aliases(root: nodes.Template, name: str) -> list[str]:
    """``name`` and every variable assigned from it (transitively)."""
    found = [name]
    queue = deque([name])
    while queue:
        current = queue.popleft()
        for assign in root.find_all(nodes.Assign):
            if _accesses(assign.node, current):
                target = _name_of(assign.target)
                found.append(target)
                if target != current:  # a self-assignment would loop forever
                    queue.append(target)
    return found


def _message_names(root: nodes.Template) -> list[str]:
    """Loop variables of ``{% for message in messages %}`` loops (over any alias of ``messages``)."""
    names = []
    message_lists = _aliases(root, "messages")
    for loop in root.find_all(nodes.For):
        if any(_accesses(loop.iter, name) for name in message_lists):
            names.append(_name_of(loop.target))
    return names


def _content_loops(root: nodes.Template) -> Iterator[nodes.For]:
    messages = _message_names(root)

    def is_content(node: nodes.Node) -> bool:
        return any(_accesses(node, name, "content") for name in messages)

    # Macro parameters that receive a message's content, per loop inside that macro.
    params_by_loop: dict[int, set[str]] = {}
    loops_in_macros: set[int] = set()
    for macro in root.find_all(nodes.Macro):
        arg_names = [arg.name for arg in macro.args]
        content_params: set[str] = set()
        for call in root.find_all(nodes.Call):
            if not (isinstance(call.node, nodes.Name) and call.node.name == macro.name):
                continue
            for i, arg in enumerate(call.args):
                if i < len(arg_names) and is_content(arg):
                    content_params.add(arg_names[i])
            for kwarg in call.kwargs:
                if kwarg.key in arg_names and is_content(kwarg.value):
                    content_params.add(kwarg.key)
        for loop in macro.find_all(nodes.For):
            loops_in_macros.add(id(loop))
            if content_params:
                params_by_loop[id(loop)] = content_params

    for loop in root.find_all(nodes.For):
        over_content = is_content(loop.iter) or (
            isinstance(loop.iter, nodes.Name)
            and (
                loop.iter.name in params_by_loop.get(id(loop), ())
                or (id(loop) not in loops_in_macros and loop.iter.name == "content")
            )
        )
        if over_content:
            _name_of(loop.target)
            yield loop


def detect_content_format(root: nodes.Template) -> Literal["string", "openai"]:
    """``"openai"`` if the parsed template iterates over message content, else ``"string"``."""
    try:
        next(_content_loops(root))
    except (StopIteration, _Unsupported):
        return "string"
    return "openai"
