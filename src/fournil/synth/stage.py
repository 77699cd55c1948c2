"""The synth stage: seed-grounded synthetic samples, verified, with provenance.

1. Seed passages are cut from the curate stage's kept documents (`seeds.py`); each carries
   its document's id, license and split (train/eval by document).
2. Every task plans its samples: a passage per sample, spread round-robin over documents,
   one value per constraint axis, and other passages of the same split (distractors, foreign
   subjects). With `compare_naive = N`, the first N passages are planned again in naive
   mode (one fixed prompt, no axes), for the report's side-by-side diversity figures.
3. Samples are made in chunks of `chunk_size` (on this process, or as Ray tasks): the
   license gate on the seed, the LLM requests of the whole chunk in one batch (the generator
   spreads them over its endpoints; its cache makes a re-run free), drafting, verification,
   the optional judge, the license gate on the derived license. Each chunk is written whole
   (temp + rename), so an interrupted run started again redoes only the missing chunks.
4. The chunks are gathered into `samples/<task>-<split>-NNNNN.parquet`, `rejected/` (with
   `reason` and every check's result) and `naive/`; `report.md` / `report.json` and the
   manifest count everything: per task, kept + rejected == generated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import TypedDict

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from fournil.core.executors import make_executor, resumable_dir
from fournil.core.settings import RUN_SETTINGS as EXECUTOR_SETTINGS
from fournil.core.shards import ShardWriter
from fournil.core.stage import Context, Manifest, Stage, hash_json, upstream_hash, write_json_atomic
from fournil.provenance.licenses import DEFAULT_ALLOWED, check_license
from fournil.synth.axes import draw_axes, sample_rng
from fournil.synth.backends import make_generator
from fournil.synth.config import SynthConfig
from fournil.synth.generator import Generator
from fournil.synth.judge import judge
from fournil.synth.license import derive_license
from fournil.synth.report import TaskCounts, TaskTally, write_report
from fournil.synth.sample import (
    CHUNK_SCHEMA,
    REJECTED_SAMPLE_SCHEMA,
    SAMPLE_SCHEMA,
    Draft,
    Item,
    Rejection,
    to_row,
)
from fournil.synth.seeds import Passage, iter_passages
from fournil.synth.tasks import get_task
from fournil.synth.verify import first_failure

log = logging.getLogger("fournil")

# where the work runs and how fast, not what it makes
RUN_SETTINGS = (*EXECUTOR_SETTINGS, "chunk_size")
GENERATOR_RUN_SETTINGS = ("base_url", "api_key_env", "concurrency", "max_retries", "timeout_s",
                          "backoff_s")
OTHERS = {"rag": 24, "qa": 4, "summary": 4}  # other passages an item carries, per task


class SynthCounts(TypedDict):
    tasks: dict[str, TaskCounts]
    generated: int
    kept: int
    rejected: int
    by_license: dict[str, int]
    by_split: dict[str, int]


class SynthManifest(Manifest):
    counts: SynthCounts
    passages: int  # seed passages cut from the curated documents
    executor: str


def run(ctx: Context) -> SynthManifest | None:
    """`fournil synth` and bake: samples grounded in the run's curated documents, under the
    recipe's license policy (the verb's --executor overrides where chunks run)."""
    config = ctx.recipe.synth
    if ctx.option("executor"):
        config = dataclasses.replace(config, executor=ctx.option("executor"))
    return run_synth(ctx.documents(), ctx.out("synth"), config, ctx.recipe.seed,
                     allowed_licenses=ctx.recipe.curate.allowed_licenses)


# --- planning -------------------------------------------------------------------------------

def _round_robin(passages: list[Passage], seed: int, task: str) -> list[Passage]:
    """Passages ordered so consecutive samples come from different documents, each document's
    passages shuffled: the first N samples cover as many documents as possible."""
    rng = random.Random(f"{seed}:{task}")
    by_doc: dict[str, list[Passage]] = defaultdict(list)
    for p in passages:
        by_doc[p.doc_id].append(p)
    docs = sorted(by_doc)
    rng.shuffle(docs)
    for doc in docs:
        rng.shuffle(by_doc[doc])
    order, depth = [], 0
    while len(order) < len(passages):
        order += [by_doc[d][depth] for d in docs if depth < len(by_doc[d])]
        depth += 1
    return order


def _others(passage: Passage, pool: list[Passage], k: int, rng: random.Random) -> list[Passage]:
    """Up to `k` passages of other documents from the same split."""
    if k == 0 or len(pool) < 2:
        return []
    picked: dict[str, Passage] = {}
    for _ in range(4 * k):  # a random draw is cheap; skip the seed's own document
        p = pool[rng.randrange(len(pool))]
        if p.doc_id != passage.doc_id:
            picked[p.id] = p
        if len(picked) == k:
            break
    return sorted(picked.values(), key=lambda p: p.id)


def plan_items(passages: list[Passage], task: str, config: SynthConfig, seed: int
               ) -> list[Item]:
    """The task's controlled items, then its naive ones (the first `compare_naive` seeds)."""
    count = getattr(config, task).samples
    if not passages or count == 0:
        return []
    order = _round_robin(passages, seed, task)
    by_split: dict[str, list[Passage]] = defaultdict(list)
    for p in passages:
        by_split[p.split].append(p)
    items = []
    naive = min(config.compare_naive, count)
    for mode, n in (("controlled", count), ("naive", naive)):
        for i in range(n):
            passage = order[i % len(order)]
            rng = sample_rng(seed, task, mode, i, passage.id)
            axes = draw_axes(getattr(config, task).axes, rng) if mode == "controlled" else {}
            others = _others(passage, by_split[passage.split], OTHERS.get(task, 0), rng)
            tag = hash_json([seed, task, mode, i, passage.id])[:8]
            items.append(Item(f"{task}-{mode[0]}{i:06d}-{tag}", task, mode, passage, others,
                              axes, rng.getrandbits(48)))
    return items


