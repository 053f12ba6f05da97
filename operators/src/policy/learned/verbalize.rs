//! Verbalization: a walk becomes a question whose answer is its end entity and a chain of
//! thought that states each hop (ours: relation-alias templates in place of the paper's GPT-4
//! verbalizer).
//!
//! A hop states its triple `(h, r, t)` in natural order whichever way the walk read it, with an
//! alias of `r` drawn per hop and one alias per entity drawn per example. An alias is read as
//! * a relational noun ("capital"): "The capital of h is t." / "h's capital is t." / "h has the
//!   capital t.";
//! * an "… of" phrase ("capital of"): "h is the capital of t.";
//! * a verb phrase (first word a verb: "is in", "borders", "uses the currency"): "h is in t.";
//!   a participle ("located in …") gets "is": "h is located in t.".
//!
//! The question nests the hops from e₀ ("What is the capital of the country of Takeo?"), with
//! generic phrasings where a relation has no noun alias. Connectors ("First,", "Then"), the
//! separator of steps (space or blank line) and the closing line ("So the answer is t.") vary.

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use super::walks::{Ent, Hop, KgGraph, Rel, Walk};

/// A verbalized walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The question q.
    pub question: String,
    /// The chain of thought y.
    pub cot: String,
}

const VERBS: [&str; 22] = [
    "is",
    "are",
    "was",
    "has",
    "have",
    "uses",
    "use",
    "speaks",
    "speak",
    "shares",
    "share",
    "borders",
    "border",
    "neighbours",
    "neighbors",
    "pays",
    "lies",
    "belongs",
    "contains",
    "includes",
    "flows",
    "follows",
];
const PARTICIPLES: [&str; 5] = ["located", "situated", "spoken", "used", "found"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Form {
    Noun,
    Of,
    Verb,
    Participle,
}

fn form(alias: &str) -> Form {
    let first = alias.split_whitespace().next().unwrap_or("");
    // A verb phrase first: "is the capital of" is a whole predicate, not a noun "… of".
    if VERBS.contains(&first) {
        Form::Verb
    } else if alias.ends_with(" of") {
        Form::Of
    } else if PARTICIPLES.contains(&first) {
        Form::Participle
    } else {
        Form::Noun
    }
}

fn relation_label(g: &KgGraph, r: Rel) -> Vec<String> {
    let aliases = g.relation_aliases(r);
    if aliases.is_empty() {
        vec![g.relation_id(r).to_owned()]
    } else {
        aliases.to_vec()
    }
}

/// The sentence stating `(h, alias, t)`; `template(n)` picks one of n templates (noun aliases).
pub(super) fn sentence(h: &str, alias: &str, t: &str, mut template: impl FnMut(i32) -> usize) -> String {
    match form(alias) {
        Form::Of => format!("{h} is the {alias} {t}."),
        Form::Verb => format!("{h} {alias} {t}."),
        Form::Participle => format!("{h} is {alias} {t}."),
        Form::Noun => match template(3) {
            0 => format!("The {alias} of {h} is {t}."),
            1 => format!("{h}'s {alias} is {t}."),
            _ => format!("{h} has the {alias} {t}."),
        },
    }
}

/// The descriptor of the entity one hop from `d`: "the capital of d", …
fn descriptor(g: &KgGraph, hop: &Hop, d: &str) -> String {
    let aliases = relation_label(g, hop.relation);
    let noun = aliases.iter().find(|a| form(a) == Form::Noun);
    let of = aliases.iter().find(|a| form(a) == Form::Of);
    match (hop.forward, noun, of) {
        (true, Some(n), _) => format!("the {n} of {d}"),
        (false, _, Some(o)) => format!("the {o} {d}"),
        (false, Some(n), _) => format!("the entity whose {n} is {d}"),
        (true, _, Some(o)) => format!("the entity that {d} is the {o}"),
        (true, None, None) => format!("what {d} {}", aliases[0]),
        (false, None, None) => format!("what {} {d}", aliases[0]),
    }
}

/// Where a verbalization makes a random choice. A corrupted walk (one entity or one relation
/// swapped, [`corrupt`]) has the same slots as its true walk, so replaying the true walk's
/// choices slot by slot phrases the two alike: the same templates, connectors and separators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// The alias of the k-th entity named (in the order they are first named).
    Name(usize),
    /// The question's phrasing.
    Question,
    /// Whether "Think step by step." follows the question.
    Think,
    /// The relation alias of hop i.
    Relation(usize),
    /// The sentence template of hop i (noun aliases).
    Template(usize),
    /// The connector before hop i's sentence.
    Connector(usize),
    /// The closing line.
    Close,
    /// The separator of steps.
    Separator,
}

