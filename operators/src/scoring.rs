//! Stateless per-CoT scoring: link → segment → ground → μ → token terms → CoT term in one
//! operator, over the log updates of a time, against the worker's KG index as of that time.
//!
//! What a worker keeps in memory per live chain of thought is compact: a 64-bit hash of its id
//! (ids are compared against the stored text on a hash hit, so a collision costs a lookup, not a
//! wrong answer), the key of its text in a [`CotStore`] and its entries in the dependency index
//! (entity → chains) — about 60 bytes for a chain with six entities. The store (on disk in a
//! run) holds, by slot, its text, a 512-bit filter of its words, which an alias change scans to
//! find the chains it may touch, the sums and extremes it last added to the aggregates (its
//! group follows from its text), and its links with their pair paths and relation votes as last
//! scored. The links are always the ones the index gives now — every KG change that could move
//! them re-scores the chain, which keeps its new ones — so a retraction or an alias change
//! reads from them the entities the chain is listed under, and a re-scoring after triple
//! changes alone grounds them without linking the text again: it ranks again the ambiguous
//! links with a touched candidate and searches only the pair paths with a touched end (every
//! one when a choice moved). At each time the operator
//!
//! 1. retracts: a live chain leaves (−its stored summary, a `retracted` tombstone); a
//!    retraction of a chain added at the same time cancels that addition; any other is an
//!    `unknown_retraction`;
//! 2. lists the live chains the KG's net updates may touch — a triple whose end is one of their
//!    entities, or an alias whose words all pass their word filter — and, when aliases change,
//!    their linked entities under the aliases as they were;
//! 3. applies the KG's net updates to its [`KgIndex`];
//! 4. re-scores the listed chains from the store (−stored summary, +new summary, a `rescored`
//!    tombstone, new rows), so a triple change scores each touched chain once; after a change of
//!    triples alone the new `token_scores` rows are the entity tokens' only (the tombstone says
//!    `entity_tokens_only`: mention spans follow the aliases, so the other rows cannot move);
//! 5. scores the additions (a chain already live is a `duplicate_id`).
//!
//! Steps 4 and 5 run in slices of 1,024 chains per invocation (the operator re-activates
//! itself), so the sinks downstream write and free rows while a large epoch is scored; the next
//! time starts only when the current one is done.
//!
//! Chains are routed to workers by a hash of their id, so one worker owns every update of a
//! chain. Rows leave on the output stream at the time they were computed; nothing per chain of
//! thought is arranged here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use ocean_schemas::{Dataset, Generation, Reject, RejectReason, Tombstone};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;

use crate::decode::GenerationBatch;
use crate::grounding::{ground_reusing, Grounding, PairReuse, Reach};
use crate::ips::{score_batch_rows, CotResult, CotSummary, Extremes, GroupKey, ScoreConfig, StatSums, TokenRows};
use crate::kg::{word_hash, EntityKey, KgBase, KgChange, KgIndex, KgUpdate};
use crate::linking::{link_words_with_votes, Link, LinkVotes};
use crate::paths::{PairPath, PathConfig, PathScratch};
use crate::policy::KgPolicy;
use crate::store::{CotStore, SlotStats, StoreFactory, WordFilterBits};
use crate::target::TargetPolicy;
use crate::text::{fnv1a, Word};
use crate::{Diff, Time};

/// A retraction of one chain of thought by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Retraction {
    /// The chain to retract.
    pub cot_id: String,
    /// Where the retraction came from (for a reject).
    pub source: String,
    /// 1-based line in `source`.
    pub line: u64,
}

/// What the sources feed into the dataflow.
#[derive(Debug, Clone)]
pub enum LogInput {
    /// A record batch in the generations schema (+1 adds its rows, −1 retracts them).
    Batch(GenerationBatch),
    /// Parsed generations, added.
    Rows(Vec<Generation>),
    /// Retractions by id.
    Retract(Vec<Retraction>),
    /// Records the source could not use (written to `rejects` with the rest).
    Rejects(Vec<Reject>),
}

/// One log update, routed to the worker that owns its chain of thought.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogUpdate {
    /// A generation to add.
    Add(Generation),
    /// A chain to retract.
    Retract(Retraction),
    /// An input that could not be decoded.
    Reject(Reject),
}

impl LogUpdate {
    fn route(&self) -> u64 {
        match self {
            LogUpdate::Add(g) => cot_hash(&g.cot_id),
            LogUpdate::Retract(r) => cot_hash(&r.cot_id),
            LogUpdate::Reject(r) => r.line.unwrap_or(0),
        }
    }
}

/// The hash that routes a chain of thought to its worker.
pub fn cot_hash(cot_id: &str) -> u64 {
    // FNV-1a, then a final mix so that low bits (worker, bucket) are well spread.
    let h = fnv1a(&[cot_id.as_bytes()]);
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
}