# --- one chunk ------------------------------------------------------------------------------

@dataclasses.dataclass
class ChunkJob:
    name: str  # "<task>-<index>": the chunk file's name
    task: str
    items: list[Item]
    config: SynthConfig
    allowed: tuple[str, ...]
    out_dir: str
    cache_dir: str | None


def _reject_row(item: Item, reason: str, generator: str = "programmatic", **meta: object
                ) -> dict:
    draft = Draft([], meta, [item.passage], generator=generator)
    license = derive_license(p.license for p in draft.seeds)
    return to_row(item, draft, license, reason)


def process_chunk(job: ChunkJob, generator: Generator) -> dict:
    """Make, verify and write one chunk's samples; returns its LLM statistics."""
    config, task = job.config, get_task(job.task)
    rows: dict[int, dict] = {}
    drafts: dict[int, Draft] = {}
    requests: dict[int, object] = {}
    for k, item in enumerate(job.items):
        if reason := check_license(item.passage.license, job.allowed):
            rows[k] = _reject_row(item, reason)
            continue
        try:
            if (request := task.request(item, config)) is not None:
                requests[k] = request
        except Rejection as e:
            rows[k] = _reject_row(item, e.reason, error=e.detail)
    stats = Counter()
    replies: dict[int, str | None] = {}
    if requests:
        results = generator.generate(list(requests.values()), progress=False)
        for k, result in zip(requests, results, strict=True):
            stats["requests"] += 1
            stats["cached"] += result.cached
            stats["failed"] += result.text is None
            stats["completion_tokens"] += result.completion_tokens
            if result.text is None:
                rows[k] = _reject_row(job.items[k], "generate:failed", generator.id,
                                      error=result.error)
            replies[k] = result.text
    for k, item in enumerate(job.items):
        if k in rows:
            continue
        try:
            draft = task.draft(item, replies.get(k), config, generator.id)
        except Rejection as e:
            llm = replies.get(k) is not None
            rows[k] = _reject_row(item, e.reason, generator.id if llm else "programmatic",
                                  error=e.detail, reply=replies.get(k))
            continue
        draft.checks = task.verify(item, draft, config)
        drafts[k] = draft
    judged = [k for k, d in drafts.items() if config.judge.enabled
              and job.task in config.judge.tasks and first_failure(d.checks) is None]
    if judged:
        pairs = [(drafts[k].messages[-2]["content"], drafts[k].messages[-1]["content"])
                 for k in judged]
        for k, verdict in zip(judged, judge(generator, pairs, config.judge.threshold,
                                            max_tokens=config.judge.max_tokens), strict=True):
            drafts[k].checks["judge"] = verdict.passed
            drafts[k].meta["judge"] = {"score": verdict.score, "reply": verdict.reply,
                                       "error": verdict.error}
            stats["judged"] += 1
    for k, draft in drafts.items():
        license = derive_license(p.license for p in draft.seeds)
        reason = first_failure(draft.checks)
        if reason == "verify:judge":
            reason = "judge:low_score" if draft.meta["judge"]["score"] else "judge:no_score"
        reason = reason or check_license(license, job.allowed)
        rows[k] = to_row(job.items[k], draft, license, reason)
    table = pa.Table.from_pylist([rows[k] for k in range(len(job.items))], schema=CHUNK_SCHEMA)
    out = Path(job.out_dir)
    write_json_atomic(out / f"{job.name}.json", dict(stats))
    tmp = out / f"{job.name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out / f"{job.name}.parquet")  # last: its presence means the chunk is done
    return dict(stats)