/// The random choices of one verbalization: drawn from a generator (each draw exactly as
/// `slice.choose`, `gen_range` and `gen_bool` make it, so the corpus does not depend on the
/// recording) and recorded by slot, or replayed from such a record (an index taken modulo the
/// number of options; a slot the record lacks takes the first option).
struct Choices<'a> {
    rng: Option<&'a mut dyn RngCore>,
    record: Vec<(Slot, u32)>,
}

impl Choices<'_> {
    /// An index into `len` options (`None` when there are none; no draw then, like `choose`).
    fn index(&mut self, slot: Slot, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        Some(match &mut self.rng {
            Some(rng) => {
                let i = rng.gen_range(0..len as u32);
                self.record.push((slot, i));
                i as usize
            }
            None => self.replayed(slot) as usize % len,
        })
    }

    /// `gen_range(0..n)`.
    fn range(&mut self, slot: Slot, n: i32) -> usize {
        match &mut self.rng {
            Some(rng) => {
                let i = rng.gen_range(0..n);
                self.record.push((slot, i as u32));
                i as usize
            }
            None => self.replayed(slot) as usize % n as usize,
        }
    }

    /// `gen_bool(0.5)`.
    fn coin(&mut self, slot: Slot) -> bool {
        match &mut self.rng {
            Some(rng) => {
                let b = rng.gen_bool(0.5);
                self.record.push((slot, u32::from(b)));
                b
            }
            None => self.replayed(slot) == 1,
        }
    }

    fn replayed(&self, slot: Slot) -> u32 {
        self.record.iter().find(|(s, _)| *s == slot).map_or(0, |&(_, i)| i)
    }
}

/// Verbalizes `walk` with the random choices of `rng`.
pub fn verbalize(g: &KgGraph, walk: &Walk, rng: &mut impl Rng) -> Example {
    let mut choices = Choices { rng: Some(rng), record: Vec::new() };
    render(g, walk, &mut choices)
}

/// Verbalizes `walk` with the random choices of `rng` (as [`verbalize`]) and `other`, a walk of
/// the same length ([`corrupt`]), with the same choices: the two texts differ only where the
/// walks do.
pub fn verbalize_pair(g: &KgGraph, walk: &Walk, other: &Walk, rng: &mut impl Rng) -> (Example, Example) {
    let mut choices = Choices { rng: Some(rng), record: Vec::new() };
    let first = render(g, walk, &mut choices);
    let mut replay = Choices { rng: None, record: choices.record };
    (first, render(g, other, &mut replay))
}

