#!/usr/bin/env python3
"""KG policies on the embedded logs: V̂ per model, entity ESS, reliable groups, and the
correlation of per-CoT values with answer correctness.

Usage (from the repository root, after two runs):
    ocean run --policy adjacency --out /tmp/adj
    ocean run --out /tmp/learned            # the embedded learned checkpoint
    python3 bench/policy_quality.py /tmp/adj /tmp/learned

A chain of thought is "correct" when it names a gold answer (data/gold/questions.jsonl, by the
request's metadata qid) by its label or by any alias of the answer entity in data/kg, as whole
words, case-insensitively. Prints one JSON object per run folder. Needs pyarrow.
"""
import glob
import json
import math
import re
import sys

import pyarrow.parquet as pq


def table(out, name):
    rows = []
    for f in sorted(glob.glob(f"{out}/{name}/**/*.parquet", recursive=True)):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def main():
    gold = {}
    for line in open("data/gold/questions.jsonl"):
        q = json.loads(line)
        gold[q["qid"]] = q
    aliases = {}
    for line in open("data/kg/entity_aliases.tsv"):
        parts = line.rstrip("\n").split("\t")
        aliases.setdefault(parts[0], []).extend(parts[1:])
    for out in sys.argv[1:]:
        gens = {g["cot_id"]: g for g in table(out, "generations")}
        scores = table(out, "cot_scores")
        xs, ys = [], []
        for s in scores:
            g = gens.get(s["cot_id"])
            if g is None:
                continue
            qid = json.loads(g["metadata"] or "{}").get("qid")
            if qid not in gold:
                continue
            names = set()
            for a in gold[qid]["answers"]:
                names.add(a["label"])
                names.update(aliases.get(a["id"], []))
            text = g["content"].lower()
            correct = any(re.search(r"\b" + re.escape(n.lower()) + r"\b", text) for n in names if n)
            xs.append(s["value"])
            ys.append(1.0 if correct else 0.0)
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
        sxx = sum((x - mx) ** 2 for x in xs)
        syy = sum((y - my) ** 2 for y in ys)
        r = sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")
        summary = json.load(open(f"{out}/summary.json"))
        models = [
            {
                "model": m["model"],
                "version": m["model_version"],
                "n": m["n"],
                "estimate": m["estimate"],
                "std_error": m["std_error"],
                "reliable": m["reliable"],
                "entity_ess": m["entity_ess"],
                "entity_tokens": m["n_entity_tokens"],
            }
            for m in summary["models"]
        ]
        policy = sorted({s["kg_policy"] for s in scores})
        print(json.dumps({
            "out": out,
            "kg_policy": policy,
            "models": models,
            "reliable_groups": sum(m["reliable"] for m in models),
            "groups": len(models),
            "cots_with_gold": n,
            "correct_share": my,
            "corr_value_correct": r,
        }))


if __name__ == "__main__":
    main()
