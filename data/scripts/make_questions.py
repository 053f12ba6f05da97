#!/usr/bin/env python3
"""Generates 1-hop and 2-hop questions from the embedded KG, with gold answers and gold paths.

Usage: make_questions.py --kg data/kg --out data/gold/questions.jsonl [--n 240] [--seed 7]
Each line: {"qid", "question", "hops", "answers": [{"id", "label"}], "path": [[h, r, t], ...]}.
`path` is one gold KG path from the question's topic entity to the first answer.
"""
import argparse
import json
import random
from collections import defaultdict


def load(kg):
    label = {}
    for line in open(f"{kg}/entity_aliases.tsv"):
        parts = line.rstrip("\n").split("\t")
        label[parts[0]] = parts[1]
    out = defaultdict(lambda: defaultdict(list))
    for line in open(f"{kg}/triples.tsv"):
        h, r, t = line.rstrip("\n").split("\t")
        out[h][r].append(t)
    return label, out


THINK = " Think step by step."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kg", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    label, out = load(args.kg)
    countries = sorted(e for e in out if "P36" in out[e] and "P30" in out[e])
    capitals = sorted(e for e in out if "P1376" in out[e])
    cities = sorted(e for e in out if "P17" in out[e] and "P1376" not in out[e])

    def one(e, r):
        return sorted(out[e][r])

    makers = []

    def q_capital():
        c = rng.choice(countries)
        a = one(c, "P36")
        return f"What is the capital of {label[c]}?", 1, a, [[c, "P36", a[0]]]

    def q_city_country():
        x = rng.choice(cities)
        a = one(x, "P17")
        return f"In which country is the city of {label[x]}?", 1, a, [[x, "P17", a[0]]]

    def q_currency():
        c = rng.choice([c for c in countries if "P38" in out[c]])
        a = one(c, "P38")
        return f"What currency is used in {label[c]}?", 1, a, [[c, "P38", a[0]]]

    def q_language():
        c = rng.choice([c for c in countries if "P37" in out[c]])
        a = one(c, "P37")
        return f"What is an official language of {label[c]}?", 1, a, [[c, "P37", a[0]]]

    def q_continent():
        c = rng.choice(countries)
        a = one(c, "P30")
        return f"On which continent is {label[c]}?", 1, a, [[c, "P30", a[0]]]

    def two_hop(r2, text):
        def make():
            x = rng.choice([x for x in capitals if r2 in out[out[x]["P1376"][0]]])
            c = out[x]["P1376"][0]
            a = one(c, r2)
            return text.format(label[x]), 2, a, [[x, "P1376", c], [c, r2, a[0]]]
        return make

    def q_city_capital():
        x = rng.choice(cities)
        c = out[x]["P17"][0]
        a = one(c, "P36")
        q = f"What is the capital of the country where the city of {label[x]} is located?"
        return q, 2, a, [[x, "P17", c], [c, "P36", a[0]]]

    makers = [
        q_capital, q_city_country, q_currency, q_language, q_continent,
        two_hop("P37", "What is the official language of the country whose capital is {}?"),
        two_hop("P38", "What currency is used in the country whose capital is {}?"),
        two_hop("P30", "On which continent is the country whose capital is {}?"),
        q_city_capital,
    ]
    seen = set()
    rows = []
    while len(rows) < args.n:
        q, hops, answers, path = makers[len(rows) % len(makers)]()
        if q in seen:
            continue
        seen.add(q)
        rows.append({
            "qid": f"q{len(rows):04d}",
            "question": q + THINK,
            "hops": hops,
            "answers": [{"id": a, "label": label[a]} for a in answers],
            "path": path,
        })
    with open(args.out, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} questions -> {args.out}")


if __name__ == "__main__":
    main()
