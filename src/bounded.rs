//! A map that empties itself when full: a cache of facts that are cheap to look up again,
//! bounded in memory without the bookkeeping of an LRU.

use std::collections::HashMap;
use std::hash::Hash;

/// A map that empties itself when full.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    cap: usize,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
        }
    }

    pub(crate) fn get(&self, k: &K) -> Option<V> {
        self.map.get(k).cloned()
    }

    pub(crate) fn put(&mut self, k: K, v: V) {
        if self.map.len() >= self.cap && !self.map.contains_key(&k) {
            self.map.clear();
        }
        self.map.insert(k, v);
    }

    pub(crate) fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn a_full_map_empties_and_keeps_the_newest() {
        let mut m = Bounded::new(2);
        m.put(1, 'a');
        m.put(2, 'b');
        m.put(2, 'c');
        assert_eq!(m.map.len(), 2, "replacing a key does not empty it");
        m.put(3, 'd');
        assert_eq!((m.get(&1), m.get(&3)), (None, Some('d')));
    }
}
