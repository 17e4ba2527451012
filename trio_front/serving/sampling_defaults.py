"""Default sampling parameters from the model's ``generation_config.json`` (vLLM's ``--generation-config``
and ``--override-generation-config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class SamplingDefaults:
    """Request fields a request leaves unset take these values (empty: vLLM's own defaults)."""

    values: dict[str, Any] = attrs.field(factory=dict)


def load_sampling_defaults(
    model_dir: Path, generation_config: str = "auto", override: str | None = None
) -> SamplingDefaults:
    return SamplingDefaults()