/// What scoring produces at a time.
#[derive(Debug, Clone)]
pub enum Scored {
    /// The rows of a chain of thought scored (or re-scored) at this time.
    Result(Box<CotResult>),
    /// A generation that became live at this time.
    Generation(Box<Generation>),
    /// Earlier rows of a chain of thought no longer hold.
    Tombstone(Tombstone),
    /// A change to the aggregates: a chain's summary added (+1) or removed (−1) at a time.
    Summary(CotSummary, Time, Diff),
    /// An input that could not be used.
    Reject(Reject),
}

/// Decodes the sources' input into log updates (on the worker that read it).
pub trait DecodeLogs<'scope> {
    /// One update per row or retraction; a batch that does not fit the schema is a reject.
    fn decode_logs(self) -> StreamVec<'scope, Time, LogUpdate>;
}

impl<'scope> DecodeLogs<'scope> for StreamVec<'scope, Time, LogInput> {
    fn decode_logs(self) -> StreamVec<'scope, Time, LogUpdate> {
        self.unary(Pipeline, "DecodeLogs", |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for item in data.drain(..) {
                        match item {
                            LogInput::Rows(rows) => session.give_iterator(rows.into_iter().map(LogUpdate::Add)),
                            LogInput::Retract(rs) => session.give_iterator(rs.into_iter().map(LogUpdate::Retract)),
                            LogInput::Rejects(rs) => session.give_iterator(rs.into_iter().map(LogUpdate::Reject)),
                            LogInput::Batch(b) => match Generation::from_batch(&b.batch) {
                                Ok(rows) if b.diff > 0 => session.give_iterator(rows.into_iter().map(LogUpdate::Add)),
                                Ok(rows) => session.give_iterator(rows.into_iter().map(|g| {
                                    LogUpdate::Retract(Retraction { cot_id: g.cot_id, source: g.source, line: g.line })
                                })),
                                Err(e) => session.give(LogUpdate::Reject(Reject::new(
                                    &b.source,
                                    None,
                                    "arrow",
                                    RejectReason::BadRecord,
                                    format!(
                                        "a batch of {} rows does not fit the generations schema: {e}",
                                        b.batch.num_rows()
                                    ),
                                    &[],
                                ))),
                            },
                        }
                    }
                });
            }
        })
    }
}

/// A 512-bit filter of a chain's normalized words (two probes per word).
#[derive(Debug, Clone, Default)]
struct WordFilter(WordFilterBits);

impl WordFilter {
    fn probes(h: u64) -> [usize; 2] {
        [(h & 511) as usize, ((h >> 23) & 511) as usize]
    }

    fn insert(&mut self, h: u64) {
        for p in Self::probes(h) {
            self.0[p / 64] |= 1 << (p % 64);
        }
    }

    fn may_contain(bits: &WordFilterBits, h: u64) -> bool {
        Self::probes(h).iter().all(|p| bits[p / 64] & (1 << (p % 64)) != 0)
    }

    /// The filter of a chain's words (its question's and its own).
    fn of(words: &[&[Word]]) -> Self {
        let mut f = WordFilter::default();
        for w in words.iter().flat_map(|ws| ws.iter()) {
            f.insert(word_hash(&w.norm));
        }
        f
    }
}

/// A chain of thought scored under the index as it is now.
struct Fresh {
    result: CotResult,
    /// Its links and their pair paths, as the store keeps them.
    linked: Linked,
    /// Its linked entities, sorted and distinct (its entries in the dependency index).
    entities: Vec<EntityKey>,
    /// Its word filter (empty when the chain was scored from given links).
    filter: WordFilter,
}

/// A chain's links with their interned entities, as [`crate::linking::link_words`] gives them.
type Links = Vec<(Link, EntityKey)>;

/// What the store keeps of a chain's last scoring: its links (question, then chain of thought,
/// with their interned entities), each link's pair path (as in its grounding; `None` for every
/// link when they must be searched again) and the relation votes of its ambiguous links (for
/// ranking them again without the text, [`KgIndex::rerank`]).
#[derive(Serialize, Deserialize)]
struct Linked {
    links: Links,
    pairs: Vec<Option<PairPath>>,
    votes: LinkVotes,
}

/// A worker's scoring state: the KG index and the live chains.
struct Scorer {
    index: KgIndex,
    policy: Arc<dyn KgPolicy>,
    target: Option<Arc<dyn TargetPolicy>>,
    config: ScoreConfig,
    window_us: i64,
    store: Box<dyn CotStore>,
    /// The store key of each slot's chain ([`FREE`] for a free slot).
    slots: Vec<u64>,
    free: Vec<u32>,
    /// Live chains by the hash of their id.
    by_hash: HashMap<u64, u32>,
    /// The hash of ids in `by_hash` ([`cot_hash`]; tests make it collide).
    id_hash: fn(&str) -> u64,
    /// Live chains whose id hash was taken by another live chain when they came.
    collided: HashMap<String, u32>,
    deps: HashMap<EntityKey, HashSet<u32>>,
    /// Grounding's scratch set, kept from chain to chain.
    reach: std::cell::RefCell<Reach>,
    /// How far paths between consecutive mentions are searched, and the search's scratch space.
    paths: PathConfig,
    path_scratch: std::cell::RefCell<PathScratch>,
}

