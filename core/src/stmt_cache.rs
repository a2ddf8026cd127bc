//! The per-connection prepared-statement cache, shared by the PostgreSQL
//! and MySQL sessions: SQL text → the server's handle for the prepared
//! statement (a name or an id) plus what the session learned when preparing
//! it. Least recently used entries are evicted; their handles queue up so
//! the session can close them on the server with its next command.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};

pub struct StatementCache<H, V> {
    capacity: usize,
    entries: HashMap<String, Entry<H, V>, SqlHash>,
    tick: u64,
    evicted: Vec<H>,
    /// Hashes of SQL offered once and not prepared (see
    /// [`StatementCache::seen_before`]).
    seen: HashSet<u64>,
    /// Hashes of SQL the server refused to prepare.
    refused: HashSet<u64>,
}

struct Entry<H, V> {
    handle: H,
    value: V,
    used: u64,
}

impl<H: Clone, V: Clone> StatementCache<H, V> {
    /// Capacity 0 keeps nothing (PgBouncer's transaction mode).
    pub fn new(capacity: usize) -> Self {
        StatementCache {
            capacity,
            entries: HashMap::with_hasher(SqlHash::new()),
            tick: 0,
            evicted: Vec::new(),
            seen: HashSet::new(),
            refused: HashSet::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The handle and value for `sql`, marking it as just used.
    pub fn get(&mut self, sql: &str) -> Option<(H, V)> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(sql).map(|e| {
            e.used = tick;
            (e.handle.clone(), e.value.clone())
        })
    }

    /// Keeps a newly prepared statement, evicting the least recently used
    /// one when full; with capacity 0 the handle is queued for closing at
    /// once. The scan for the oldest entry is linear in the capacity, which
    /// only runs on a miss with a full cache.
    pub fn insert(&mut self, sql: &str, handle: H, value: V) {
        if self.capacity == 0 {
            self.evicted.push(handle);
            return;
        }
        if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(e) = oldest.and_then(|k| self.entries.remove(&k)) {
                self.evicted.push(e.handle);
            }
        }
        self.tick += 1;
        self.entries.insert(
            sql.to_string(),
            Entry {
                handle,
                value,
                used: self.tick,
            },
        );
    }

    /// Whether a statement without parameters may go through the cache at
    /// all, in either protocol: only with a cache (the unnamed or uncached
    /// statement would cost more than plain text), and only for one
    /// non-empty statement, since neither server prepares several in one
    /// string; any `;` (even inside a literal, to stay on the safe side)
    /// keeps it as text.
    pub fn may_prepare_text(&self, sql: &str) -> bool {
        self.capacity > 0 && !sql.trim_start().is_empty() && !sql.contains(';')
    }

    /// Whether `sql` was offered before: the first time it is recorded and
    /// false, after that true. For a protocol where preparing costs a round
    /// trip of its own (MySQL), a statement without parameters is prepared
    /// only once it comes back, so a statement run once costs one round
    /// trip, as before. Kept by hash, and forgotten wholesale past four
    /// times the capacity: a collision or a lost record only moves a
    /// statement's preparation by one run.
    pub fn seen_before(&mut self, sql: &str) -> bool {
        let h = self.entries.hasher().hash_one(sql);
        if self.seen.contains(&h) {
            return true;
        }
        record(&mut self.seen, h, self.capacity);
        false
    }

    /// Records that the server would not prepare `sql` (a command the
    /// prepared-statement protocol does not take), so it is not tried again.
    /// Bounded as [`StatementCache::seen_before`].
    pub fn refuse(&mut self, sql: &str) {
        let h = self.entries.hasher().hash_one(sql);
        record(&mut self.refused, h, self.capacity);
    }

    pub fn refused(&self, sql: &str) -> bool {
        self.refused.contains(&self.entries.hasher().hash_one(sql))
    }

    /// Drops `sql` (its statement is stale on the server) and queues its
    /// handle for closing.
    pub fn forget(&mut self, sql: &str) {
        if let Some(e) = self.entries.remove(sql) {
            self.evicted.push(e.handle);
        }
    }

    /// Queues a handle that never entered the cache for closing.
    pub fn push_evicted(&mut self, handle: H) {
        self.evicted.push(handle);
    }

