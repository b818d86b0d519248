//! What the measurements share: the record of the machine they ran on, the warm-up before each
//! measured run, and the random reads.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use hyper::{Request, Uri};
use rand::Rng;
use serde::Serialize;

use crate::http::{self, Body};
use crate::launch::Pinning;

/// The machine and software a report was measured with.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to this process before it pinned itself.
    pub nproc: usize,
    pub pinning: Option<Pinning>,
    pub git_rev: Option<String>,
    /// The version line of each program measured or compared with, such as `redis-server`.
    pub versions: BTreeMap<String, String>,
}

impl Machine {
    /// This machine, with the version of each of `programs` that runs (`program`, its version
    /// argument).
    pub fn describe(nproc: usize, pinning: Option<Pinning>, programs: &[(&str, &str)]) -> Self {
        let versions = programs
            .iter()
            .filter_map(|&(program, argument)| Some((program.to_owned(), program_version(program, argument)?)))
            .collect();
        Self {
            nproc,
            pinning,
            git_rev: first_output_line(Command::new("git").args(["rev-parse", "--short", "HEAD"])),
            versions,
        }
    }
}

/// The first line `program argument` prints, on stdout or else on stderr (where nginx and
/// varnishd print their versions); `None` when it does not run or fails.
fn program_version(program: &str, argument: &str) -> Option<String> {
    first_output_line(Command::new(program).arg(argument))
}

fn first_output_line(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    let text = String::from_utf8_lossy(&text);
    Some(text.lines().next()?.trim().to_owned())
}

/// Reads before each measured run, not counted: connections open and caches fill.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 5).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// A request generator that GETs one of `paths` at random.
pub fn random_reads(paths: Arc<[Uri]>) -> impl Fn(u64) -> Result<Request<Body>> + Clone + Send + Sync + 'static {
    move |_| Ok(http::get_uri(paths[rand::rng().random_range(0..paths.len())].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_a_fifth_within_bounds() {
        assert_eq!(warmup(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(warmup(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(warmup(Duration::from_secs(1)), Duration::from_millis(200));
        assert_eq!(warmup(Duration::from_secs(60)), Duration::from_secs(2));
    }

    #[test]
    fn records_versions_of_programs_that_run() {
        let machine = Machine::describe(2, None, &[("echo", "v1.2"), ("no-such-program-here", "-v")]);
        assert_eq!(machine.nproc, 2);
        assert_eq!(machine.versions["echo"], "v1.2");
        assert!(!machine.versions.contains_key("no-such-program-here"));
    }

    #[test]
    fn random_reads_pick_among_the_paths() {
        let paths: Arc<[Uri]> = ["/a", "/b"].into_iter().map(Uri::from_static).collect();
        let read = random_reads(paths);
        for index in 0..20 {
            let path = read(index).unwrap().uri().path().to_owned();
            assert!(path == "/a" || path == "/b", "{path}");
        }
    }
}