impl Scorer {
    /// A worker's scorer with an empty index and no live chains; `id_hash` keys the live chains
    /// ([`cot_hash`]).
    fn new(config: ScorerConfig, store: Box<dyn CotStore>, id_hash: fn(&str) -> u64) -> Self {
        Scorer {
            index: KgIndex::with_base(config.kg),
            policy: config.policy,
            target: config.target,
            config: config.score,
            window_us: config.window_us,
            store,
            slots: Vec::new(),
            free: Vec::new(),
            by_hash: HashMap::default(),
            id_hash,
            collided: HashMap::default(),
            deps: HashMap::default(),
            reach: Default::default(),
            paths: config.paths,
            path_scratch: Default::default(),
        }
    }

    /// Links, grounds and scores generations against the index as of now (one policy batch):
    /// each chain's result (with the `token_scores` rows that `rows` says), its links, linked
    /// entities and word filter (one pass over its words serves linking and the filter). A
    /// chain given its last scoring's links (after a change of triples alone: their spans and
    /// candidates still those the index would give) is not linked again: the links with a
    /// touched candidate are ranked again ([`KgIndex::rerank`]), and it keeps those of its pair
    /// paths whose ends `touched` does not hold (none when a ranked choice moved).
    fn score_many(
        &self,
        gs: &[&Generation],
        rows: TokenRows,
        given: Vec<Option<Linked>>,
        touched: &HashSet<EntityKey>,
    ) -> Vec<Fresh> {
        let mut deps = Vec::with_capacity(gs.len());
        let mut grounded = Vec::with_capacity(gs.len());
        let is_touched = |e: EntityKey| touched.contains(&e);
        for (g, given) in gs.iter().zip(given) {
            let (links, filter, pairs, votes) = match given {
                Some(Linked { mut links, mut pairs, votes }) => {
                    let moves = links.iter().any(|(l, _)| l.candidates.iter().any(|(c, _)| touched.contains(c)));
                    if moves && self.index.rerank(&mut links, &votes) {
                        pairs.iter_mut().for_each(|p| *p = None);
                    }
                    (links, WordFilter::default(), Some(pairs), votes)
                }
                None => {
                    let question = self.index.words(g.question.as_deref().unwrap_or(""));
                    let content = self.index.words(&g.content);
                    let (links, votes) = link_words_with_votes(&self.index, &question, &content);
                    (links, WordFilter::of(&[&question, &content]), None, votes)
                }
            };
            let reuse = pairs.as_deref().map(|pairs| PairReuse { pairs, touched: &is_touched });
            let grounding = ground_reusing(
                &self.index,
                &links,
                &mut self.reach.borrow_mut(),
                &self.paths,
                &mut self.path_scratch.borrow_mut(),
                reuse.as_ref(),
            );
            let pairs = grounding.mentions.iter().map(|m| m.pair.as_ref().map(|(_, p)| p.clone())).collect();
            grounded.push(grounding);
            deps.push((distinct_entities(&links), filter, links, pairs, votes));
        }
        let chains: Vec<(&Generation, &Grounding)> = gs.iter().copied().zip(&grounded).collect();
        score_batch_rows(&chains, self.policy.as_ref(), &self.config, rows)
            .into_iter()
            .zip(deps)
            .map(|(result, (entities, filter, links, pairs, votes))| Fresh {
                result,
                linked: Linked { links, pairs, votes },
                entities,
                filter,
            })
            .collect()
    }

    /// The entities the chain in `slot` is listed under: those of its stored links, which are
    /// the index's as of now (see [`Scorer::stored_links`]).
    fn entities_of(&mut self, slot: u32) -> Vec<EntityKey> {
        distinct_entities(&self.stored_links(slot).links)
    }

    fn summary(&self, result: &CotResult) -> CotSummary {
        CotSummary::of(&result.score, self.window_us)
    }

    /// What the chain in `slot` (whose generation is `g`) last added to the aggregates.
    fn stored_summary(&mut self, slot: u32, g: &Generation) -> CotSummary {
        let stats = self.store.get_stats(slot);
        let mut sums = StatSums::default();
        sums.0.copy_from_slice(&stats[..14]);
        let extremes = Extremes(std::array::from_fn(|i| ocean_schemas::F64(stats[14 + i])));
        let group = GroupKey::of_generation(g, self.config.segment_by.as_deref(), self.window_us);
        CotSummary { group, sums, extremes }
    }

    fn put_summary(&mut self, slot: u32, summary: &CotSummary) {
        let mut stats: SlotStats = [0.0; 18];
        stats[..14].copy_from_slice(&summary.sums.0);
        for (x, e) in stats[14..].iter_mut().zip(&summary.extremes.0) {
            *x = e.0;
        }
        self.store.put_stats(slot, &stats);
    }

