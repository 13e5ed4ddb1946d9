//! Statement and portal names, and a table keyed by them, with the unnamed entry (`""`)
//! kept apart from the hashed ones.
//!
//! Names are the raw bytes of the protocol message: the server compares them byte for
//! byte in the session's encoding, so the tracker does too — and only their first 63
//! bytes, as the server's name tables do (see [`key`]).
//!
//! The unnamed statement and the unnamed portal are what every extended-protocol
//! transaction of a driver passes through (PostgreSQL keeps them apart too:
//! `unnamed_stmt_psrc`), so they are a field, not a hash-table entry: looking one up,
//! replacing it and dropping it hash nothing and compare no bytes. Named entries are in
//! a map hashed with aHash, randomly seeded per process: names are the client's choice
//! (a fixed hash would let it make every lookup collide), and SipHash, the standard
//! library's, cost a measurable share of a pgbench transaction.

use std::collections::HashMap;

use bytes::Bytes;

/// A statement or portal name as the client sent it (`""` is the unnamed one).
pub type Name = Bytes;

/// Bytes of a name the server's tables of prepared statements and portals compare
/// (`NAMEDATALEN - 1`): the keys of both are `char[NAMEDATALEN]`, filled with `strlcpy`,
/// so two names that share their first 63 bytes are one name there.
pub const NAME_KEY_LEN: usize = 63;

/// A name as the server's tables key it: its first [`NAME_KEY_LEN`] bytes (no copy).
pub fn key(name: Name) -> Name {
    if name.len() > NAME_KEY_LEN {
        name.slice(..NAME_KEY_LEN)
    } else {
        name
    }
}

type Named<V> = HashMap<Name, V, ahash::RandomState>;

/// Values under names, `""` included.
#[derive(Debug)]
pub struct Names<V> {
    unnamed: Option<V>,
    named: Named<V>,
}

impl<V> Default for Names<V> {
    fn default() -> Self {
        Names {
            unnamed: None,
            named: Named::default(),
        }
    }
}

impl<V> Names<V> {
    pub fn get(&self, name: &[u8]) -> Option<&V> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.named.get(name)
        }
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Puts `value` under `name`; gives the value it replaces.
    pub fn insert(&mut self, name: Name, value: V) -> Option<V> {
        if name.is_empty() {
            self.unnamed.replace(value)
        } else {
            self.named.insert(name, value)
        }
    }

    /// The value under `name`, put there by `make` if there is none.
    pub fn get_or_insert_with(&mut self, name: &Name, make: impl FnOnce() -> V) -> &mut V {
        if name.is_empty() {
            self.unnamed.get_or_insert_with(make)
        } else {
            self.named.entry(name.clone()).or_insert_with(make)
        }
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<V> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.named.remove(name)
        }
    }

    /// Removes the entry under `name`, with the name as stored.
    pub fn remove_entry(&mut self, name: &[u8]) -> Option<(Name, V)> {
        if name.is_empty() {
            self.unnamed.take().map(|v| (Name::new(), v))
        } else {
            self.named.remove_entry(name)
        }
    }

    pub fn clear(&mut self) {
        self.unnamed = None;
        // An empty map is left alone: clearing one that has had entries still resets
        // its whole table.
        if !self.named.is_empty() {
            self.named.clear();
        }
    }

    /// Whether nothing is held (a check of two fields, no walk).
    pub fn is_empty(&self) -> bool {
        self.unnamed.is_none() && self.named.is_empty()
    }

    /// Named entries only (`""` is not counted).
    pub fn named_len(&self) -> usize {
        self.named.len()
    }

    /// Entries, `""` included.
    pub fn len(&self) -> usize {
        self.named.len() + usize::from(self.unnamed.is_some())
    }

    /// Keeps the named entries `keep` says yes to, and the unnamed one if `unnamed`.
    pub fn retain(&mut self, unnamed: bool, mut keep: impl FnMut(&V) -> bool) {
        if !unnamed || !self.unnamed.as_ref().is_some_and(&mut keep) {
            self.unnamed = None;
        }
        self.named.retain(|_, v| keep(v));
    }

    /// The named entries (the unnamed one is not among them).
    pub fn named(&self) -> impl Iterator<Item = (&Name, &V)> {
        self.named.iter()
    }

    /// Takes every entry out, `""` (as an empty name) included. (An empty map is not
    /// drained: that would reset its whole table, see [`Names::clear`].)
    pub fn drain(&mut self) -> impl Iterator<Item = (Name, V)> + '_ {
        let named = (!self.named.is_empty()).then(|| self.named.drain());
        self.unnamed
            .take()
            .map(|v| (Name::new(), v))
            .into_iter()
            .chain(named.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_unnamed_entry_is_one_entry_like_any_other() {
        let mut t: Names<u32> = Names::default();
        assert!(t.is_empty());
        assert_eq!(t.insert(n(""), 1), None);
        assert_eq!(t.insert(n("a"), 2), None);
        assert_eq!(t.insert(n(""), 3), Some(1));
        assert_eq!((t.len(), t.named_len()), (2, 1));
        assert_eq!(t.get(b""), Some(&3));
        assert_eq!(t.get(b"a"), Some(&2));
        assert!(!t.contains(b"b"));
        *t.get_or_insert_with(&n(""), || 9) += 1;
        *t.get_or_insert_with(&n("b"), || 9) += 1;
        assert_eq!((t.get(b""), t.get(b"b")), (Some(&4), Some(&10)));
        assert_eq!(t.remove_entry(b""), Some((n(""), 4)));
        assert_eq!(t.remove(b"a"), Some(2));
        let mut left: Vec<_> = t.drain().collect();
        left.sort();
        assert_eq!(left, vec![(n("b"), 10)]);
        assert!(t.is_empty());
    }

    #[test]
    fn retain_keeps_the_unnamed_entry_only_when_asked() {
        let mut t: Names<u32> = Names::default();
        t.insert(n(""), 1);
        t.insert(n("odd"), 3);
        t.insert(n("even"), 4);
        t.retain(true, |v| v % 2 == 1);
        assert_eq!(
            (t.get(b""), t.get(b"odd"), t.get(b"even")),
            (Some(&1), Some(&3), None)
        );
        t.retain(false, |_| true);
        assert_eq!((t.get(b""), t.len()), (None, 1));
        let mut drained: Vec<_> = {
            t.insert(n(""), 5);
            t.drain().collect()
        };
        drained.sort();
        assert_eq!(drained, vec![(n(""), 5), (n("odd"), 3)]);
    }
}
