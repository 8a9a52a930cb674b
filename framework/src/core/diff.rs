//! The difference between two views of a keyed set: what changed from the view a follower knew
//! to the one it has just read.
//!
//! A follower that lost its change stream (a broken watch) reads everything again and reports
//! the difference as changes, so that whoever follows it misses nothing and sees nothing twice.

use std::collections::BTreeMap;

/// A change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change<T> {
    /// The key was written: its previous value (if it had one) and the new one.
    Put { old: Option<T>, new: T },
    /// The key was deleted: its last value.
    Delete { old: T },
}

/// The changes that turn `before` into `after`, each with its key: first a [`Change::Put`] for
/// every key that is new or whose value differs, in key order, then a [`Change::Delete`] for
/// every key that is gone, in key order. A key whose value is unchanged yields nothing.
pub(crate) fn diff<'a, K: Ord, T: PartialEq + Clone>(
    before: &'a BTreeMap<K, T>,
    after: &'a BTreeMap<K, T>,
) -> Vec<(&'a K, Change<T>)> {
    let puts = after.iter().filter_map(|(key, new)| {
        let old = before.get(key);
        (old != Some(new)).then(|| {
            let change = Change::Put {
                old: old.cloned(),
                new: new.clone(),
            };
            (key, change)
        })
    });
    let deletes = before
        .iter()
        .filter(|(key, _)| !after.contains_key(*key))
        .map(|(key, old)| (key, Change::Delete { old: old.clone() }));
    puts.chain(deletes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(entries: &[(&'static str, u32)]) -> BTreeMap<&'static str, u32> {
        entries.iter().copied().collect()
    }

    fn put(key: &'static str, old: Option<u32>, new: u32) -> (&'static str, Change<u32>) {
        (key, Change::Put { old, new })
    }

    fn delete(key: &'static str, old: u32) -> (&'static str, Change<u32>) {
        (key, Change::Delete { old })
    }

    fn changes(
        before: &[(&'static str, u32)],
        after: &[(&'static str, u32)],
    ) -> Vec<(&'static str, Change<u32>)> {
        let (before, after) = (view(before), view(after));
        diff(&before, &after)
            .into_iter()
            .map(|(key, change)| (*key, change))
            .collect()
    }

    #[test]
    fn two_empty_views_differ_in_nothing() {
        assert_eq!(changes(&[], &[]), []);
    }

    #[test]
    fn from_nothing_everything_is_put() {
        assert_eq!(
            changes(&[], &[("b", 2), ("a", 1)]),
            [put("a", None, 1), put("b", None, 2)]
        );
    }

    #[test]
    fn to_nothing_everything_is_deleted() {
        assert_eq!(
            changes(&[("b", 2), ("a", 1)], &[]),
            [delete("a", 1), delete("b", 2)]
        );
    }

    #[test]
    fn an_added_key_is_put_without_an_old_value() {
        assert_eq!(
            changes(&[("a", 1)], &[("a", 1), ("b", 2)]),
            [put("b", None, 2)]
        );
    }

    #[test]
    fn a_removed_key_is_deleted_with_its_last_value() {
        assert_eq!(
            changes(&[("a", 1), ("b", 2)], &[("a", 1)]),
            [delete("b", 2)]
        );
    }

    #[test]
    fn a_changed_value_is_put_with_the_old_one() {
        assert_eq!(changes(&[("a", 1)], &[("a", 5)]), [put("a", Some(1), 5)]);
    }

    #[test]
    fn an_unchanged_view_differs_in_nothing() {
        assert_eq!(changes(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)]), []);
    }

    #[test]
    fn puts_come_first_then_deletes_each_in_key_order() {
        assert_eq!(
            changes(
                &[("a", 1), ("c", 3), ("d", 4), ("f", 6)],
                &[("b", 2), ("c", 30), ("d", 4), ("e", 5)]
            ),
            [
                put("b", None, 2),
                put("c", Some(3), 30),
                put("e", None, 5),
                delete("a", 1),
                delete("f", 6),
            ]
        );
    }

    #[test]
    fn applying_the_changes_to_the_old_view_gives_the_new_one() {
        let before = view(&[("a", 1), ("c", 3), ("d", 4)]);
        let after = view(&[("b", 2), ("c", 30), ("d", 4)]);
        let mut applied = before.clone();
        for (key, change) in diff(&before, &after) {
            match change {
                Change::Put { new, .. } => {
                    applied.insert(*key, new);
                }
                Change::Delete { .. } => {
                    applied.remove(key);
                }
            }
        }
        assert_eq!(applied, after);
    }
}
