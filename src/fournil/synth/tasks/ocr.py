"""OCR post-correction pairs: the noise model applied to a clean seed passage; the model is
asked to correct the noisy text and the target is the passage itself.

Checks: the noisy text differs from the clean one; its character error rate lies in the
configured band (too little damage teaches nothing, too much is unrecoverable); the target
is the clean passage, character for character.
"""

from __future__ import annotations

import json

from fournil.formats.prompts import ocr_messages
from fournil.synth.config import SynthConfig
from fournil.synth.generator import GenRequest
from fournil.synth.sample import Draft, Item
from fournil.synth.verify import cer
from fournil.text.ocr_damage import add_ocr_noise

NAIVE = {"severity": "medium", "layout": "lines"}


class OcrTask:
    name = "ocr"

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None:
        return None

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft:
        clean = item.passage.text
        axes = NAIVE if item.mode == "naive" else {**NAIVE, **item.axes}
        noisy = add_ocr_noise(clean, axes["severity"], item.seed, axes["layout"])
        messages = [*ocr_messages(noisy.text), {"role": "assistant", "content": clean}]
        meta = {"noisy": noisy.text, "clean": clean, "noise": dict(noisy.kinds),
                "cer": round(cer(noisy.text, clean), 4)}
        return Draft(messages, meta, [item.passage])

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]:
        noisy, clean = draft.meta["noisy"], draft.meta["clean"]
        rate = cer(noisy, clean)
        return {"differs": noisy != clean,
                "cer_in_band": config.ocr.min_cer <= rate <= config.ocr.max_cer,
                "target_is_clean": draft.messages[-1]["content"] == item.passage.text}

    def generated_text(self, row: dict) -> str:
        return json.loads(row["meta"])["noisy"]
