//! How a [`Route`] compares and hashes: by its text, through a digest taken once.

use std::sync::Arc;

use super::Route;

/// A digest of a route's text, keyed per process: equal texts get equal digests, and a peer
/// cannot choose texts that collide (it does not know the key).
pub(super) fn text_digest(text: &str) -> u64 {
    use std::hash::BuildHasher as _;
    static KEY: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(foldhash::fast::RandomState::default)
        .hash_one(text)
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        // `at` follows from the text.
        Arc::ptr_eq(&self.text, &other.text)
            || (self.digest == other.digest && self.text == other.text)
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl PartialOrd for Route {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Route {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}
