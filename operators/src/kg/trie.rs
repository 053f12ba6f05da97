//! The loaded KG's alias trie as one open-addressed table of edges, placed by a hash of the
//! word keys that spell the edge's child rather than by its parent node.
//!
//! Linking walks the trie from every word of a text. With edges keyed by `(parent, word)`, the
//! address of each level's lookup is known only once the level before has been read, so a walk
//! of k words is k dependent cache misses, and at Wikidata5m's size (tens of millions of edges)
//! nearly every lookup misses. Here the slot of the edge that ends a prefix `w₁ … wⱼ` is found
//! from [`step`]ped hashes of the word keys alone, so every level's load (and the next
//! position's) can be issued before the one before it has returned; the entry still holds its
//! `(parent, word)`, which the walk compares, so a match is exact whatever the hash does. Each
//! entry also says whether its child names entities, and which one when it names exactly one,
//! so that an unambiguous mention needs no other read of the trie.

/// The hash of the empty prefix (the root).
pub const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of a prefix extended by one word key.
#[inline]
pub fn step(h: u64, word: u32) -> u64 {
    (h.rotate_left(26) ^ u64::from(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// [`Edge::info`] of a node that names no entity.
pub const NO_ENTITY: u32 = u32::MAX;
/// [`Edge::info`] of a node that names several entities.
pub const SEVERAL: u32 = u32::MAX - 1;

/// One edge: `parent --word--> child`, and what the child names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Edge {
    pub parent: u32,
    /// The word key; `u32::MAX` marks an empty slot.
    pub word: u32,
    pub child: u32,
    /// The child's entity when it names exactly one, else [`NO_ENTITY`] or [`SEVERAL`].
    pub info: u32,
}

const EMPTY: Edge = Edge { parent: 0, word: u32::MAX, child: 0, info: NO_ENTITY };

/// The table (see the module docs): linear probing from the slot the prefix hash picks, at most
/// 60 % full.
#[derive(Debug, Clone, Default)]
pub struct EdgeTable {
    slots: Vec<Edge>,
    len: usize,
}

impl EdgeTable {
    /// The table of `edges` (`[parent, word, child]`) of a trie with nodes `0..nodes` and root
    /// 0, each node the child of one edge, every parent numbered before its children; `info`
    /// gives a node's [`Edge::info`]. An error says which of these the edges break.
    pub fn new(edges: &[[u32; 3]], nodes: usize, info: impl Fn(u32) -> u32) -> Result<Self, String> {
        if edges.len() + 1 != nodes {
            return Err(format!("{} edges for {nodes} nodes", edges.len()));
        }
        // Each node's edge in, by node, so that a parent's hash is known before its children's.
        let mut into = vec![(u32::MAX, u32::MAX); nodes];
        for &[parent, word, child] in edges {
            let c = child as usize;
            if child == 0 || c >= nodes || parent >= child || word == u32::MAX || into[c].1 != u32::MAX {
                return Err(format!("edge {parent} -{word}-> {child} is not a tree edge numbered after its parent"));
            }
            into[c] = (parent, word);
        }
        let mut hashes = vec![SEED; nodes];
        let mut table = EdgeTable { slots: vec![EMPTY; edges.len() * 5 / 3 + 16], len: 0 };
        for child in 1..nodes {
            let (parent, word) = into[child];
            let h = step(hashes[parent as usize], word);
            hashes[child] = h;
            let child = child as u32;
            table.insert(h, Edge { parent, word, child, info: info(child) });
        }
        Ok(table)
    }

    fn insert(&mut self, h: u64, edge: Edge) {
        let mut i = self.home(h);
        while self.slots[i].word != u32::MAX {
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
        self.slots[i] = edge;
        self.len += 1;
    }

    /// The first slot to probe for hash `h` (a multiply-shift onto the table's size).
    #[inline]
    fn home(&self, h: u64) -> usize {
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// The edge `parent --word-->`, whose child's prefix hash is `h`.
    #[inline]
    pub fn get(&self, h: u64, parent: u32, word: u32) -> Option<&Edge> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(h);
        loop {
            let e = &self.slots[i];
            if e.word == word && e.parent == parent {
                return Some(e);
            }
            if e.word == u32::MAX {
                return None;
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Every edge as `[parent, word, child]`, in no particular order.
    pub fn edges(&self) -> impl Iterator<Item = [u32; 3]> + '_ {
        self.slots.iter().filter(|e| e.word != u32::MAX).map(|e| [e.parent, e.word, e.child])
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Edge>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random trie (as the KG builder numbers it: children after parents), its table, and
    /// every edge found again by the prefix hash of the words that spell its child; absent
    /// (parent, word) pairs are not found.
    #[test]
    fn every_edge_is_found_by_its_prefix_and_nothing_else() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for n in [1usize, 2, 5, 40, 3000] {
            let mut edges: Vec<[u32; 3]> = Vec::new();
            let mut spelled: Vec<Vec<u32>> = vec![Vec::new()];
            let mut taken = std::collections::HashSet::new();
            while edges.len() + 1 < n {
                let parent = next() % (edges.len() as u32 + 1);
                let word = next() % 50;
                if !taken.insert((parent, word)) {
                    continue;
                }
                let child = edges.len() as u32 + 1;
                edges.push([parent, word, child]);
                let mut words = spelled[parent as usize].clone();
                words.push(word);
                spelled.push(words);
            }
            let info = |c: u32| if c.is_multiple_of(3) { NO_ENTITY } else { c * 10 };
            let table = EdgeTable::new(&edges, n, info).unwrap();
            assert_eq!(table.len(), n - 1);
            let mut listed: Vec<[u32; 3]> = table.edges().collect();
            listed.sort_unstable();
            let mut sorted = edges.clone();
            sorted.sort_unstable();
            assert_eq!(listed, sorted);
            for &[parent, word, child] in &edges {
                let h = spelled[child as usize].iter().fold(SEED, |h, w| step(h, *w));
                assert_eq!(table.get(h, parent, word), Some(&Edge { parent, word, child, info: info(child) }));
            }
            for parent in 0..n as u32 {
                let h = spelled[parent as usize].iter().fold(SEED, |h, w| step(h, *w));
                for word in 0..50 {
                    if !taken.contains(&(parent, word)) {
                        assert_eq!(table.get(step(h, word), parent, word), None);
                    }
                }
            }
        }
    }

    #[test]
    fn edges_that_are_not_a_numbered_tree_are_refused() {
        let ok = |e: &[[u32; 3]], n| EdgeTable::new(e, n, |_| NO_ENTITY).is_ok();
        assert!(ok(&[[0, 1, 1], [1, 2, 2]], 3));
        assert!(!ok(&[[0, 1, 1], [1, 2, 2]], 4), "a node without an edge in");
        assert!(!ok(&[[0, 1, 2], [2, 2, 1]], 3), "a parent after its child");
        assert!(!ok(&[[0, 1, 1], [0, 2, 1]], 3), "a node with two edges in");
        assert!(!ok(&[[0, 1, 1], [0, 2, 5]], 3), "a node out of range");
    }
}