    /// Keeps a chain's links and pair paths as just scored.
    fn put_links(&mut self, slot: u32, fresh: &Fresh) {
        let bytes = bincode::serialize(&fresh.linked).expect("links should serialize");
        self.store.put_links(slot, &bytes);
    }

    /// The links of the chain in `slot` as last scored, with their pair paths: those the index
    /// gives now, since every KG change that could move them re-scores the chain (and keeps its
    /// new links).
    fn stored_links(&mut self, slot: u32) -> Linked {
        bincode::deserialize(&self.store.get_links(slot)).expect("the store should hold the links it was given")
    }

    fn link_deps(&mut self, slot: u32, entities: &[EntityKey]) {
        for e in entities {
            self.deps.entry(*e).or_default().insert(slot);
        }
    }

    fn unlink_deps(&mut self, slot: u32, entities: &[EntityKey]) {
        for e in entities {
            if let Some(set) = self.deps.get_mut(e) {
                set.remove(&slot);
                if set.is_empty() {
                    self.deps.remove(e);
                }
            }
        }
    }

    /// The stored generation of a live slot.
    fn stored(&mut self, slot: u32) -> Arc<Generation> {
        let key = self.slots[slot as usize];
        debug_assert_ne!(key, FREE, "slot {slot} should be live");
        self.store.get(key)
    }

    /// The slot of a live chain, with its stored generation.
    fn live(&mut self, cot_id: &str) -> Option<(u32, Arc<Generation>)> {
        if let Some(&slot) = self.by_hash.get(&(self.id_hash)(cot_id)) {
            let g = self.stored(slot);
            if g.cot_id == cot_id {
                return Some((slot, g));
            }
        }
        let slot = *self.collided.get(cot_id)?;
        Some((slot, self.stored(slot)))
    }

    /// Whether a chain is live (reads the store only when its id hash is taken).
    fn is_live(&mut self, cot_id: &str) -> bool {
        self.collided.contains_key(cot_id)
            || (self.by_hash.contains_key(&(self.id_hash)(cot_id)) && self.live(cot_id).is_some())
    }

    /// Forgets a live chain listed under `entities`.
    fn remove(&mut self, slot: u32, cot_id: &str, entities: &[EntityKey]) {
        let h = (self.id_hash)(cot_id);
        if self.by_hash.get(&h) == Some(&slot) {
            self.by_hash.remove(&h);
        } else {
            self.collided.remove(cot_id);
        }
        self.unlink_deps(slot, entities);
        self.store.remove(self.slots[slot as usize]);
        self.slots[slot as usize] = FREE;
        self.free.push(slot);
    }