fn render(g: &KgGraph, walk: &Walk, choices: &mut Choices<'_>) -> Example {
    let mut names: Vec<(Ent, String)> = Vec::new();
    let mut name = |e: Ent, choices: &mut Choices<'_>| -> String {
        if let Some((_, n)) = names.iter().find(|(x, _)| *x == e) {
            return n.clone();
        }
        let aliases = g.aliases(e);
        let n = choices
            .index(Slot::Name(names.len()), aliases.len())
            .map_or_else(|| g.entity_id(e).to_owned(), |i| aliases[i].clone());
        names.push((e, n.clone()));
        n
    };
    let start = name(walk.start, choices);
    let end = name(walk.end(), choices);

    // The question.
    let question = if walk.hops.len() == 1 && walk.hops[0].forward {
        let aliases = relation_label(g, walk.hops[0].relation);
        match aliases.iter().find(|a| form(a) == Form::Noun) {
            Some(n) => match choices.range(Slot::Question, 3) {
                0 => format!("What is the {n} of {start}?"),
                1 => format!("Which {n} does {start} have?"),
                _ => format!("Name the {n} of {start}."),
            },
            None => format!("What is {}?", descriptor(g, &walk.hops[0], &start)),
        }
    } else {
        let mut d = start.clone();
        for hop in &walk.hops {
            d = descriptor(g, hop, &d);
        }
        format!("What is {d}?")
    };
    let question = if choices.coin(Slot::Think) { format!("{question} Think step by step.") } else { question };

    // The chain of thought.
    let mut steps = Vec::with_capacity(walk.hops.len() + 1);
    let mut at = walk.start;
    for (i, hop) in walk.hops.iter().enumerate() {
        let (h, t) = if hop.forward { (at, hop.to) } else { (hop.to, at) };
        let labels = relation_label(g, hop.relation);
        let alias = choices.index(Slot::Relation(i), labels.len()).map(|k| labels[k].clone()).unwrap_or_default();
        let (hn, tn) = (name(h, choices), name(t, choices));
        let s = sentence(&hn, &alias, &tn, |n| choices.range(Slot::Template(i), n));
        let connectors: &[&str] =
            if i == 0 { &["", "First, ", "We know that "] } else { &["", "Then ", "Next, ", "And "] };
        let c = connectors[choices.index(Slot::Connector(i), connectors.len()).unwrap_or(0)];
        let s = if !c.is_empty() && s.starts_with("The ") { format!("{c}the {}", &s[4..]) } else { format!("{c}{s}") };
        steps.push(s);
        at = hop.to;
    }
    let close = match choices.range(Slot::Close, 4) {
        0 => format!("So the answer is {end}."),
        1 => format!("Therefore the answer is {end}."),
        2 => format!("The answer is {end}."),
        _ => format!("So, {end}."),
    };
    steps.push(close);
    let sep = if choices.coin(Slot::Separator) { " " } else { "\n\n" };
    Example { question, cot: steps.join(sep) }
}

