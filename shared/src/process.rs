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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn huge_pages_are_off_afterwards() {
        super::disable_transparent_huge_pages().unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
    }
}
