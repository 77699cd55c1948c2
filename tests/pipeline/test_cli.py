"""The `fournil` command as a user runs it: help, errors that name the problem, generate."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fournil.stages import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
# bake, a verb per stage in pipeline order (a stage added to STAGES is a verb with no edit
# here), then the verbs that use a model
VERBS = ["bake", *STAGE_NAMES, "generate", "serve", "chat", "ask"]


def fournil(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fournil", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_help_lists_every_verb():
    out = fournil("--help")
    assert out.returncode == 0
    # every stage of STAGES is a verb, in pipeline order
    assert re.findall(r"^    (\w+) ", out.stdout, flags=re.M) == VERBS


def test_an_old_stage_name_is_an_error_that_lists_the_verbs():
    out = fournil("tokenize", "--help")  # the stage is `tokens` now
    assert out.returncode == 2 and "invalid choice: 'tokenize'" in out.stderr
    assert "'tokens'" in out.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_explains_itself(verb):
    out = fournil(verb, "--help")
    assert out.returncode == 0 and "usage: fournil " + verb in out.stdout


def test_bad_recipe_value_is_a_clear_error(tmp_path):
    out = fournil("curate", "-r", str(ROOT / "recipes" / "smoke.toml"),
                  "--set", "curate.min_chars=-5", "--run-dir", str(tmp_path))
    assert out.returncode == 2
    assert "curate.min_chars: must be >= 0" in out.stderr


def test_a_cut_gzip_is_one_rejection_and_strict_stops_at_it(tmp_path):
    good = b'{"text": "Bonjour, ceci est un document."}\n' * 2000
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(gzip.compress(good)[:-30])
    args = ("ingest", str(bad), "--name", "web", "--license", "CC-BY-4.0")
    out = fournil(*args, "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert "cut.jsonl.gz: line" in out.stderr and "ingest:truncated" in out.stderr
    counts = json.loads(out.stdout)
    assert counts["rejected"] == {"ingest:truncated": 1}
    assert counts["kept"] > 0 and counts["kept"] + 1 == counts["read"]
    out = fournil(*args, "--strict", "--out", str(tmp_path / "strict"))
    assert out.returncode == 2
    assert "cut.jsonl.gz" in out.stderr and "gzip" in out.stderr
    assert not (tmp_path / "strict").exists()


def test_generate_from_the_export(smoke_bake):
    summary, _ = smoke_bake
    args = ("generate", "Le roi", "--model", summary["export"], "--max-new-tokens", "8",
            "--seed", "1")
    first, second = fournil(*args), fournil(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Le roi") and first.stdout == second.stdout