    fn insert(&mut self, g: &Generation, fresh: &Fresh, summary: &CotSummary) {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(FREE);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 live chains per worker")
            }
        };
        let h = (self.id_hash)(&g.cot_id);
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(g.cot_id.clone(), slot);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
        self.slots[slot as usize] = self.store.put(g);
        self.store.put_filter(slot, &fresh.filter.0);
        self.put_summary(slot, summary);
        self.put_links(slot, fresh);
        self.link_deps(slot, &fresh.entities);
    }

    /// The live chains a KG change may touch, in slot order.
    fn touched(&mut self, change: &KgChange) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for e in &change.entities {
            out.extend(self.deps.get(e).into_iter().flatten().copied());
        }
        if !change.aliases.is_empty() {
            let slots = &self.slots;
            self.store.for_each_filter(slots.len() as u32, &mut |slot, bits| {
                let live = slots[slot as usize] != FREE;
                if live && change.aliases.iter().any(|words| words.iter().all(|h| WordFilter::may_contain(bits, *h))) {
                    out.insert(slot);
                }
            });
        }
        out
    }

    /// Starts time `t` (see the module docs): applies the KG's updates and the retractions, and
    /// lists the re-scoring and the additions, which [`Scorer::step`] does in slices.
    fn begin(
        &mut self,
        t: Time,
        kg: Vec<(KgUpdate, Diff)>,
        logs: Vec<LogUpdate>,
        emit: &mut impl FnMut(Scored),
    ) -> Job {
        let mut net: BTreeMap<KgUpdate, i64> = BTreeMap::new();
        for (u, d) in kg {
            *net.entry(u).or_insert(0) += d as i64;
        }
        net.retain(|_, d| *d != 0);

        // 1. Retractions, under the index as it was: a retracted chain takes back what it added.
        let mut adds: BTreeMap<String, Vec<Generation>> = BTreeMap::new();
        let mut retracts: Vec<Retraction> = Vec::new();
        for u in logs {
            match u {
                LogUpdate::Add(g) => adds.entry(g.cot_id.clone()).or_default().push(g),
                LogUpdate::Retract(r) => retracts.push(r),
                LogUpdate::Reject(r) => emit(Scored::Reject(r)),
            }
        }
        retracts.sort();
        for r in retracts {
            if let Some((slot, g)) = self.live(&r.cot_id) {
                let old = self.stored_summary(slot, &g);
                let entities = self.entities_of(slot);
                self.remove(slot, &r.cot_id, &entities);
                emit(Scored::Summary(old, t, -1));
                emit(Scored::Tombstone(Tombstone { cot_id: r.cot_id, retracted: true, entity_tokens_only: false }));
            } else if let Some(same_time) = adds.get_mut(&r.cot_id).filter(|gs| !gs.is_empty()) {
                same_time.remove(0);
            } else {
                let reason = format!(
                    "cot_id {:?} is not a live generation (never logged, rejected, or already retracted)",
                    r.cot_id
                );
                emit(Scored::Reject(Reject::new(
                    &r.source,
                    Some(r.line),
                    "retractions",
                    RejectReason::UnknownRetraction,
                    reason,
                    r.cot_id.as_bytes(),
                )));
            }
        }

        // 2. The chains the KG change may touch.
        let mut change = KgChange::default();
        for u in net.keys() {
            self.index.describe(u, &mut change);
        }
        if self.paths.max_hops >= 3 {
            // A 3-hop path a–m1–m2–b changes with its middle edge too, and its search cost with
            // the degrees of a's or b's neighbours: the chains that mention a neighbour of a
            // changed triple's end (as the KG was) may move.
            let ends = change.entities.clone();
            for e in ends {
                self.index.for_each_neighbour(e, |n| change.entities.push(n));
            }
            change.entities.sort_unstable();
            change.entities.dedup();
        }
        let mut rescore = VecDeque::new();
        // A change of triples alone moves no mention (spans follow the aliases), so which tokens
        // are entity tokens stays, and so does every non-entity token's row: only the entity
        // tokens' rows are written again.
        let rows = if change.aliases.is_empty() { TokenRows::Entity } else { TokenRows::All };
        // The entities the change touched (pair paths with an end among them are searched again).
        let touched: HashSet<EntityKey> = change.entities.iter().copied().collect();
        if !change.is_empty() {
            for slot in self.touched(&change) {
                // Spans and candidate sets move only with aliases: then the entities a chain is
                // listed under are found again under the aliases as they were. Under triple
                // changes alone they stay (chosen and candidates alike) and only a ranked choice
                // can move — when a changed entity is one of its candidates (its score and
                // degree change only through its own triples, and the context before it is the
                // earlier links): `score_many` ranks those links again from the stored
                // candidates and votes, under the index as it is after the change.
                let (entities, links) = if change.aliases.is_empty() {
                    (None, Some(self.stored_links(slot)))
                } else {
                    (Some(self.entities_of(slot)), None)
                };
                rescore.push_back(Rescore { slot, entities, links });
            }
        }

        // 3. The KG.
        for (u, d) in net {
            self.index.apply(&u, d);
        }
        // 4. and 5. (re-scoring, additions) are done by `step`.
        Job { time: t, rescore, rows, touched, adds: adds.into_iter().collect() }
    }

    /// Does up to `budget` chains of `job`: re-scoring first, then additions (of two records of
    /// one chain at one time, the first in (source, line) order wins). Returns the budget left.
    fn step(&mut self, job: &mut Job, mut budget: usize, emit: &mut impl FnMut(Scored)) -> usize {
        let t = job.time;
        // Re-scoring, as one policy batch.
        let n = budget.min(job.rescore.len());
        if n > 0 {
            budget -= n;
            let items: Vec<Rescore> = job.rescore.drain(..n).collect();
            let gs: Vec<Arc<Generation>> = items.iter().map(|r| self.stored(r.slot)).collect();
            let (items, given): (Vec<_>, Vec<_>) = items.into_iter().map(|r| ((r.slot, r.entities), r.links)).unzip();
            let scored = self.score_many(&gs.iter().map(|g| &**g).collect::<Vec<_>>(), job.rows, given, &job.touched);
            for (((slot, old_entities), g), fresh) in items.into_iter().zip(gs).zip(scored) {
                let summary = self.summary(&fresh.result);
                let old = self.stored_summary(slot, &g);
                debug_assert_eq!(old.group, summary.group, "a chain's group follows from its text");
                if let Some(old_entities) = old_entities.filter(|es| *es != fresh.entities) {
                    self.unlink_deps(slot, &old_entities);
                    self.link_deps(slot, &fresh.entities);
                }
                self.put_links(slot, &fresh);
                self.put_summary(slot, &summary);
                emit(Scored::Summary(old, t, -1));
                emit(Scored::Summary(summary, t, 1));
                emit(Scored::Tombstone(Tombstone {
                    cot_id: g.cot_id.clone(),
                    retracted: false,
                    entity_tokens_only: job.rows == TokenRows::Entity,
                }));
                emit(Scored::Result(Box::new(fresh.result)));
            }
        }
        // Additions: of two records of one chain at one time, the first in (source, line) order
        // wins; the others (and records of chains already live) are rejected.
        let mut accepted: Vec<Generation> = Vec::new();
        while budget > 0 {
            let Some((cot_id, mut gs)) = job.adds.pop_front() else { break };
            gs.sort_by(|a, b| (&a.source, a.line).cmp(&(&b.source, b.line)));
            for (i, g) in gs.into_iter().enumerate() {
                budget = budget.saturating_sub(1);
                if i == 0 && !self.is_live(&cot_id) {
                    accepted.push(g);
                    continue;
                }
                let detail = format!("a second record with cot_id {cot_id:?}, which is already live");
                emit(Scored::Reject(Reject::new(
                    &g.source,
                    Some(g.line),
                    &g.format,
                    RejectReason::DuplicateId,
                    detail,
                    cot_id.as_bytes(),
                )));
            }
        }
        if !accepted.is_empty() {
            // π_θ's log-probs, once per chain: the store keeps them for any re-scoring.
            if let Some(target) = &self.target {
                target.fill(&mut accepted);
            }
            let given = accepted.iter().map(|_| None).collect();
            let scored =
                self.score_many(&accepted.iter().collect::<Vec<_>>(), TokenRows::All, given, &HashSet::default());
            for (g, fresh) in accepted.into_iter().zip(scored) {
                let summary = self.summary(&fresh.result);
                self.insert(&g, &fresh, &summary);
                emit(Scored::Summary(summary, t, 1));
                emit(Scored::Result(Box::new(fresh.result)));
                emit(Scored::Generation(Box::new(g)));
            }
        }
        budget
    }
}

