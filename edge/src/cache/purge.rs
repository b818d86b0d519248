//! What a purge selects, and the log of recent purges that keeps an in-flight fill from storing a
//! response a purge issued after the fill began has already invalidated.

use std::collections::VecDeque;

/// Which entries a purge addresses. All Vary variants of a logical key go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One logical key: path and query, such as `/v1/forecasts/AAPL/1h`.
    Key(String),
    /// Every logical key starting with this text.
    Prefix(String),
    /// Every entry whose response carried this surrogate tag (`Surrogate-Key` or `Cache-Tag`).
    Tag(String),
    /// Everything.
    All,
}

impl Selector {
    pub fn matches(&self, logical_key: &str, tags: &[Box<str>]) -> bool {
        match self {
            Self::Key(key) => logical_key == key,
            Self::Prefix(prefix) => logical_key.starts_with(prefix.as_str()),
            Self::Tag(tag) => tags.iter().any(|t| **t == **tag),
            Self::All => true,
        }
    }

    /// The metric label of this kind of selector.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Key(_) => "key",
            Self::Prefix(_) => "prefix",
            Self::Tag(_) => "tag",
            Self::All => "all",
        }
    }
}

/// Delete the entries, or keep them and mark them stale so the next read revalidates (and may serve
/// the stale body meanwhile, within its stale-while-revalidate window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeMode {
    Hard,
    Soft,
}

/// Recent purges by epoch. Bounded: once older purges are dropped, a fill that began before the
/// oldest kept one cannot be cleared and is refused, which costs a refetch, never a stale entry.
#[derive(Debug)]
pub struct PurgeLog {
    recent: VecDeque<(u64, Selector)>,
    capacity: usize,
    /// Epoch of the newest purge dropped from `recent` (0: none dropped).
    dropped_through: u64,
    epoch: u64,
}

impl PurgeLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            recent: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
            dropped_through: 0,
            epoch: 0,
        }
    }

    /// The epoch a fill starting now carries.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records a purge and returns its epoch.
    pub fn record(&mut self, selector: Selector) -> u64 {
        self.epoch += 1;
        if self.recent.len() == self.capacity
            && let Some((dropped, _)) = self.recent.pop_front()
        {
            self.dropped_through = dropped;
        }
        self.recent.push_back((self.epoch, selector));
        self.epoch
    }

    /// Whether a fill that began at `fill_epoch` for this entry may be stored.
    pub fn admits(&self, fill_epoch: u64, logical_key: &str, tags: &[Box<str>]) -> bool {
        if fill_epoch < self.dropped_through {
            return false;
        }
        self.recent
            .iter()
            .rev()
            .take_while(|(epoch, _)| *epoch > fill_epoch)
            .all(|(_, selector)| !selector.matches(logical_key, tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<Box<str>> {
        list.iter().map(|t| Box::from(*t)).collect()
    }

    #[test]
    fn selectors_match_keys_prefixes_tags_and_everything() {
        let t = tags(&["AAPL", "model:lstm"]);
        assert!(Selector::Key("/a/b".into()).matches("/a/b", &t));
        assert!(!Selector::Key("/a".into()).matches("/a/b", &t));
        assert!(Selector::Prefix("/a".into()).matches("/a/b", &t));
        assert!(!Selector::Prefix("/b".into()).matches("/a/b", &t));
        assert!(Selector::Tag("model:lstm".into()).matches("/x", &t));
        assert!(!Selector::Tag("MSFT".into()).matches("/x", &t));
        assert!(Selector::All.matches("/x", &[]));
    }

    #[test]
    fn a_fill_is_refused_only_by_matching_purges_issued_after_it_began() {
        let mut log = PurgeLog::new(16);
        log.record(Selector::Key("/a".into()));
        let started = log.epoch();
        assert!(
            log.admits(started, "/a", &[]),
            "a purge before the fill does not concern it"
        );
        log.record(Selector::Key("/b".into()));
        assert!(log.admits(started, "/a", &[]));
        log.record(Selector::Tag("T".into()));
        assert!(log.admits(started, "/a", &[]));
        assert!(!log.admits(started, "/a", &tags(&["T"])));
        assert!(!log.admits(started, "/b", &[]));
    }

    #[test]
    fn fills_older_than_the_kept_log_are_refused() {
        let mut log = PurgeLog::new(2);
        let started = log.epoch();
        for i in 0..3 {
            log.record(Selector::Key(format!("/other/{i}")));
        }
        assert!(!log.admits(started, "/a", &[]));
        assert!(log.admits(log.epoch(), "/a", &[]));
    }
}
