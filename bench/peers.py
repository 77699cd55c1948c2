"""Each peer a bench measures fournil against runs in a virtual environment of its own.

Peers pin versions that the project's environment cannot take: LitGPT 0.5.13 pins
huggingface-hub < 1.4 where transformers 5.25 needs >= 2.4 (installed together, pip took
0.36.2 and transformers no longer imported); datatrove hashes `str` with xxhash, which
xxhash 4 refuses. Installed next to fournil they would break the
environment the tests and the other benches run in. So a bench asks `peer_python(peer)` for
the interpreter of `.bench-envs/<peer>/` (git-ignored), made here the first time and again
whenever what it should hold changes, and runs the peer's side in a subprocess with it.

A peer environment holds, resolved together by one `pip install`:
- the peer's packages at the versions the bench's results were measured with (`PEERS`);
- fournil itself, editable from this checkout, with its core dependencies: the peer's side
  reads the same input through fournil's code (the same token windows, the same corpus
  chunks), so the two sides cannot drift apart;
- the torch version of the environment running the bench, so that both sides run the same
  kernels (pip takes it from wherever it is configured to look: `PIP_FIND_LINKS`, an index).

    python bench/peers.py litgpt         # makes .bench-envs/litgpt if needed, prints its python
    $(python bench/peers.py datatrove) bench/filters_bench.py    # a whole bench in one
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
import venv
from importlib.metadata import version
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".bench-envs"

# the versions bench/README.md's results were measured with
PEERS: dict[str, list[str]] = {
    # litgpt.pretrain.setup, LitGPT's own training loop (bench/pretrain_bench.py)
    "litgpt": ["litgpt==0.5.13"],
    # datatrove's pipeline with spaCy's blank French word tokenizer and orjson (its JSON
    # reader), xxhash < 4 (it hashes str), py3langid for the language-ID comparison
    # (bench/curate_bench.py, bench/filters_bench.py)
    "datatrove": ["datatrove==0.10.1", "spacy==3.8.18", "orjson==3.13.0", "xxhash==3.8.2",
                  "py3langid==0.4.0"],
}


def requirements(peer: str) -> list[str]:
    """What `pip install` is given for a peer: the peer's pins, fournil from this checkout and
    the running torch (its public version: a local label such as +cpu names a build, which
    the configured index or links decide)."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r} (known: {', '.join(PEERS)})")
    torch = version("torch").split("+")[0]
    return [f"torch=={torch}", "-e", str(ROOT), *PEERS[peer]]


def _fournil_dependencies() -> list[str]:
    """The project's core dependencies: a change re-makes the environments, which would
    otherwise keep the old set under the editable install."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["project"]["dependencies"]


def peer_python(peer: str) -> Path:
    """The python of `peer`'s environment, made (once, under a lock) when missing or when
    its requirements changed. Raises RuntimeError naming pip's log when pip fails."""
    wanted = {"python": sys.version.split()[0], "requirements": requirements(peer),
              "fournil_dependencies": _fournil_dependencies()}
    env = ENVS / peer
    python = env / "bin" / "python"
    done = env / "fournil-peer.json"  # written last: a half-made environment has none
    ENVS.mkdir(exist_ok=True)
    with open(ENVS / f"{peer}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benches at once make it once
        if done.exists() and json.loads(done.read_text()) == wanted:
            return python
        log = ENVS / f"{peer}.log"
        print(f"making the {peer} environment in {env} (once; pip's log: {log})",
              file=sys.stderr, flush=True)
        venv.EnvBuilder(clear=True, with_pip=True, system_site_packages=False).create(env)
        command = [str(python), "-m", "pip", "install", "--disable-pip-version-check",
                   *wanted["requirements"]]
        with open(log, "w") as out:
            out.write(" ".join(command) + "\n")
            out.flush()
            status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
        if status != 0:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pip could not make the {peer} environment in {env} "
                               f"(exit {status}); the end of {log}:\n{tail}")
        partial = done.with_suffix(".partial")
        partial.write_text(json.dumps(wanted, indent=1))
        os.replace(partial, done)
        return python


def in_fresh_process(script: str, name: str, setup: dict, work: Path,
                     python: Path | None = None) -> dict:
    """One side of a bench in a new interpreter (`python script --run NAME --work WORK`, the
    setup in WORK/setup.json, its result read from WORK/result.json, `wall_s` added): its
    imports, threads, caches and allocator do not leak into the next side."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "setup.json").write_text(json.dumps(setup))
    command = [str(python or sys.executable), script, "--run", name, "--work", str(work)]
    started = time.perf_counter()
    if subprocess.run(command).returncode != 0:
        log = (work / "stderr.log").read_text(encoding="utf-8", errors="replace")
        sys.exit(f"{name} failed; the end of {work / 'stderr.log'}:\n{log[-3000:]}")
    result = json.loads((work / "result.json").read_text())
    result["wall_s"] = time.perf_counter() - started
    return result


def isolate_side(threads: int, seed: int, work: Path) -> None:
    """In a side's process: the same threads and seed as every side; logs, progress bars and
    warnings to WORK/stderr.log; anything that tries the network fails loudly. (torch is
    imported here: this file also runs where it is not installed, to make the envs.)"""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "stderr.log", "w")  # noqa: SIM115 - open for the process's lifetime
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log


def trainer_step_clock() -> tuple[object, list[float]]:
    """(a transformers TrainerCallback, the clock readings it takes): one before the first
    step, then one at the end of each step, for the HF Trainer sides' step times."""
    from transformers import TrainerCallback

    ended: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs) -> None:
            if not ended:
                ended.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs) -> None:
            ended.append(time.perf_counter())

    return Stamp(), ended


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in PEERS:
        sys.exit(f"usage: python bench/peers.py {{{','.join(PEERS)}}}")
    print(peer_python(sys.argv[1]))


if __name__ == "__main__":
    main()