/// A chain to re-score, with the entities it was listed under before the change when aliases
/// changed (otherwise they did not move), and its stored links when only triples changed.
struct Rescore {
    slot: u32,
    entities: Option<Vec<EntityKey>>,
    links: Option<Linked>,
}

/// The work of one time that is left: chains to re-score and additions.
struct Job {
    time: Time,
    rescore: VecDeque<Rescore>,
    /// The `token_scores` rows a re-scoring writes.
    rows: TokenRows,
    /// The entities the KG change touched (pair paths with an end among them are searched again).
    touched: HashSet<EntityKey>,
    adds: VecDeque<(String, Vec<Generation>)>,
}

impl Job {
    fn is_done(&self) -> bool {
        self.rescore.is_empty() && self.adds.is_empty()
    }
}

/// The entities a chain's links depend on (its entries in the dependency index): the linked
/// ones and every candidate of an ambiguous alias (a triple touching a candidate can change the
/// choice), sorted and distinct.
fn distinct_entities(links: &[(Link, EntityKey)]) -> Vec<EntityKey> {
    let candidates = links.iter().flat_map(|(l, _)| &l.candidates).map(|(c, _)| *c);
    let mut es: Vec<EntityKey> = links.iter().map(|(_, e)| *e).chain(candidates).collect();
    es.sort_unstable();
    es.dedup();
    es
}

/// The store key of a free slot.
const FREE: u64 = u64::MAX;

/// Chains scored per operator invocation before it yields, so that the sinks downstream write
/// (and free) their rows while a large epoch is being scored.
const SLICE: usize = 1024;

/// Settings of the scoring operator.
#[derive(Clone)]
pub struct ScorerConfig {
    /// The KG policy μ.
    pub policy: Arc<dyn KgPolicy>,
    /// The target policy π_θ, when a candidate model computes `target_logprob` (else the logs'
    /// own `target_logprob`, or π_θ = π₀).
    pub target: Option<Arc<dyn TargetPolicy>>,
    /// The estimator variant and segment key.
    pub score: ScoreConfig,
    /// Aggregation windows, µs.
    pub window_us: i64,
    /// The KG as loaded (shared by the workers; the KG's update stream changes it from there).
    pub kg: Arc<KgBase>,
    /// Paths between consecutive mentions.
    pub paths: PathConfig,
    /// Each worker's store of live generations.
    pub store: StoreFactory,
}

/// Input held until the frontiers pass its time, with a capability to answer at that time.
pub(crate) type Pending<D> = BTreeMap<Time, (Capability<Time>, Vec<D>)>;

/// Holds `data` that arrived with `cap` under its time until the operator's frontiers pass it.
pub(crate) fn hold<D>(pending: &mut Pending<D>, cap: &InputCapability<Time>, data: &mut Vec<D>) {
    if let Some(cap) = cap.retain_least(0) {
        let t = *cap.time();
        pending.entry(t).or_insert_with(|| (cap, Vec::new())).1.append(data);
    }
}

/// Scores chains of thought against the KG.
pub trait ScoreLogs<'scope> {
    /// Scores the log updates against the KG index built from `kg` (the KG's net updates,
    /// broadcast to every worker): rows, tombstones, summary changes and rejects, each at the
    /// time it was computed.
    fn score_logs(
        self,
        kg: StreamVec<'scope, Time, (KgUpdate, Time, Diff)>,
        config: ScorerConfig,
    ) -> StreamVec<'scope, Time, Scored>;
}