def _run_chunk(job: ChunkJob) -> dict:
    """A chunk on a Ray worker: it builds its own generator (and opens the shared cache)."""
    generator = make_generator(job.config.generator,
                               Path(job.cache_dir) if job.cache_dir else None)
    return process_chunk(job, generator)


# --- the stage ------------------------------------------------------------------------------

def _params(config: SynthConfig, seed: int, allowed: tuple[str, ...]) -> dict:
    params = {k: v for k, v in dataclasses.asdict(config).items() if k not in RUN_SETTINGS}
    params["generator"] = {k: v for k, v in params["generator"].items()
                           if k not in GENERATOR_RUN_SETTINGS}
    return {**params, "seed": seed, "allowed_licenses": sorted(allowed)}


def _needs_llm(config: SynthConfig) -> bool:
    return config.judge.enabled or any(config.uses_llm(t) for t in config.tasks)


def run_synth(curate_dir: Path, out_dir: Path, config: SynthConfig, seed: int = 0,
              allowed_licenses: tuple[str, ...] | list[str] = DEFAULT_ALLOWED,
              cache_dir: Path | None = None, stop_after: int | None = None
              ) -> SynthManifest | None:
    """Make the synthetic samples of `config.tasks` from the documents of a completed curate
    stage into `out_dir`. LLM generations are cached in `cache_dir` (default: `<out_dir>.cache`
    next to the stage), so a re-run pays nothing for them. `stop_after`: return None after
    that many chunks, leaving the rest for the next call (which resumes)."""
    config.validate("synth")
    out_dir = Path(out_dir)
    allowed = tuple(allowed_licenses)
    cache_dir = Path(cache_dir) if cache_dir else out_dir.with_name(out_dir.name + ".cache")
    stage = Stage("synth", out_dir, inputs={"curate": upstream_hash(curate_dir)},
                  params=_params(config, seed, allowed))
    if manifest := stage.done():
        return manifest
    work = stage.start(resume=True)
    passages = list(iter_passages(curate_dir, config.passage_min_chars,
                                  config.passage_max_chars, config.eval_fraction,
                                  config.max_passages_per_doc))
    if not passages:
        raise ValueError(f"{curate_dir}: no seed passages of {config.passage_min_chars}-"
                         f"{config.passage_max_chars} characters in the curated documents")
    jobs: list[ChunkJob] = []
    chunk_dir = work / "chunks"
    for task in config.tasks:
        items = plan_items(passages, task, config, seed)
        for start in range(0, len(items), config.chunk_size):
            jobs.append(ChunkJob(f"{task}-{start // config.chunk_size:05d}", task,
                                 items[start:start + config.chunk_size], config, allowed,
                                 str(chunk_dir), str(cache_dir)))
    resumable_dir(chunk_dir, {j.name: [i.id for i in j.items] for j in jobs})
    todo = [j for j in jobs if not (chunk_dir / f"{j.name}.parquet").exists()]
    if stop_after is not None:
        todo = todo[:stop_after]
    log.info("synth: %d passages, %d chunks (%d to do)", len(passages), len(jobs), len(todo))
    if config.executor == "ray" and todo:
        with make_executor("ray", config.workers, config.ray_address) as executor:
            executor.map(_run_chunk, todo, labels=[j.name for j in todo], desc="synth")
    elif todo:
        generator = make_generator(config.generator, cache_dir if _needs_llm(config) else None)
        for job in tqdm(todo, desc="synth", unit="chunk", mininterval=1.0):
            process_chunk(job, generator)
    if any(not (chunk_dir / f"{j.name}.parquet").exists() for j in jobs):
        return None  # stopped early: the next call resumes
    counts, report = _gather(work, jobs, config)
    write_report(work, report)
    shutil.rmtree(chunk_dir)
    return stage.finish(counts, passages=len(passages), executor=config.executor)


