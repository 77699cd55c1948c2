"""What the authors of well-known open bases declare about them, for the model card, when the
files themselves do not say (a GGUF carries a license and a name, never its training data).
Keyed by organisation and name as a GGUF's `general.organization` / `general.basename` and
`general.size_label` give them, or a Hugging Face repository id. Written from the authors' model
cards and papers; a recipe's `[base] training_data` overrides it."""

from __future__ import annotations

KNOWN_BASES: dict[str, dict] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": {
        "license": "Apache-2.0",
        "training_data": [
            "pretraining, ~2 trillion tokens: FineWeb-Edu, DCLM, The Stack (Stack-Edu), "
            "FineMath, Cosmopedia v2 (synthetic)",
            "instruction tuning: SmolTalk; preference tuning: UltraFeedback",
        ],
        "declared_in": "https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct "
                       "(model card) and arXiv:2502.02737",
    },
}


def known_base(name: str | None, metadata: dict) -> tuple[str | None, dict]:
    """(the key, the entry) of a known base matching the name or the GGUF metadata."""
    candidates = [name] if name else []
    org, base, size = (metadata.get(k) for k in ("organization", "basename", "size_label"))
    if org and base and size:
        candidates += [f"{org}/{base}-{size}", f"{org}/{base}-{size}-Instruct"]
    lowered = {k.lower(): k for k in KNOWN_BASES}
    for candidate in candidates:
        key = lowered.get(str(candidate).lower())
        if key is not None:
            return key, KNOWN_BASES[key]
    return None, {}