impl<'scope> ScoreLogs<'scope> for StreamVec<'scope, Time, LogUpdate> {
    fn score_logs(
        self,
        kg: StreamVec<'scope, Time, (KgUpdate, Time, Diff)>,
        config: ScorerConfig,
    ) -> StreamVec<'scope, Time, Scored> {
        let scope = self.scope();
        let worker = scope.index();
        let route = Exchange::new(|u: &LogUpdate| u.route());
        self.binary_frontier(kg, route, Pipeline, "ScoreCots", move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let store = (config.store)(worker);
            let mut scorer = Scorer::new(config, store, cot_hash);
            let mut pending_logs: Pending<LogUpdate> = BTreeMap::new();
            let mut pending_kg: Pending<(KgUpdate, Diff)> = BTreeMap::new();
            let mut job: Option<(Capability<Time>, Job)> = None;
            move |(logs, logs_frontier), (kg, kg_frontier), output| {
                logs.for_each(|cap, data| hold(&mut pending_logs, &cap, data));
                kg.for_each(|cap, data| {
                    for (u, t, d) in data.drain(..) {
                        let entry = pending_kg.entry(t).or_insert_with(|| (cap.delayed(&t, 0), Vec::new()));
                        entry.1.push((u, d));
                    }
                });
                let mut budget = SLICE;
                loop {
                    if let Some((cap, work)) = job.as_mut() {
                        let mut session = output.session(&*cap);
                        budget = scorer.step(work, budget, &mut |s| session.give(s));
                        if !work.is_done() {
                            activator.activate();
                            break;
                        }
                        drop(session);
                        job = None;
                    }
                    // The next time whose inputs are all in, if any.
                    let Some(t) = pending_logs.keys().chain(pending_kg.keys()).min().copied() else { break };
                    if logs_frontier.less_equal(&t) || kg_frontier.less_equal(&t) {
                        break;
                    }
                    let logs = pending_logs.remove(&t);
                    let kg = pending_kg.remove(&t);
                    let cap = match (&logs, &kg) {
                        (Some((c, _)), _) | (None, Some((c, _))) => c.clone(),
                        (None, None) => unreachable!("t is a pending time"),
                    };
                    let mut session = output.session(&cap);
                    let work = scorer.begin(
                        t,
                        kg.map(|(_, v)| v).unwrap_or_default(),
                        logs.map(|(_, v)| v).unwrap_or_default(),
                        &mut |s| session.give(s),
                    );
                    drop(session);
                    job = Some((cap, work));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AdjacencyPolicy, AdjacencyPolicyConfig};
    use crate::store::MemoryStore;
    use ocean_schemas::{Token, F64};

    fn generation(id: &str, text: &str) -> Generation {
        let tokens: Vec<Token> = text
            .split_inclusive(' ')
            .map(|t| Token { text: t.into(), byte_len: t.len() as u32, logprob: F64(-0.5), target_logprob: None })
            .collect();
        Generation { cot_id: id.into(), content: text.into(), tokens, ..Default::default() }
    }

    fn retraction(id: &str) -> LogUpdate {
        LogUpdate::Retract(Retraction { cot_id: id.into(), source: "r".into(), line: 1 })
    }

    /// Runs time `t` to the end; returns what it emitted.
    fn run(scorer: &mut Scorer, t: Time, kg: Vec<(KgUpdate, Diff)>, logs: Vec<LogUpdate>) -> Vec<Scored> {
        let mut out = Vec::new();
        let mut job = scorer.begin(t, kg, logs, &mut |s| out.push(s));
        while !job.is_done() {
            scorer.step(&mut job, 2, &mut |s| out.push(s));
        }
        out
    }

    /// (summaries added − removed, retracted tombstones, re-scored tombstones, reject codes).
    fn tally(out: &[Scored]) -> (isize, usize, usize, Vec<String>) {
        let mut t = (0, 0, 0, Vec::new());
        for s in out {
            match s {
                Scored::Summary(_, _, d) => t.0 += d,
                Scored::Tombstone(x) if x.retracted => t.1 += 1,
                Scored::Tombstone(_) => t.2 += 1,
                Scored::Reject(r) => t.3.push(r.reason_code.clone()),
                _ => {}
            }
        }
        t
    }

    /// A scorer with the baseline μ, in-memory store and the given id hash.
    fn scorer(id_hash: fn(&str) -> u64) -> Scorer {
        let config = ScorerConfig {
            policy: Arc::new(AdjacencyPolicy::new(AdjacencyPolicyConfig { entities: 4, ..Default::default() })),
            target: None,
            score: ScoreConfig::default(),
            window_us: 86_400_000_000,
            kg: Arc::new(KgBase::empty(4)),
            paths: PathConfig::default(),
            store: MemoryStore::factory(),
        };
        let store = (config.store)(0);
        Scorer::new(config, store, id_hash)
    }

    /// With every id hashing alike, ids are still told apart: by the stored text on a hash hit,
    /// and through the collided map.
    #[test]
    fn colliding_id_hashes_keep_chains_apart() {
        let mut scorer = scorer(|_| 7);
        let add = |id: &str| LogUpdate::Add(generation(id, "We went to Lima and then Peru ."));
        let out = run(&mut scorer, 0, vec![], vec![add("a"), add("b"), add("c")]);
        assert_eq!(tally(&out), (3, 0, 0, Vec::<String>::new()));
        assert_eq!((scorer.by_hash.len(), scorer.collided.len()), (1, 2));

        // A second "a" is a duplicate; "b" (in the collided map) leaves; "z" was never there.
        let out = run(&mut scorer, 1, vec![], vec![add("a"), retraction("b"), retraction("z")]);
        assert_eq!(tally(&out), (-1, 1, 0, vec!["unknown_retraction".to_owned(), "duplicate_id".into()]));
        // The primary holder leaves: the collided ones are still found, and a newcomer takes
        // the free hash.
        let out = run(&mut scorer, 2, vec![], vec![retraction("a"), add("d")]);
        assert_eq!(tally(&out), (0, 1, 0, Vec::<String>::new()));
        let out = run(&mut scorer, 3, vec![], vec![retraction("c"), retraction("d"), retraction("b")]);
        assert_eq!(tally(&out), (-2, 2, 0, vec!["unknown_retraction".to_owned()]));
        assert!(scorer.by_hash.is_empty() && scorer.collided.is_empty() && scorer.deps.is_empty());
    }

    /// An alias change finds the chains that contain its words through the stored filters, and
    /// a triple change finds them through the dependency index.
    #[test]
    fn kg_changes_find_the_chains_they_touch() {
        let mut scorer = scorer(cot_hash);
        let logs = vec![
            LogUpdate::Add(generation("lima", "Lima is in Peru .")),
            LogUpdate::Add(generation("quito", "Quito is in Ecuador .")),
        ];
        assert_eq!(tally(&run(&mut scorer, 0, vec![], logs)), (2, 0, 0, Vec::<String>::new()));
        let alias = |e: &str, a: &str| (KgUpdate::Alias(e.into(), a.into()), 1);
        let out = run(&mut scorer, 1, vec![alias("Q1", "Lima"), alias("Q2", "Peru")], vec![]);
        assert_eq!(tally(&out), (0, 0, 1, Vec::<String>::new()));
        let triple = (KgUpdate::Triple("Q1".into(), "P17".into(), "Q2".into()), 1);
        let out = run(&mut scorer, 2, vec![triple], vec![]);
        assert_eq!(tally(&out), (0, 0, 1, Vec::<String>::new()));
        assert_eq!(scorer.deps.len(), 2);
    }

    /// A change of triples that moves a ranked choice without touching the new choice: the
    /// stored links are ranked again, the pair paths searched again, and the chain's rows are
    /// those of scoring it fresh under the changed KG.
    #[test]
    fn a_ranked_choice_moved_by_triples_is_ranked_and_grounded_again() {
        let alias = |e: &str, a: &str| (KgUpdate::Alias(e.into(), a.into()), 1);
        let triple = |h: &str, t: &str, d: Diff| (KgUpdate::Triple(h.into(), "P47".into(), t.into()), d);
        // "Paris" names Q9 (two edges) and Q5 (one edge, two hops from Q1 = Bolivia).
        let kg = vec![
            alias("Q1", "Bolivia"),
            alias("Q9", "Paris"),
            alias("Q5", "Paris"),
            triple("Q1", "Q3", 1),
            triple("Q3", "Q5", 1),
            triple("Q9", "Q7", 1),
            triple("Q9", "Q8", 1),
        ];
        let chain = || LogUpdate::Add(generation("c", "Bolivia then Paris ."));
        let rows = |out: &[Scored]| {
            out.iter()
                .find_map(|s| match s {
                    Scored::Result(r) => Some((r.score.clone(), r.steps.clone(), r.mentions.clone())),
                    _ => None,
                })
                .expect("the chain is scored")
        };
        let mut incremental = scorer(cot_hash);
        let before = rows(&run(&mut incremental, 0, kg.clone(), vec![chain()]));
        assert_eq!(before.2.last().map(|m| m.entity_id.as_str()), Some("Q9"), "more edges win the tie");
        // Q9 loses an edge: the tie goes to the smaller id, Q5, which the change does not touch.
        let change = vec![triple("Q9", "Q8", -1)];
        let after = rows(&run(&mut incremental, 1, change.clone(), vec![]));
        let mut fresh = scorer(cot_hash);
        let want = rows(&run(&mut fresh, 0, kg.into_iter().chain(change).collect(), vec![chain()]));
        assert_eq!(want.2.last().map(|m| m.entity_id.as_str()), Some("Q5"));
        assert_ne!(before.1, want.1, "the step's path moved with the choice");
        assert_eq!(after, want);
    }
}