/// A corrupted copy of `walk`: one entity (replaced by another of the same type) or one relation
/// (replaced by another relation) swapped, or `None` when the KG offers no replacement.
pub fn corrupt(g: &KgGraph, walk: &Walk, n_relations: usize, rng: &mut impl Rng) -> Option<Walk> {
    let mut w = walk.clone();
    let i = rng.gen_range(0..w.hops.len());
    if rng.gen_bool(0.5) || n_relations < 2 {
        let others = g.same_type(w.hops[i].to);
        let pick =
            others.into_iter().filter(|&e| e != walk.start && walk.hops.iter().all(|h| h.to != e)).collect::<Vec<_>>();
        w.hops[i].to = *pick.choose(rng)?;
    } else {
        let r = rng.gen_range(0..n_relations as Rel - 1);
        w.hops[i].relation = if r >= w.hops[i].relation { r + 1 } else { r };
    }
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn forms_and_sentences() {
        assert_eq!(form("capital"), Form::Noun);
        assert_eq!(form("capital of"), Form::Of);
        assert_eq!(form("is in"), Form::Verb);
        assert_eq!(form("is the capital of"), Form::Verb);
        assert_eq!(form("located in the country"), Form::Participle);
        let first = |_| 0;
        assert_eq!(sentence("Lima", "capital of", "Peru", first), "Lima is the capital of Peru.");
        assert_eq!(sentence("Takeo", "is in", "Cambodia", first), "Takeo is in Cambodia.");
        assert_eq!(sentence("Lima", "is the capital of", "Peru", first), "Lima is the capital of Peru.");
        assert_eq!(sentence("Peru", "capital", "Lima", |_| 1), "Peru's capital is Lima.");
        assert_eq!(
            sentence("Takeo", "located in the country", "Cambodia", first),
            "Takeo is located in the country Cambodia."
        );
    }

    /// takeo -P17-> kh -P36-> pp, relations interned in that order: "the capital of the country
    /// of Takeo".
    fn takeo_capital(g: &KgGraph) -> Walk {
        let k = |x: &str| g.entity_key(x).unwrap();
        Walk {
            start: k("takeo"),
            hops: vec![
                Hop { relation: 0, forward: true, to: k("kh") },
                Hop { relation: 1, forward: true, to: k("pp") },
            ],
            reward: 1.0,
            on_policy: false,
            covering: false,
        }
    }

    #[test]
    fn a_walk_reads_as_question_and_steps() {
        let s = |x: &str| x.to_owned();
        let g = KgGraph::new(
            &[(s("takeo"), s("P17"), s("kh")), (s("kh"), s("P36"), s("pp"))],
            &[(s("takeo"), s("Takeo")), (s("kh"), s("Cambodia")), (s("pp"), s("Phnom Penh"))],
            &[(s("P17"), s("country")), (s("P36"), s("capital"))],
        );
        let walk = takeo_capital(&g);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let ex = verbalize(&g, &walk, &mut rng);
        assert!(ex.question.starts_with("What is the capital of the country of Takeo?"), "{}", ex.question);
        assert!(ex.cot.contains("Cambodia") && ex.cot.contains("Phnom Penh."), "{}", ex.cot);
        // The same seed gives the same phrasing.
        let again = verbalize(&g, &walk, &mut rand::rngs::StdRng::seed_from_u64(3));
        assert_eq!(ex, again);
    }

    #[test]
    fn a_corrupted_walk_is_phrased_like_its_true_walk() {
        let s = |x: &str| x.to_owned();
        let g = KgGraph::new(
            &[
                (s("takeo"), s("P17"), s("kh")),
                (s("kh"), s("P36"), s("pp")),
                (s("kampot"), s("P17"), s("kh")),
                (s("la"), s("P36"), s("vt")),
            ],
            &[
                (s("takeo"), s("Takeo")),
                (s("kh"), s("Cambodia")),
                (s("kh"), s("Kingdom of Cambodia")),
                (s("pp"), s("Phnom Penh")),
                (s("kampot"), s("Kampot")),
                (s("la"), s("Laos")),
                (s("vt"), s("Vientiane")),
            ],
            &[
                (s("P17"), s("country")),
                (s("P17"), s("is in")),
                (s("P36"), s("capital")),
                (s("P36"), s("capital city")),
            ],
        );
        let k = |x: &str| g.entity_key(x).unwrap();
        let walk = takeo_capital(&g);
        for seed in 0..40 {
            // The true side is exactly the walk's verbalization with the same generator.
            let mut entity = walk.clone();
            entity.hops[1].to = k("vt");
            let (t, c) = verbalize_pair(&g, &walk, &entity, &mut rand::rngs::StdRng::seed_from_u64(seed));
            assert_eq!(t, verbalize(&g, &walk, &mut rand::rngs::StdRng::seed_from_u64(seed)));
            assert_eq!(t.question, c.question);
            assert_eq!(t.cot.replace("Phnom Penh", "Vientiane"), c.cot, "seed {seed}");
            // A relation swap changes hop 2's sentence and nothing before it.
            let mut relation = walk.clone();
            relation.hops[1].relation = 0;
            let (t, c) = verbalize_pair(&g, &walk, &relation, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let first_step = t.cot.split('.').next().unwrap();
            assert!(c.cot.starts_with(first_step), "seed {seed}: {} / {}", t.cot, c.cot);
            assert_ne!(t.cot, c.cot);
        }
    }
}
