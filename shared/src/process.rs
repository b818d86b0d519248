//! Settings of the server processes themselves.

/// Turns transparent huge pages off for this process.
///
/// mimalloc asks for huge pages on its arenas. The first touch of each 2 MiB page then zeroes all of
/// it inside the page fault, and memory the allocator returns and touches again is zeroed again:
/// stalls of tens of milliseconds, in bursts, measured on the edge under steady load (every edge of a
/// host at once, as they run the same code on the same clock). A latency-bound server prefers small
/// pages; Redis gives the same advice for the same reason. Later faults of every mapping use small
/// pages once this is set.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(())
}

/// [`disable_transparent_huge_pages`], with a warning when the system refuses (a sandbox forbidding
/// `prctl`): the process runs all the same.
pub fn disable_transparent_huge_pages_or_warn() {
    if let Err(error) = disable_transparent_huge_pages() {
        tracing::warn!(%error, "transparent huge pages stay on: responses may stall while pages are zeroed");
    }
}

/// The open-file limit this process runs with after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft open-file limit to the hard one. Every connection is a file: a soft limit of 256 or
/// 1024 (the defaults of many systems) caps a server's connections far below what the host allows.
pub fn raise_open_file_limit() -> std::io::Result<OpenFileLimit> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    Ok(OpenFileLimit { before, now })
}

/// [`raise_open_file_limit`], logging the limit the process got (or why it kept the old one).
pub fn raise_open_file_limit_and_log() {
    match raise_open_file_limit() {
        Ok(OpenFileLimit { before, now }) => tracing::info!(before, now, "open-file limit"),
        Err(error) => tracing::warn!(%error, "open-file limit stays as it was"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        let limit = super::raise_open_file_limit().unwrap();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        assert_eq!(Some(limit.now), hard.or(Some(u64::MAX)));
        assert!(limit.now >= limit.before);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_off_afterwards() {
        super::disable_transparent_huge_pages().unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
