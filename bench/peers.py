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
import subprocess
import sys
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


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in PEERS:
        sys.exit(f"usage: python bench/peers.py {{{','.join(PEERS)}}}")
    print(peer_python(sys.argv[1]))


if __name__ == "__main__":
    main()
