"""For recipes whose tasks are all programmatic: a generator that refuses to generate."""

from __future__ import annotations

from collections.abc import Sequence

from fournil.synth.generator import GenRequest, GenResult, OnResult


class ProgrammaticGenerator:
    """For recipes whose tasks are all programmatic: there is no model to call."""

    id = "programmatic"

    def generate(self, requests: Sequence[GenRequest], progress: bool = True,
                 on_result: OnResult | None = None) -> list[GenResult]:
        raise RuntimeError(
            f"a task asked for {len(requests)} LLM generation(s), but [synth.generator] "
            "backend is \"programmatic\": set backend to openai, llama_cpp or hf")