def _gather(work: Path, jobs: list[ChunkJob], config: SynthConfig
            ) -> tuple[SynthCounts, dict]:
    """Chunks -> samples/, rejected/, naive/; the counts and what the report needs."""
    tallies: dict[str, TaskTally] = {}
    writers: dict[tuple[str, str], ShardWriter] = {}
    try:
        for job in jobs:
            tally = tallies.setdefault(job.task, TaskTally(job.task, getattr(config, job.task)))
            tally.add_llm(json.loads((work / "chunks" / f"{job.name}.json").read_text()))
            for row in pq.read_table(work / "chunks" / f"{job.name}.parquet").to_pylist():
                mode = row.pop("mode")
                tally.add(row, mode)
                if mode == "naive":  # kept or not, for the comparison only: never training data
                    kind, schema, prefix = "naive", REJECTED_SAMPLE_SCHEMA, job.task
                elif row["reason"] is None:
                    kind, schema, prefix = "samples", SAMPLE_SCHEMA, f"{job.task}-{row['split']}"
                    row = {k: row[k] for k in SAMPLE_SCHEMA.names}
                else:
                    kind, schema, prefix = "rejected", REJECTED_SAMPLE_SCHEMA, job.task
                if (kind, prefix) not in writers:
                    writers[(kind, prefix)] = ShardWriter(work / kind, schema, prefix=prefix)
                writers[(kind, prefix)].write(row)
    finally:
        for writer in writers.values():
            writer.close()
    counts = {"tasks": {name: t.counts() for name, t in tallies.items()}}
    counts["generated"] = sum(c["generated"] for c in counts["tasks"].values())
    counts["kept"] = sum(c["kept"] for c in counts["tasks"].values())
    counts["rejected"] = sum(sum(c["rejected"].values()) for c in counts["tasks"].values())
    counts["by_license"] = dict(sum((Counter(c["by_license"]) for c in counts["tasks"].values()),
                                    Counter()))
    counts["by_split"] = dict(sum((Counter(c["by_split"]) for c in counts["tasks"].values()),
                                  Counter()))
    for name, c in counts["tasks"].items():
        if c["kept"] + sum(c["rejected"].values()) != c["generated"]:
            raise AssertionError(f"synth lost samples of task {name}: {c}")
    return counts, {name: t.report() for name, t in tallies.items()}
