//! The edge's memory: the budget holds under eviction, and no plaintext of a cached body stays in the
//! process once the requests that served it are over.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use crate::support::{Edge, Reply, ScriptedOrigin, random_bytes, random_hex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_memory_budget_evicts_and_the_cache_keeps_serving() {
    const BUDGET: usize = 64 * 1024;
    let budget = BUDGET.to_string();
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[("EDGE_CACHE__MEMORY_BYTES", &budget)]).await;
    for i in 0..100 {
        let path = format!("/e/{i}");
        let body = random_bytes(2048);
        origin.set(&path, Reply::cached(body.clone(), "max-age=600"));
        let response = edge.get(&path).await;
        assert_eq!(response.body, body, "{path}");
    }

    let evictions = edge.metric("edge_cache_evictions_total").await;
    let used = edge.metric("edge_cache_memory_bytes").await;
    let entries = edge.metric("edge_cache_entries").await;
    assert!(evictions > 0.0, "nothing was evicted");
    assert!(
        used > 0.0 && used <= BUDGET as f64,
        "{used} bytes held for a budget of {BUDGET}"
    );
    assert!(entries < 100.0, "{entries} entries of 2 KiB fit in 64 KiB");
    assert_eq!(edge.metric("edge_cache_memory_budget_bytes").await, BUDGET as f64);

    origin.set("/after", Reply::cached("after", "max-age=600"));
    assert_eq!(edge.get("/after").await.text(), "after");
    assert!(edge.get("/after").await.is_hit(), "the cache stopped storing");
    assert_eq!(edge.get("/e/0").await.status, 200);
}

/// Where a needle was found in another process's memory.
#[derive(Debug)]
struct Found {
    address: u64,
    /// The line of `/proc/PID/maps` of the region holding it.
    region: String,
}

/// Every occurrence of `needle` in the memory of process `pid` that is actually backed (resident or
/// swapped pages, as `/proc/PID/pagemap` tells): pages never touched or given back read as zeros.
fn scan_memory(pid: u32, needle: &[u8]) -> Vec<Found> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut memory = File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut pagemap = File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let page = page_size(pid);
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(permissions)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !permissions.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        for (run_start, run_end) in backed_runs(&mut pagemap, start, end, page) {
            let mut bytes = vec![0u8; usize::try_from(run_end - run_start).unwrap()];
            let read = memory
                .seek(SeekFrom::Start(run_start))
                .and_then(|_| memory.read_exact(&mut bytes));
            if read.is_err() {
                continue;
            }
            found.extend(find_all(&bytes, needle).map(|offset| Found {
                address: run_start + offset as u64,
                region: line.to_owned(),
            }));
        }
    }
    found
}

/// The runs of pages in `start..end` that are resident or swapped (bits 63 and 62 of pagemap entries).
fn backed_runs(pagemap: &mut File, start: u64, end: u64, page: u64) -> Vec<(u64, u64)> {
    let pages = usize::try_from((end - start) / page).unwrap();
    let mut entries = vec![0u8; pages * 8];
    let read = pagemap
        .seek(SeekFrom::Start(start / page * 8))
        .and_then(|_| pagemap.read_exact(&mut entries));
    if read.is_err() {
        // Without pagemap, the whole region is read.
        return vec![(start, end)];
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (index, entry) in entries.chunks_exact(8).enumerate() {
        let entry = u64::from_le_bytes(entry.try_into().unwrap());
        if entry >> 62 == 0 {
            continue;
        }
        let page_start = start + index as u64 * page;
        match runs.last_mut() {
            Some((_, run_end)) if *run_end == page_start => *run_end += page,
            _ => runs.push((page_start, page_start + page)),
        }
    }
    runs
}

fn page_size(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let kib: u64 = smaps
        .lines()
        .find_map(|line| line.strip_prefix("KernelPageSize:"))
        .and_then(|value| value.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("smaps names the page size");
    kib * 1024
}

fn find_all<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle[0];
    haystack
        .iter()
        .enumerate()
        .filter(move |&(_, &byte)| byte == first)
        .map(|(offset, _)| offset)
        .filter(move |&offset| haystack[offset..].starts_with(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_of_a_cached_body_stays_in_the_edge_process() {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    let marker = random_hex(16);
    let padding = "p".repeat(900);
    let body = format!(r#"{{"instrument":"AAPL","secret":"{marker}","padding":"{padding}"}}"#);
    origin.set("/secret", Reply::cached(body.clone(), "max-age=600"));
    for _ in 0..5 {
        assert_eq!(edge.get("/secret").await.text(), body);
    }
    // Let the worker finish with the last request's buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let found = scan_memory(edge.process.pid(), marker.as_bytes());
    let control = scan_memory(edge.process.pid(), b"edge_cache_requests_total");
    assert!(
        !control.is_empty(),
        "the scan cannot even find a metric name in the edge's memory"
    );
    assert!(edge.get("/secret").await.is_hit(), "the entry is no longer cached");
    let listing: Vec<String> = found
        .iter()
        .map(|found| format!("{:#x} in {}", found.address, found.region))
        .collect();
    assert!(
        found.is_empty(),
        "{} copies of the cached body's plaintext in the edge's memory:\n{}",
        found.len(),
        listing.join("\n")
    );
}
