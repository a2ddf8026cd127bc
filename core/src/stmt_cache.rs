//! The per-connection prepared-statement cache, shared by the PostgreSQL
//! and MySQL sessions: SQL text → the server's handle for the prepared
//! statement (a name or an id) plus what the session learned when preparing
//! it. Least recently used entries are evicted; their handles queue up so
//! the session can close them on the server with its next command.

use std::collections::HashMap;

pub struct StatementCache<H, V> {
    capacity: usize,
    entries: HashMap<String, Entry<H, V>>,
    tick: u64,
    evicted: Vec<H>,
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
            entries: HashMap::new(),
            tick: 0,
            evicted: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
