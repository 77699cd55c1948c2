"""The generators `[synth.generator]` can name, and the one function that builds them.

Nothing heavy is imported here: httpx, llama_cpp, torch and transformers are imported by the
backend that needs them, when it is built.
"""

from __future__ import annotations

import os
from pathlib import Path

from fournil.synth.backends.hf import HFGenerator
from fournil.synth.backends.llama_cpp import LlamaCppGenerator
from fournil.synth.backends.openai import OpenAIGenerator
from fournil.synth.backends.programmatic import ProgrammaticGenerator
from fournil.synth.cache import CachedGenerator, GenerationCache
from fournil.synth.config import GeneratorConfig
from fournil.synth.generator import Generator

__all__ = ["HFGenerator", "LlamaCppGenerator", "OpenAIGenerator", "ProgrammaticGenerator",
           "make_generator"]


def make_generator(config: GeneratorConfig, cache_dir: Path | None = None) -> Generator:
    """The generator a `[synth.generator]` table describes; with `cache_dir`, behind the
    durable cache so a resumed run only pays for what it has not generated yet."""
    config.validate("synth.generator")
    generator: Generator
    if config.backend == "programmatic":
        return ProgrammaticGenerator()  # nothing to cache: it never generates
    if config.backend == "openai":
        generator = OpenAIGenerator(
            config.base_url, config.model, api_key=os.environ.get(config.api_key_env) or None,
            concurrency=config.concurrency, max_retries=config.max_retries,
            timeout_s=config.timeout_s, backoff_s=config.backoff_s)
    elif config.backend == "llama_cpp":
        generator = LlamaCppGenerator(config.model)
    else:
        generator = HFGenerator(config.model)
    if cache_dir is None:
        return generator
    return CachedGenerator(generator, GenerationCache(cache_dir))
