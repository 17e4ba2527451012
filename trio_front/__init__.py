"""trio-front: an OpenAI-compatible frontend on trio for an unchanged vLLM engine core."""

__version__ = "0.1.0"