    /// Forgets everything without closing (the server already dropped it
    /// all, e.g. after a session reset).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.evicted.clear();
    }

    pub fn has_evicted(&self) -> bool {
        !self.evicted.is_empty()
    }

    pub fn take_evicted(&mut self) -> Vec<H> {
        std::mem::take(&mut self.evicted)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The cache's hash of SQL text, looked up on every statement. std's
/// SipHash, built to withstand keys chosen by an attacker, took ~200
/// instructions of a pooled `SELECT 1`; the keys here are the
/// application's own SQL in a cache of bounded size, where a seeded
/// multiply-and-fold hash does (a flood of colliding keys could at worst
/// make lookups linear in the capacity).
#[derive(Clone)]
struct SqlHash {
    seed: u64,
}

impl SqlHash {
    fn new() -> SqlHash {
        SqlHash {
            seed: RandomState::new().hash_one(0u8),
        }
    }
}

impl BuildHasher for SqlHash {
    type Hasher = SqlHasher;
    fn build_hasher(&self) -> SqlHasher {
        SqlHasher(self.seed)
    }
}

struct SqlHasher(u64);

/// A 64×64→128-bit multiply folded back to 64 bits: every input bit
/// reaches the high and the low bits the map uses.
fn fold(x: u64) -> u64 {
    let p = u128::from(x) * 0x9e37_79b9_7f4a_7c15;
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for SqlHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = fold(h ^ u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            h = fold(h ^ u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        fold(self.0)
    }
}

/// Adds `hash` to a record of SQL kept beside a cache of `capacity`
/// entries, clearing it first once it holds four times that (at least 64):
/// a lost record only moves a decision by one run.
fn record(set: &mut HashSet<u64>, hash: u64, capacity: usize) {
    if set.len() >= capacity.saturating_mul(4).max(64) {
        set.clear();
    }
    set.insert(hash);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement is "seen before" from its second offer on; the record
    /// is bounded and forgotten wholesale; refusals are remembered apart.
    #[test]
    fn second_sightings_and_refusals() {
        let mut c: StatementCache<u32, u16> = StatementCache::new(2);
        assert!(!c.seen_before("SELECT 1"));
        assert!(c.seen_before("SELECT 1"));
        assert!(c.seen_before("SELECT 1"));
        assert!(!c.seen_before("SELECT 2"));
        // 64 records at most with this capacity: the 65th clears them.
        for i in 0..70 {
            c.seen_before(&format!("SELECT {i} + 0"));
        }
        assert!(
            !c.seen_before("SELECT 1"),
            "forgotten when the record filled"
        );
        assert!(!c.refused("EXECUTE s"));
        c.refuse("EXECUTE s");
        assert!(c.refused("EXECUTE s"));
        assert!(!c.refused("EXECUTE t"));
        // Refusals are bounded the same way.
        for i in 0..70 {
            c.refuse(&format!("EXECUTE s{i}"));
        }
        assert!(!c.refused("EXECUTE s"), "forgotten when the record filled");
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut c: StatementCache<u32, u16> = StatementCache::new(2);
        c.insert("a", 1, 0);
        c.insert("b", 2, 0);
        assert_eq!(c.get("a"), Some((1, 0)));
        c.insert("c", 3, 0);
        assert_eq!(c.take_evicted(), vec![2]);
        assert_eq!(c.get("b"), None);
        c.forget("a");
        assert_eq!(c.take_evicted(), vec![1]);
        assert_eq!(c.len(), 1);
        let mut zero: StatementCache<u32, u16> = StatementCache::new(0);
        zero.insert("a", 7, 0);
        assert!(zero.has_evicted() && zero.is_empty());
        assert_eq!(zero.take_evicted(), vec![7]);
    }

    #[test]
    fn similar_sql_texts_are_told_apart() {
        // Prefixes of one another, trailing NULs, one byte apart, across
        // the 8-byte word boundaries the hash reads.
        let mut keys: Vec<String> = (0..40).map(|n| "x".repeat(n)).collect();
        keys.extend((0..17).map(|n| format!("a{}", "\0".repeat(n))));
        keys.extend((0..600).map(|i| format!("SELECT {i} FROM t WHERE id = $1")));
        keys.extend((0..256).map(|b| format!("SELECT '{}'", char::from(b as u8))));
        let n = keys.len();
        let mut c: StatementCache<usize, ()> = StatementCache::new(n);
        for (i, k) in keys.iter().enumerate() {
            c.insert(k, i, ());
        }
        assert_eq!(c.len(), n);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(c.get(k), Some((i, ())), "{k:?}");
        }
        let hashes: std::collections::HashSet<u64> = keys
            .iter()
            .map(|k| c.entries.hasher().hash_one(k))
            .collect();
        assert_eq!(hashes.len(), n, "no two of these texts share a hash");
    }
}
