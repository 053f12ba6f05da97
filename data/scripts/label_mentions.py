"""Builds the labelled mention set data/gold/mentions.jsonl (issue 12, deliverable 5).

Procedure (documented in data/README.md):
  1. `ocean run --out DIR` on the embedded data pre-annotates every question and chain of thought.
  2. A person reads each selected chain of thought in full, beside the KG's aliases, and writes
     what the pre-annotation got wrong into data/gold/mention_corrections.txt.
  3. This script applies the corrections to the pre-annotation and writes the labels:

       python3 data/scripts/label_mentions.py DIR data/gold/mention_corrections.txt \
           > data/gold/mentions.jsonl

Corrections file: `@ FILE:LINE` starts a chain of thought (log file stem, 1-based line); every
chain named is in the set, with or without edits. Edits, applied in order, to the chain of
thought (or to the question with a `q:` prefix on the surface):
  - SURFACE[#K]           remove the mentions written SURFACE (only the K-th, counted among
                          the mentions as they stand at that edit)
  = SURFACE[#K] ENTITY    give them ENTITY instead
  + SURFACE ENTITY        add every whole-word occurrence of SURFACE not already a mention
Needs pyarrow. The output is the truth; re-running with a different linker gives different
pre-annotations, so the corrections only reproduce the labels with the linker of the commit that
built them.
"""

import glob
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def load_mentions(out):
    files = glob.glob(f"{out}/mentions/**/*.parquet", recursive=True)
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    by = {}
    for r in rows:
        by.setdefault((r["cot_id"], r["part"]), []).append(
            {"start": r["char_start"], "end": r["char_end"], "surface": r["surface"], "entity": r["entity_id"]}
        )
    return by


def parse_corrections(path):
    chains, current = [], None
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@ "):
            stem, line_no = line[2:].rsplit(":", 1)
            current = {"file": stem, "line": int(line_no), "edits": []}
            chains.append(current)
            continue
        op, rest = line[0], line[1:].strip()
        if op not in "-=+" or current is None:
            sys.exit(f"{path}:{n}: cannot read {raw!r}")
        if op == "-":
            surface, entity = rest, None
        else:
            surface, entity = rest.rsplit(" ", 1)
        part = "question" if surface.startswith("q:") else "cot"
        surface = surface[2:] if part == "question" else surface
        k = None
        if op != "+" and "#" in surface:
            surface, k = surface.rsplit("#", 1)
            k = int(k)
        current["edits"].append((op, part, surface, k, entity))
    return chains


def whole_word(text, start, end):
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not before.isalnum() and not after.isalnum()


def apply(edit, mentions, text, where):
    op, _, surface, k, entity = edit
    if op == "+":
        added, at = 0, text.find(surface)
        while at >= 0:
            end = at + len(surface)
            free = all(m["end"] <= at or m["start"] >= end for m in mentions)
            if whole_word(text, at, end) and free:
                mentions.append({"start": at, "end": end, "surface": surface, "entity": entity})
                added += 1
            at = text.find(surface, at + 1)
        if not added:
            sys.exit(f"{where}: '+ {surface}' matches nothing")
        return mentions
    hits = [i for i, m in enumerate(mentions) if m["surface"] == surface]
    if k is not None:
        hits = hits[k - 1 : k]
    if not hits:
        sys.exit(f"{where}: '{op} {surface}' matches no mention")
    if op == "-":
        return [m for i, m in enumerate(mentions) if i not in hits]
    for i in hits:
        mentions[i]["entity"] = entity
    return mentions


def main():
    out, corrections = sys.argv[1], sys.argv[2]
    pre = load_mentions(out)
    lines = {}
    for chain in parse_corrections(corrections):
        stem = chain["file"]
        if stem not in lines:
            lines[stem] = open(f"data/logs/{stem}.jsonl", encoding="utf-8").read().splitlines()
        record = json.loads(lines[stem][chain["line"] - 1])
        cot_id = record["response"]["id"]
        texts = {
            "question": [m for m in record["request"]["messages"] if m["role"] == "user"][-1]["content"],
            "cot": record["response"]["choices"][0]["message"]["content"],
        }
        labels = {part: sorted(pre.get((cot_id, part), []), key=lambda m: m["start"]) for part in texts}
        where = f"{stem}:{chain['line']}"
        for edit in chain["edits"]:
            part = edit[1]
            labels[part] = sorted(apply(edit, labels[part], texts[part], where), key=lambda m: m["start"])
        for part, ms in labels.items():
            for m in ms:
                assert texts[part][m["start"] : m["end"]] == m["surface"], (where, m)
        print(
            json.dumps(
                {
                    "cot_id": cot_id,
                    "file": f"{stem}.jsonl",
                    "line": chain["line"],
                    "qid": record["request"]["metadata"]["qid"],
                    "edits": len(chain["edits"]),
                    "question": labels["question"],
                    "cot": labels["cot"],
                },
                ensure_ascii=False,
            )
        )


if __name__ == "__main__":
    main()
