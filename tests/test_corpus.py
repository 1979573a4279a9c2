"""The third-party corpus (benchmarks/corpus/) is well-formed, and benchmarks/corpus.py runs on it.

Fast: every file is read by scan's readers (no detector runs) and only three small files are judged.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import corpus as cb  # noqa: E402
from supervisor.scan import load_file  # noqa: E402

ROOT = cb.CORPUS
DOC = cb.load_corpus()
FILES = DOC["files"]
BUDGET = 8 << 20  # bytes, the whole folder
FIELDS = ("file", "repo", "commit", "path", "license", "writer", "algorithm", "env", "label", "fault", "onset_step",
          "why", "cut", "half")


def test_every_file_listed_once_and_every_listed_file_present():
    listed = [e["file"] for e in FILES]
    assert len(listed) == len(set(listed))
    on_disk = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()}
    assert on_disk - {"corpus.json", "PROVENANCE.md", "README.md"} == set(listed)


def test_entries_are_complete_and_labels_valid():
    for e in FILES:
        assert tuple(e) == FIELDS, e["file"]
        assert re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", e["repo"]), e
        assert re.fullmatch(r"[0-9a-f]{40}", e["commit"]), e
        assert all(isinstance(e[k], str) and e[k].strip() for k in ("path", "license", "writer", "algorithm", "env",
                                                                       "why", "cut")), e
        assert e["label"] in cb.LABELS and e["half"] in cb.HALVES, e
        if e["label"] == "faulty":
            assert isinstance(e["fault"], str) and e["fault"] and isinstance(e["onset_step"], (int, float)), e
        else:
            assert e["fault"] is None and e["onset_step"] is None, e


def test_split_is_by_repository_disjoint_and_follows_its_rule():
    split = DOC["split"]
    assert {e["repo"] for e in FILES} == set(split)
    for e in FILES:
        assert e["half"] == split[e["repo"]]
    halves = {h: {e["repo"] for e in FILES if e["half"] == h} for h in cb.HALVES}
    assert halves["tuning"] and halves["held_out"] and not halves["tuning"] & halves["held_out"]
    batched = [f for b in DOC["split_batches"] for f in b]
    assert sorted(batched) == sorted(e["file"] for e in FILES)  # every file in exactly one batch
    assert cb.replay_split(DOC) == split  # the recorded split is the rule's, batch by batch; nothing hand-moved


def test_split_rule_is_append_only():
    extra = [{"repo": "someone/new-repo", "writer": "sb3-monitor"}]
    again = cb.assign_split(FILES + extra, DOC["split"])
    assert {r: again[r] for r in DOC["split"]} == DOC["split"] and again["someone/new-repo"] in cb.HALVES
    doc = {**DOC, "files": [dict(e) for e in FILES] + [{**FILES[-1], "file": "x/new.csv", "repo": "someone/new-repo"}],
           "split_batches": [list(b) for b in DOC["split_batches"]]}
    assert cb.assign_new_batch(doc) == ["x/new.csv"]
    assert {r: doc["split"][r] for r in DOC["split"]} == DOC["split"] and doc["split"]["someone/new-repo"] in cb.HALVES


def test_provenance_table_is_rendered_from_corpus_json():
    assert (ROOT / "PROVENANCE.md").read_text() == cb.render_provenance(DOC)


def test_size_budget():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total <= BUDGET, total


@pytest.mark.parametrize("entry", FILES, ids=[e["file"] for e in FILES])
def test_scan_reads_every_file(entry):
    log = load_file(ROOT / entry["file"])
    assert log.error is None and len(log.steps) >= 2, (entry["file"], log.error)
    if entry["label"] == "faulty":
        assert log.steps[0] <= max(entry["onset_step"], log.steps[0]) <= log.steps[-1], entry["file"]


def test_corpus_benchmark_runs_on_a_few_files():
    pick = ["sb3_monitor/zoo_td3_pendulum.monitor.csv", "baselines/ppo2_humanoidstandup_progress.csv",
            "hf_trainer_state/falcon_lora_imdb_trainer_state.json"]
    res, runs = cb.run_corpus(files=pick)
    assert sorted(r["file"] for r in runs) == sorted(pick)
    for r in runs:
        assert set(r["fired"]) == {cb.OURS} | {b.name for b in cb.BASELINES}
    by_half = {h: res["halves"][h] for h in cb.HALVES}
    assert sum(d["runs"] for d in by_half.values()) == 3
    assert sum(d["faulty"] for d in by_half.values()) == 1
    text = cb.render(res)
    assert "### tuning half" in text and "### held_out half" in text and "| supervisor |" in text
