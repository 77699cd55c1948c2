"""The recipe's `[synth]` section: which tasks, how many samples, their constraint axes, the
generator, the judge, where the work runs. Standard library only (and the OCR damage model's
tables); validated like every recipe section
(`synth.rag.axes.outcome.weights: ...`).

Each task has constraint axes (`[synth.<task>.axes.<name>]` with `values` and optional
`weights`): every sample draws one value per axis, and the values go into the prompt and into
the sample's `axes`. The `outcome` axis is special: it decides what the right answer is
(answerable, unanswerable, false_premise; a summary or a false premise for summaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fournil.core.settings import ExecutorSettings
from fournil.core.validation import check as _check
from fournil.text.ocr_damage import LAYOUT_WIDTHS, SEVERITY

TASKS = ("ocr", "rag", "qa", "summary")
GENERATORS = ("auto", "programmatic", "llm")


@dataclass
class Axis:
    """One constraint axis: its values and their relative weights (none: uniform)."""

    values: list[str]
    weights: list[float] = field(default_factory=list)

    def validate(self, key: str) -> None:
        _check(len(self.values) > 0, f"{key}.values", "at least one value is needed")
        _check(len(set(self.values)) == len(self.values), f"{key}.values",
               f"values must be distinct, got {self.values}")
        if self.weights:
            _check(len(self.weights) == len(self.values), f"{key}.weights",
                   f"one weight per value: {len(self.values)} values, "
                   f"{len(self.weights)} weights")
            _check(all(w >= 0 for w in self.weights) and sum(self.weights) > 0,
                   f"{key}.weights", f"must be >= 0 with a positive sum, got {self.weights}")


def _axes(**spec: list[str] | tuple[list[str], list[float]]) -> dict[str, Axis]:
    return {name: Axis(*v) if isinstance(v, tuple) else Axis(v) for name, v in spec.items()}


# what every question-writing task varies: who asks, how, how hard
_QUESTION_AXES = {
    "difficulty": ["facile", "moyenne", "difficile"],
    "persona": ["grand public", "étudiant", "chercheur", "journaliste"],
    "register": ["courant", "soutenu", "familier"],
    "language": ["fr"],
}


def _validate_axes(axes: dict[str, Axis], key: str, outcomes: tuple[str, ...]) -> None:
    for name, axis in axes.items():
        axis.validate(f"{key}.{name}")
    if "outcome" in axes:
        for i, value in enumerate(axes["outcome"].values):
            _check(value in outcomes, f"{key}.outcome.values[{i}]",
                   f"unknown outcome {value!r} ({', '.join(outcomes)})")


def _validate_common(task: object, key: str) -> None:
    _check(task.samples >= 0, f"{key}.samples", "must be >= 0")
    if hasattr(task, "generator"):
        _check(task.generator in GENERATORS, f"{key}.generator",
               f"auto, programmatic or llm, got {task.generator!r}")
        _check(task.max_tokens > 0, f"{key}.max_tokens", "must be > 0")
        _check(task.temperature >= 0, f"{key}.temperature", "must be >= 0")


@dataclass
class OcrTaskConfig:
    """OCR post-correction pairs: the noise model on a clean passage (programmatic only)."""

    samples: int = 200
    min_cer: float = 0.01  # the noisy input's character error rate must lie in this band
    max_cer: float = 0.30
    axes: dict[str, Axis] = field(default_factory=lambda: _axes(
        severity=["light", "medium", "heavy"], layout=["lines", "columns", "flowing"],
        line_ends=["kept", "joined"]))

    def validate(self, key: str) -> None:
        _validate_common(self, key)
        _check(0 <= self.min_cer < self.max_cer, f"{key}.max_cer",
               f"need 0 <= min_cer < max_cer, got {self.min_cer}, {self.max_cer}")
        _validate_axes(self.axes, f"{key}.axes", ())
        for i, value in enumerate(self.axes.get("severity", Axis(["medium"])).values):
            _check(value in SEVERITY, f"{key}.axes.severity.values[{i}]",
                   f"unknown severity {value!r} ({', '.join(SEVERITY)})")
        for i, value in enumerate(self.axes.get("layout", Axis(["lines"])).values):
            _check(value in LAYOUT_WIDTHS, f"{key}.axes.layout.values[{i}]",
                   f"unknown layout {value!r} ({', '.join(LAYOUT_WIDTHS)})")
        for i, value in enumerate(self.axes.get("line_ends", Axis(["kept"])).values):
            _check(value in ("kept", "joined"), f"{key}.axes.line_ends.values[{i}]",
                   f"kept or joined, got {value!r}")


@dataclass
class RagTaskConfig:
    """Cited RAG: a query, the seed passage among distractors from other documents, an
    answer quoting the seed with <ref name="N">; unanswerable ones drop the seed."""

    samples: int = 200
    generator: str = "auto"  # auto: llm when [synth.generator] has a model, else programmatic
    distractors: int = 3  # at medium difficulty; easy has one fewer, hard two more
    max_tokens: int = 384
    temperature: float = 0.8
    axes: dict[str, Axis] = field(default_factory=lambda: _axes(
        query_type=["fait", "personne", "date", "définition", "explication"],
        **_QUESTION_AXES,
        outcome=(["answerable", "unanswerable"], [0.8, 0.2])))

    def validate(self, key: str) -> None:
        _validate_common(self, key)
        _check(self.distractors >= 1, f"{key}.distractors", "must be >= 1")
        _validate_axes(self.axes, f"{key}.axes", ("answerable", "unanswerable"))


@dataclass
class QaTaskConfig:
    """Questions on a passage given in the prompt; a share are unanswerable from it or rest
    on a false premise, and their right answer is a refusal or a correction."""

    samples: int = 100
    generator: str = "auto"
    min_overlap: float = 0.5  # share of the answer's content words found in the passage
    max_tokens: int = 384
    temperature: float = 0.8
    axes: dict[str, Axis] = field(default_factory=lambda: _axes(
        query_type=["fait", "personne", "définition", "explication"],
        **_QUESTION_AXES,
        outcome=(["answerable", "unanswerable", "false_premise"], [0.8, 0.1, 0.1])))

    def validate(self, key: str) -> None:
        _validate_common(self, key)
        _check(0 <= self.min_overlap <= 1, f"{key}.min_overlap", "must be in [0, 1]")
        _validate_axes(self.axes, f"{key}.axes", ("answerable", "unanswerable",
                                                  "false_premise"))


@dataclass
class SummaryTaskConfig:
    """Summaries of a passage under length/style/audience constraints; a share ask about
    something the passage does not contain (false premise) and get a correction."""

    samples: int = 100
    generator: str = "auto"
    min_overlap: float = 0.6
    max_ratio: float = 0.8  # a summary is at most this share of the passage's characters
    max_tokens: int = 256
    temperature: float = 0.7
    axes: dict[str, Axis] = field(default_factory=lambda: _axes(
        length=["une phrase", "deux ou trois phrases", "trente mots"],
        style=["prose", "puces", "titre"],
        audience=["grand public", "enfant", "spécialiste"],
        language=["fr"],
        outcome=(["summary", "false_premise"], [0.8, 0.2])))

    def validate(self, key: str) -> None:
        _validate_common(self, key)
        _check(0 <= self.min_overlap <= 1, f"{key}.min_overlap", "must be in [0, 1]")
        _check(0 < self.max_ratio <= 1, f"{key}.max_ratio", "must be in (0, 1]")
        _validate_axes(self.axes, f"{key}.axes", ("summary", "false_premise"))


@dataclass
class JudgeConfig:
    """An LLM grading each sample 1-5 against a rubric; below `threshold` is a rejection."""

    enabled: bool = False
    threshold: int = 3
    max_tokens: int = 64
    tasks: list[str] = field(default_factory=lambda: ["rag", "qa", "summary"])

    def validate(self, key: str) -> None:
        _check(1 <= self.threshold <= 5, f"{key}.threshold", "must be in 1..5")
        _check(self.max_tokens > 0, f"{key}.max_tokens", "must be > 0")
        for i, task in enumerate(self.tasks):
            _check(task in TASKS, f"{key}.tasks[{i}]", f"unknown task {task!r}")


BACKENDS = ("programmatic", "openai", "llama_cpp", "hf")


@dataclass
class GeneratorConfig:
    """The recipe's `[synth.generator]` table."""

    backend: str = "programmatic"  # programmatic | openai | llama_cpp | hf
    base_url: list[str] = field(default_factory=list)  # openai: requests are spread over them
    model: str = ""  # openai: model name; llama_cpp: a .gguf; hf: a folder or a .gguf file
    api_key_env: str = "OPENAI_API_KEY"  # the env var's *name*: keys never go in recipes
    concurrency: int = 8  # requests in flight (openai); local backends run one at a time
    max_retries: int = 3
    timeout_s: float = 120.0
    backoff_s: float = 1.0  # first retry delay (openai), doubled each try, with jitter

    def validate(self, key: str) -> None:
        _check(self.backend in BACKENDS, f"{key}.backend",
               f"unknown backend {self.backend!r} ({', '.join(BACKENDS)})")
        _check(self.concurrency >= 1, f"{key}.concurrency", f"must be >= 1, got {self.concurrency}")
        _check(self.max_retries >= 0, f"{key}.max_retries", f"must be >= 0, got {self.max_retries}")
        _check(self.timeout_s > 0, f"{key}.timeout_s", f"must be > 0, got {self.timeout_s}")
        _check(self.backoff_s >= 0, f"{key}.backoff_s", f"must be >= 0, got {self.backoff_s}")
        if self.backend == "openai":
            _check(len(self.base_url) > 0, f"{key}.base_url",
                   "the openai backend needs at least one URL, e.g. [\"http://127.0.0.1:8000/v1\"]")
            for i, url in enumerate(self.base_url):
                _check(url.startswith(("http://", "https://")), f"{key}.base_url[{i}]",
                       f"must start with http:// or https://, got {url!r}")
        if self.backend in ("openai", "llama_cpp", "hf"):
            what = {"openai": "the model name the endpoint serves",
                    "llama_cpp": "the path to a .gguf file",
                    "hf": "the path to a model folder or a .gguf file"}[self.backend]
            _check(bool(self.model), f"{key}.model", f"the {self.backend} backend needs {what}")
        if self.backend == "llama_cpp":
            _check(self.model.endswith(".gguf"), f"{key}.model",
                   f"the llama_cpp backend loads a .gguf file, got {self.model!r}")


