//! Compact lookup structures of the [`EnginePlan`](super::EnginePlan), sized
//! for 15,000 tags (500 devices x 30 points, issue #9's 30 MB budget):
//!
//! - [`NameIndex`]: name -> index into a list the plan already owns (tags by
//!   point name, alarms by id). The table holds only `u32` indices and
//!   compares against the owner's names, so no name is stored twice (a
//!   `HashMap<String, TagId>` of 15,000 names held ~1.5 MB: its table plus a
//!   copy of every name).
//! - [`PerTag`]: a short list of `u32` per tag (the alarms watching it, the
//!   alarms it suppresses, its line-pack elements) in two flat vectors. Most
//!   tags have none; a `Vec<Vec<u32>>` spent 24 bytes on each of them.
//!
//! Both are built once when the plan is compiled and only read afterwards.

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Name -> index into a list whose names the caller passes in (`name_of`).
/// Of two entries with the same name the later one wins (as a `HashMap`
/// insert would); validation rejects such configs before they run.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    table: HashTable<u32>,
}

/// Fixed seed: the same names give the same table (the engine is
/// deterministic; nothing here depends on it, but nothing varies either).
fn hash(name: &str) -> u64 {
    FixedState::default().hash_one(name)
}

impl NameIndex {
    /// Indexes entries `0..len`, named by `name_of`.
    pub fn build<'a>(len: usize, name_of: impl Fn(usize) -> &'a str) -> NameIndex {
        let mut table = HashTable::with_capacity(len);
        for i in 0..len {
            let name = name_of(i);
            let h = hash(name);
            let index = i as u32;
            match table.find_mut(h, |&j: &u32| name_of(j as usize) == name) {
                Some(slot) => *slot = index,
                None => {
                    table.insert_unique(h, index, |&j: &u32| hash(name_of(j as usize)));
                }
            }
        }
        NameIndex { table }
    }

    /// The index of the entry named `name`; `name_of` must be the function
    /// the index was built with (over the same, unchanged list).
    pub fn get<'a>(&self, name: &str, name_of: impl Fn(usize) -> &'a str) -> Option<u32> {
        self.table
            .find(hash(name), |&j| name_of(j as usize) == name)
            .copied()
    }
}

/// The index is a function of the names it indexes: two plans with equal
/// names have equivalent indices, so it never makes plans unequal.
impl PartialEq for NameIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A list of `u32` per tag, flat: tag `i`'s list is
/// `items[spans[i].0..spans[i].1]`. Index it like the `Vec<Vec<u32>>` it
/// replaces: `&lists[i]` is a slice (empty past the end). 8 bytes per tag
/// instead of 24, and the engine's lookup stays one bounds check plus a
/// range check (it runs up to three times per sample).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerTag {
    spans: Vec<(u32, u32)>,
    items: Vec<u32>,
}

impl PerTag {
    /// Flattens `(tag, item)` pairs for `tags` tags; a tag's items keep the
    /// order they were given in. Pairs naming a tag `>= tags` are dropped.
    pub fn build(tags: usize, pairs: &[(u32, u32)]) -> PerTag {
        let mut counts = vec![0u32; tags];
        for &(t, _) in pairs {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1;
            }
        }
        let mut spans = Vec::with_capacity(tags);
        let mut end = 0u32;
        for c in counts {
            spans.push((end, end));
            end += c;
        }
        let mut items = vec![0u32; end as usize];
        for &(t, item) in pairs {
            if let Some(span) = spans.get_mut(t as usize) {
                items[span.1 as usize] = item;
                span.1 += 1;
            }
        }
        PerTag { spans, items }
    }

    /// Tag `i`'s list, `None` past the end (as `Vec::get`).
    pub fn get(&self, i: usize) -> Option<&[u32]> {
        let &(a, b) = self.spans.get(i)?;
        self.items.get(a as usize..b as usize)
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl std::ops::Index<usize> for PerTag {
    type Output = [u32];

    #[inline]
    fn index(&self, i: usize) -> &[u32] {
        match self.spans.get(i) {
            Some(&(a, b)) => self.items.get(a as usize..b as usize).unwrap_or(&[]),
            None => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_their_index_and_the_later_duplicate_wins() {
        let names = ["PT_IN", "FT_01", "TT_IN", "FT_01"];
        let idx = NameIndex::build(names.len(), |i| names[i]);
        assert_eq!(idx.get("PT_IN", |i| names[i]), Some(0));
        assert_eq!(idx.get("TT_IN", |i| names[i]), Some(2));
        assert_eq!(idx.get("FT_01", |i| names[i]), Some(3));
        assert_eq!(idx.get("PT_OUT", |i| names[i]), None);
        assert_eq!(idx.get("", |i| names[i]), None);
    }

    #[test]
    fn many_names_all_resolve() {
        let names: Vec<String> = (0..15_000)
            .map(|i| format!("d{}.p{}", i / 30, i % 30))
            .collect();
        let idx = NameIndex::build(names.len(), |i| &names[i]);
        for (i, n) in names.iter().enumerate() {
            assert_eq!(idx.get(n, |i| &names[i]), Some(i as u32));
        }
    }

    #[test]
    fn per_tag_lists_keep_order_and_unlisted_tags_are_empty() {
        let lists = PerTag::build(5, &[(3, 7), (1, 2), (3, 1), (9, 9), (0, 4)]);
        assert_eq!(lists.len(), 5);
        assert_eq!(&lists[0], &[4]);
        assert_eq!(&lists[1], &[2]);
        assert!(lists[2].is_empty());
        assert_eq!(&lists[3], &[7, 1]);
        assert!(lists[4].is_empty());
        assert!(lists[5].is_empty(), "past the end: empty, no panic");
        assert_eq!(lists.get(3), Some(&[7, 1][..]));
        assert_eq!(lists.get(5), None);
        assert!(PerTag::build(0, &[]).is_empty());
    }
}
