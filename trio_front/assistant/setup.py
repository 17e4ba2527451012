"""Everything a request needs from the assistant layer, decided before the engine sees it.

``AssistantSetup.build`` combines the tool plan with the request's own structured-output constraint (a
``required`` / named tool choice brings its own grammar, so both at once is a 400), instantiates the
reasoning parser, and says what the engine must be told: the constraint, ``skip_special_tokens=False``
when a format's markers are special tokens, and ``reasoning_ended`` / ``reasoning_parser_kwargs`` so that
the engine applies a grammar only after the reasoning ends (§1.4 of vLLM's behaviour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from trio_front.engine import wire
from trio_front.parsers.reasoning import ReasoningParser
from trio_front.serving import structured
from trio_front.serving.params import ParamError
from trio_front.text.tokenizer import Tokenizer

from .config import AssistantConfig
from .output import AssistantOutput
from .tools import ToolPlan


@attrs.define(eq=False)
class AssistantSetup:
    plan: ToolPlan
    constraint: wire.StructuredOutputsParams | None
    reasoning: ReasoningParser | None
    include_reasoning: bool
    chat_template_kwargs: dict[str, Any]

    @classmethod
    def build(
        cls,
        plan: ToolPlan,
        constraint: wire.StructuredOutputsParams | None,
        *,
        config: AssistantConfig,
        structured_config: structured.StructuredConfig,
        tokenizer: Tokenizer,
        include_reasoning: bool = True,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        constraint_param: str = "response_format",
    ) -> AssistantSetup:
        if plan.schema is not None:
            if constraint is not None:
                raise ParamError(
                    f"tool_choice {plan.mode!r} constrains the output itself; it cannot be combined with "
                    f"a structured output ({constraint_param})",
                    constraint_param,
                )
            constraint = structured.from_json_schema(plan.schema, config=structured_config)
        kwargs = dict(chat_template_kwargs or {})
        reasoning = None
        if config.reasoning_parser_cls is not None:
            reasoning = config.reasoning_parser_cls(tokenizer, kwargs)
        return cls(plan, constraint, reasoning, include_reasoning, kwargs)

    def fork(self, tokenizer: Tokenizer) -> AssistantSetup:
        """An independent setup for another choice of the same request (``n > 1``): the plan and the
        constraint are shared, the (stateful) reasoning parser is a fresh one."""
        if self.reasoning is None:
            return self
        return attrs.evolve(self, reasoning=type(self.reasoning)(tokenizer, self.chat_template_kwargs))

    @property
    def needs_special_tokens(self) -> bool:
        return self.plan.needs_special_tokens or (
            self.reasoning is not None and self.reasoning.needs_special_tokens
        )

    def start(self, prompt_ids: Sequence[int]) -> tuple[bool | None, dict[str, Any] | None]:
        """Look at the rendered prompt; return ``(reasoning_ended, reasoning_parser_kwargs)`` for the
        engine (both ``None`` without a reasoning parser), as vLLM's chat serving computes them."""
        if self.reasoning is None:
            return None, None
        self.reasoning.start(prompt_ids)
        ended = True if not self.include_reasoning else self.reasoning.reasoning_ended_in_prompt()
        return ended, {"chat_template_kwargs": self.chat_template_kwargs}

    def output(self) -> AssistantOutput:
        return AssistantOutput(self.plan, self.reasoning, include_reasoning=self.include_reasoning)
