"""OCR post-correction pairs: a clean seed passage is set as a printed page (lines, some
words hyphenated at the line end: `print_page`), the noise model damages the page, and the
model is asked to correct the damaged text; the target is the page, so the model learns to
fix what OCR misread and to keep what was printed, hyphens and line ends included (a
diplomatic transcription; joining the lines is curate's normalisation, not the corrector's).
Pairs of severity `none` are pages as printed: the right answer is the input, unchanged.

Checks: the noisy text differs from the page (is the page, for `none`); its character error
rate lies in the configured band (too little damage teaches nothing, too much is
unrecoverable); the target is the passage, character for character but for line ends and
the hyphens that cut words at them.
"""

from __future__ import annotations

import json
import re

from fournil.formats.prompts import ocr_messages
from fournil.synth.config import SynthConfig
from fournil.synth.generator import GenRequest
from fournil.synth.sample import Draft, Item
from fournil.synth.verify import cer
from fournil.text.ocr_damage import add_ocr_noise, print_page

NAIVE = {"severity": "medium", "layout": "lines", "line_ends": "kept"}
_LAYOUT = re.compile(r"-?\s+")  # what setting a text in lines adds or changes


class OcrTask:
    name = "ocr"

    def request(self, item: Item, config: SynthConfig) -> GenRequest | None:
        return None

    def draft(self, item: Item, reply: str | None, config: SynthConfig,
              generator_id: str) -> Draft:
        axes = NAIVE if item.mode == "naive" else {**NAIVE, **item.axes}
        page = print_page(item.passage.text, axes["layout"], item.seed,
                          join_lines=axes["line_ends"] == "joined")
        noisy = add_ocr_noise(page, axes["severity"], item.seed, layout="flowing")
        messages = [*ocr_messages(noisy.text), {"role": "assistant", "content": page}]
        meta = {"noisy": noisy.text, "clean": page, "noise": dict(noisy.kinds),
                "severity": axes["severity"], "cer": round(cer(noisy.text, page), 4)}
        return Draft(messages, meta, [item.passage])

    def verify(self, item: Item, draft: Draft, config: SynthConfig) -> dict[str, bool]:
        noisy, page = draft.meta["noisy"], draft.meta["clean"]
        target = draft.messages[-1]["content"]
        printed = (target == page
                   and _LAYOUT.sub("", target) == _LAYOUT.sub("", item.passage.text))
        if draft.meta.get("severity") == "none":
            return {"unchanged": noisy == page, "target_is_passage_as_printed": printed}
        rate = cer(noisy, page)
        return {"differs": noisy != page,
                "cer_in_band": config.ocr.min_cer <= rate <= config.ocr.max_cer,
                "target_is_passage_as_printed": printed}

    def generated_text(self, row: dict) -> str:
        return json.loads(row["meta"])["noisy"]