@dataclass
class SynthConfig(ExecutorSettings):
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    passage_min_chars: int = 200  # seed passages: a few sentences, short enough for a small model
    passage_max_chars: int = 700
    max_passages_per_doc: int = 200  # spread over the document, so long books do not dominate
    eval_fraction: float = 0.1  # share of seed *documents* whose samples form the eval split
    compare_naive: int = 50  # per task, also generate this many naive samples (one fixed
    # prompt, no axes) on the same seeds, for the report's side-by-side diversity figures
    # samples per unit of work (one Ray task, one resumable file); with executor = "local"
    # the chunks run in this process (the generator already keeps requests in flight)
    chunk_size: int = 64
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    ocr: OcrTaskConfig = field(default_factory=OcrTaskConfig)
    rag: RagTaskConfig = field(default_factory=RagTaskConfig)
    qa: QaTaskConfig = field(default_factory=QaTaskConfig)
    summary: SummaryTaskConfig = field(default_factory=SummaryTaskConfig)

    def validate(self, key: str) -> None:
        for i, task in enumerate(self.tasks):
            _check(task in TASKS, f"{key}.tasks[{i}]",
                   f"unknown task {task!r} ({', '.join(TASKS)})")
        _check(self.passage_min_chars >= 20, f"{key}.passage_min_chars", "must be >= 20")
        _check(self.passage_max_chars > self.passage_min_chars, f"{key}.passage_max_chars",
               "must be > passage_min_chars")
        _check(self.max_passages_per_doc >= 1, f"{key}.max_passages_per_doc", "must be >= 1")
        _check(0 <= self.eval_fraction < 1, f"{key}.eval_fraction", "must be in [0, 1)")
        _check(self.compare_naive >= 0, f"{key}.compare_naive", "must be >= 0")
        _check(self.chunk_size >= 1, f"{key}.chunk_size", "must be >= 1")
        super().validate(key)
        self.generator.validate(f"{key}.generator")
        self.judge.validate(f"{key}.judge")
        for task in TASKS:
            getattr(self, task).validate(f"{key}.{task}")
        for task in TASKS:
            cfg = getattr(self, task)
            if task in self.tasks and getattr(cfg, "generator", "programmatic") == "llm":
                _check(self.generator.backend != "programmatic", f"{key}.{task}.generator",
                       "llm needs a [synth.generator] backend other than programmatic")
        if self.judge.enabled:
            _check(self.generator.backend != "programmatic", f"{key}.judge.enabled",
                   "the judge needs a [synth.generator] backend other than programmatic")

    def uses_llm(self, task: str) -> bool:
        """Whether `task`'s samples come from the LLM (else from its programmatic generator)."""
        choice = getattr(getattr(self, task), "generator", "programmatic")
        return choice == "llm" or (choice == "auto" and self.generator.backend != "programmatic")
