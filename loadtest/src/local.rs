//! `loadtest up`: the whole system on this machine, to try it out: the origin with its embedded
//! store and one edge in front of it, on loopback, until Ctrl-C. The edge follows the origin's
//! control plane (QUIC with mutual TLS, from a development PKI made on the first run), so that a
//! write reaches it within milliseconds.
//!
//! Both run from the executables next to this one, which `cargo run` builds first
//! ([`ensure_built`]). Their output goes to the terminal, and each runs in a process group of its
//! own, so that a Ctrl-C in the terminal reaches this process alone: it then stops the edge and the
//! origin in turn with SIGTERM, killing one that does not exit in time. When either exits
//! unexpectedly, the other is stopped and the run fails.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use shared::tls::EdgeIdentity;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::control::{self, Control, TlsFiles};
use crate::launch::{self, ChildProcess};
use crate::origin_throughput::BOOTSTRAP_TOKEN_VARIABLE;
use crate::{edge_hits, origin_throughput};

/// How long `cargo build` of the origin and the edge may take: a first release build takes minutes.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long each server may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each server may take to exit after SIGTERM before it is killed; the edge takes up to
/// 3 s by default, the origin up to 5 s.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the servers are checked for an exit of their own.
const EXIT_POLL: Duration = Duration::from_millis(200);
/// The number of SIGTERM.
const SIGTERM: i32 = 15;
/// How long the forecast written by the printed example stays fresh in the edge.
const EXAMPLE_VALID_FOR: time::Duration = time::Duration::DAY;
/// The name and region of the edge, in its certificate.
const EDGE_NAME: &str = "edge-1";
const EDGE_REGION: &str = "local";

/// Where the servers of `loadtest up` listen and keep their data.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory of the `origin` and `edge` executables: that of this one.
    pub bin_dir: PathBuf,
    pub origin_listen: SocketAddr,
    pub edge_listen: SocketAddr,
    pub edge_metrics_listen: SocketAddr,
    /// The origin's control plane (UDP), which the edge dials.
    pub control_listen: SocketAddr,
    /// The origin's embedded store, kept across runs.
    pub data_dir: PathBuf,
    /// The development PKI of the control plane, made where missing.
    pub certs_dir: PathBuf,
}

impl Settings {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Fails, naming the option to change, when two addresses of one transport are the same or one
    /// is taken.
    fn ensure_addresses_free(&self) -> Result<()> {
        let addresses = [
            (Transport::Tcp, self.origin_listen, "--origin-listen"),
            (Transport::Tcp, self.edge_listen, "--edge-listen"),
            (Transport::Tcp, self.edge_metrics_listen, "--edge-metrics-listen"),
            (Transport::Udp, self.control_listen, "--control-listen"),
        ];
        for (index, &(transport, address, option)) in addresses.iter().enumerate() {
            let same = |&&(earlier_transport, earlier, _): &&(Transport, SocketAddr, &str)| {
                (earlier_transport, earlier) == (transport, address)
            };
            if let Some((_, _, other)) = addresses[..index].iter().find(same) {
                bail!("{other} and {option} are both {address}");
            }
            transport
                .bind(address)
                .with_context(|| format!("{transport} {address} is taken: choose another address with {option}"))?;
        }
        Ok(())
    }
}

/// What a server listens with on an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// Binds `address` and lets it go at once.
    fn bind(self, address: SocketAddr) -> std::io::Result<()> {
        match self {
            Self::Tcp => TcpListener::bind(address).map(drop),
            Self::Udp => UdpSocket::bind(address).map(drop),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

/// The control plane's files: the origin's, and those of its one edge.
struct Certificates {
    origin: TlsFiles,
    edge: TlsFiles,
}

impl Certificates {
    /// Makes the development PKI in `dir` where it is missing, and prints each file it created.
    fn ensure(dir: &Path) -> Result<Self> {
        let edge = EdgeIdentity::new(EDGE_NAME, EDGE_REGION).context("name the edge")?;
        let created = shared::tls::write_dev_pki(dir, std::slice::from_ref(&edge))
            .with_context(|| format!("make the development PKI in {}", dir.display()))?;
        for path in created {
            eprintln!("up: created {}", path.display());
        }
        Ok(Self {
            origin: TlsFiles::origin(dir),
            edge: TlsFiles::edge(dir, &edge),
        })
    }
}

/// The origin's admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Set in [`BOOTSTRAP_TOKEN_VARIABLE`] by the user, so not printed.
    Configured(String),
    /// Drawn for this run, and printed.
    Generated(String),
}

impl Token {
    /// The value of [`BOOTSTRAP_TOKEN_VARIABLE`] (`configured`) when it is set and not empty; else
    /// a random token.
    pub fn new(configured: Option<String>) -> Self {
        match configured {
            Some(token) if !token.is_empty() => Self::Configured(token),
            _ => Self::Generated(origin_throughput::random_token()),
        }
    }

    fn secret(&self) -> &str {
        match self {
            Self::Configured(token) | Self::Generated(token) => token,
        }
    }
}

/// Makes sure that the origin and the edge of `settings` exist. Given `cargo` (the one that runs
/// this executable), builds them first in the profile of this executable, so that they are current;
/// `manifest_dir` is the package that `cargo run` ran, which finds the workspace from anywhere.
pub fn ensure_built(settings: &Settings, cargo: Option<&OsStr>, manifest_dir: Option<&Path>) -> Result<()> {
    let profile = profile(&settings.bin_dir)?;
    let build = format!("cargo build --profile {profile} -p origin -p edge");
    if let Some(cargo) = cargo {
        eprintln!("up: {build}");
        let command = build_command(cargo, profile, manifest_dir);
        launch::run_bounded_keeping_output("cargo build", command, BUILD_TIMEOUT)
            .context("build the origin and the edge")?;
    }
    for name in ["origin", "edge"] {
        let bin = settings.bin(name);
        ensure!(
            bin.is_file(),
            "{} not found: build it with `{build}`, or run `cargo run --profile {profile} -p loadtest -- up`, \
             which builds it first",
            bin.display()
        );
    }
    Ok(())
}

/// The cargo profile that builds into `bin_dir` (`target/release` → `release`).
fn profile(bin_dir: &Path) -> Result<&str> {
    let folder = bin_dir
        .file_name()
        .and_then(OsStr::to_str)
        .with_context(|| format!("{} names no cargo profile", bin_dir.display()))?;
    // The `dev` profile builds into `debug`, every other one into a folder of its name.
    Ok(if folder == "debug" { "dev" } else { folder })
}

fn build_command(cargo: &OsStr, profile: &str, manifest_dir: Option<&Path>) -> Command {
    let mut command = Command::new(cargo);
    command.args(["build", "--profile", profile, "-p", "origin", "-p", "edge"]);
    if let Some(dir) = manifest_dir {
        command.arg("--manifest-path").arg(dir.join("Cargo.toml"));
    }
    command
}

/// Runs the origin and the edge of `settings` until SIGINT, SIGTERM or SIGHUP, then stops them (see
/// the module documentation). An error when either could not start, or exited without a signal.
pub async fn run(settings: &Settings, token: &Token) -> Result<()> {
    settings.ensure_addresses_free()?;
    let certificates = Certificates::ensure(&settings.certs_dir)?;
    // Before any server starts: from here on, these signals no longer end this process at once.
    let mut signals = StopSignals::listen()?;
    let mut servers = Vec::new();
    let interrupted = tokio::select! {
        biased;
        signal = signals.recv() => Some(Stop::Signal(signal)),
        started = start(settings, token, &certificates, &mut servers) => started.err().map(Stop::Failure),
    };
    let reason = match interrupted {
        Some(reason) => reason,
        None => match print_ready(settings, token, &servers) {
            Ok(()) => watch(&mut servers, &mut signals).await,
            Err(error) => Stop::Failure(error),
        },
    };
    match reason {
        Stop::Signal(signal) => {
            // Written without `eprintln!`, which panics when the terminal is gone (SIGHUP).
            let _ = writeln!(std::io::stderr(), "up: {signal}: stopping the edge and the origin");
            stop(&mut servers)
        }
        Stop::Failure(error) => {
            if let Err(stop_error) = stop(&mut servers) {
                eprintln!("up: {stop_error:#}");
            }
            Err(error)
        }
    }
}

/// Why `up` stops.
enum Stop {
    Signal(&'static str),
    Failure(anyhow::Error),
}

/// Starts the origin, waits until it is ready, then does the same with the edge in front of it, and
/// waits until the edge follows the origin's control plane. Each server goes into `servers` as soon
/// as it runs, so that it is stopped whatever comes next.
async fn start(
    settings: &Settings,
    token: &Token,
    certificates: &Certificates,
    servers: &mut Vec<ChildProcess>,
) -> Result<()> {
    let control = |tls| Control {
        address: settings.control_listen,
        tls,
    };
    let mut command = Command::new(settings.bin("origin"));
    origin_throughput::configure(
        &mut command,
        settings.origin_listen,
        None,
        &settings.data_dir,
        Some(token.secret()),
        Some(control(&certificates.origin)),
    );
    let origin = spawn("origin", command, servers)?;
    let ready = format!("http://{}/readyz", settings.origin_listen);
    launch::wait_ready(origin, &ready, READY_TIMEOUT)
        .await
        .context("start the origin (its output is above)")?;

    let mut command = Command::new(settings.bin("edge"));
    edge_hits::configure(
        &mut command,
        settings.edge_listen,
        settings.edge_metrics_listen,
        settings.origin_listen,
        Some(control(&certificates.edge)),
    );
    let edge = spawn("edge", command, servers)?;
    let healthy = format!("http://{}/healthz", settings.edge_metrics_listen);
    let ready = async {
        launch::wait_ready(edge, &healthy, READY_TIMEOUT).await?;
        launch::wait_listening(edge, settings.edge_listen, READY_TIMEOUT).await
    };
    ready.await.context("start the edge (its output is above)")?;

    let metrics = format!("http://{}/metrics", settings.edge_metrics_listen);
    let mut both: Vec<&mut ChildProcess> = servers.iter_mut().collect();
    launch::wait_metric(&mut both, &metrics, control::CONNECTED_METRIC, READY_TIMEOUT)
        .await
        .with_context(|| {
            format!(
                "connect the edge to the origin's control plane on UDP {} (their output is above)",
                settings.control_listen
            )
        })
}

/// Starts `command` in a process group of its own with its output on the terminal, and keeps it
/// in `servers`.
fn spawn<'a>(name: &str, mut command: Command, servers: &'a mut Vec<ChildProcess>) -> Result<&'a mut ChildProcess> {
    command.process_group(0);
    servers.push(ChildProcess::spawn_keeping_output(name, command)?);
    servers.last_mut().context("no server was kept")
}

fn print_ready(settings: &Settings, token: &Token, servers: &[ChildProcess]) -> Result<()> {
    let [origin, edge] = servers else {
        bail!("{} servers run instead of the origin and the edge", servers.len());
    };
    let now = OffsetDateTime::now_utc();
    let text = ready_text(settings, token, (origin.pid(), edge.pid()), now)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("print the addresses")
}

/// What `up` prints once both servers are ready: where everything is and commands to try, with a
/// forecast generated at `now`. `pids` are the origin's and the edge's.
fn ready_text(settings: &Settings, token: &Token, pids: (u32, u32), now: OffsetDateTime) -> Result<String> {
    let origin = format!("http://{}", settings.origin_listen);
    let edge = format!("http://{}", settings.edge_listen);
    let metrics = format!("http://{}/metrics", settings.edge_metrics_listen);
    let absolute = |path: &Path| std::path::absolute(path).with_context(|| format!("make {} absolute", path.display()));
    let data_dir = absolute(&settings.data_dir)?;
    let certs_dir = absolute(&settings.certs_dir)?;
    let (token_line, export) = match token {
        Token::Generated(token) => (
            format!("{token} (generated for this run; set {BOOTSTRAP_TOKEN_VARIABLE} to choose it)"),
            format!("export TOKEN={token}"),
        ),
        Token::Configured(_) => (
            format!("the value of {BOOTSTRAP_TOKEN_VARIABLE}"),
            format!("export TOKEN=\"${BOOTSTRAP_TOKEN_VARIABLE}\""),
        ),
    };
    let forecast = format!("{edge}/v1/forecasts/AAPL/1h");
    let write = format!(
        "curl -s -w '\\n' -X PUT {origin}/admin/v1/forecasts/AAPL/1h \\\n  \
         -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -d '{}'",
        example_forecast(now)?
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "\
up: ready, origin pid {origin_pid}, edge pid {edge_pid}

  origin API   {origin}   embedded store in {data_dir}
  edge         {edge}   a cache in front of the origin, for readers
  control      UDP {control}   QUIC from the origin to the edge, certificates in {certs_dir}
  metrics      {origin}/metrics   {metrics} (edge)
  OpenAPI      {origin}/openapi.json
  admin token  {token_line}

Try it from another terminal:

{export}
# write a forecast (201 the first time, 200 after)
{write}
# read it through the edge twice: cache-status fwd=miss and stored, then hit
curl -si {forecast} | grep -iE '^(cache-status|etag):'
curl -si {forecast} | grep -iE '^(cache-status|age):'
# send its ETag back: 304 Not Modified, answered by the edge from its cache
ETAG=$(curl -sI {forecast} | grep -i '^etag:' | cut -d' ' -f2 | tr -d '\\r')
curl -si {forecast} -H \"If-None-Match: $ETAG\" | head -1
# write it again, a new version: its purge reaches the edge within milliseconds, over the control plane
{write}
# so the edge fetches the new version: cache-status fwd=miss, and its ETag
curl -si {forecast} | grep -iE '^(cache-status|etag):'
# the invalidation log: a purge of the forecast's tag per write
curl -s -w '\\n' '{origin}/admin/v1/invalidations?after=0' -H \"Authorization: Bearer $TOKEN\"

Ctrl-C stops the edge and the origin.
",
        origin_pid = pids.0,
        edge_pid = pids.1,
        control = settings.control_listen,
        data_dir = data_dir.display(),
        certs_dir = certs_dir.display(),
    );
    Ok(text)
}

/// The forecast of the README's example, generated at `now` and valid for a day, so that the edge
/// keeps it fresh.
fn example_forecast(now: OffsetDateTime) -> Result<String> {
    let now = now.replace_nanosecond(0).context("truncate the time to seconds")?;
    let generated_at = now.format(&Rfc3339).context("format generated_at")?;
    let valid_until = (now + EXAMPLE_VALID_FOR)
        .format(&Rfc3339)
        .context("format valid_until")?;
    Ok(format!(
        r#"{{
  "horizon":"1h","generated_at":"{generated_at}","valid_until":"{valid_until}",
  "model":{{"id":"lstm","version":"3.2.0"}},"point":187.42,
  "quantiles":{{"0.05":181.2,"0.5":187.4,"0.95":193.9}},"direction_prob_up":0.61,
  "intervals":[{{"level":0.9,"lower":182.0,"upper":193.0}}],
  "metadata":{{"features":"ohlcv"}}}}"#
    ))
}

/// Waits for a stop signal, or for a server to exit without one, which is a failure. As long as the
/// servers run, so does this: that is what `up` is for.
async fn watch(servers: &mut [ChildProcess], signals: &mut StopSignals) -> Stop {
    let mut poll = tokio::time::interval(EXIT_POLL);
    loop {
        tokio::select! {
            biased;
            signal = signals.recv() => return Stop::Signal(signal),
            _ = poll.tick() => {
                if let Some(failure) = exited(servers) {
                    return Stop::Failure(failure);
                }
            }
        }
    }
}

/// What ended the first of `servers` that has exited, if one has.
fn exited(servers: &mut [ChildProcess]) -> Option<anyhow::Error> {
    servers.iter_mut().find_map(|server| match server.try_wait() {
        Ok(None) => None,
        Ok(Some(status)) => Some(anyhow!(
            "{} (pid {}) exited unexpectedly with {status} (its output is above)",
            server.name(),
            server.pid()
        )),
        Err(error) => Some(error),
    })
}

/// Stops the servers still running, the last started first (the edge before its origin): SIGTERM,
/// then SIGKILL after [`STOP_TIMEOUT`]. An error when one had to be killed or did not exit cleanly.
fn stop(servers: &mut [ChildProcess]) -> Result<()> {
    let mut problems = Vec::new();
    for server in servers.iter_mut().rev() {
        match server.try_wait() {
            // Reported already, by the wait for it to be ready or by `watch`.
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(error) => {
                problems.push(format!("{error:#}"));
                continue;
            }
        }
        match server.terminate(STOP_TIMEOUT) {
            // Ended by the signal itself when it came before the server listened for it.
            Ok(status) if status.success() || status.signal() == Some(SIGTERM) => {}
            Ok(status) => problems.push(format!(
                "{} (pid {}) exited with {status} after SIGTERM",
                server.name(),
                server.pid()
            )),
            Err(error) => problems.push(format!("{error:#}")),
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// The signals that stop `up`: SIGINT (Ctrl-C), SIGTERM, and SIGHUP (the terminal closed).
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    /// Listens from now on; a signal that comes before [`StopSignals::recv`] is kept for it.
    fn listen() -> Result<Self> {
        let listen = |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("listen for {name}"));
        Ok(Self {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            hangup: listen(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The name of the next signal.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn settings() -> Settings {
        let address = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Settings {
            bin_dir: PathBuf::from("/w/target/release"),
            origin_listen: address(8080),
            edge_listen: address(8081),
            edge_metrics_listen: address(9081),
            control_listen: address(4433),
            data_dir: PathBuf::from("/w/.data/origin"),
            certs_dir: PathBuf::from("/w/certs"),
        }
    }

    #[test]
    fn builds_in_the_profile_of_the_executable() {
        assert_eq!(profile(Path::new("/w/target/release")).unwrap(), "release");
        assert_eq!(profile(Path::new("/w/target/debug")).unwrap(), "dev");
        assert_eq!(profile(Path::new("/w/target/bench")).unwrap(), "bench");
        assert!(profile(Path::new("/")).is_err());

        let command = build_command(OsStr::new("/c/cargo"), "release", Some(Path::new("/w/loadtest")));
        assert_eq!(command.get_program(), "/c/cargo");
        let args: Vec<&OsStr> = command.get_args().collect();
        assert_eq!(
            args,
            [
                "build",
                "--profile",
                "release",
                "-p",
                "origin",
                "-p",
                "edge",
                "--manifest-path",
                "/w/loadtest/Cargo.toml"
            ]
        );
        assert_eq!(build_command(OsStr::new("cargo"), "dev", None).get_args().count(), 7);
    }

    #[test]
    fn missing_executables_say_how_to_build_them() {
        let dir = tempfile::tempdir().unwrap();
        let bin_dir = dir.path().join("release");
        std::fs::create_dir(&bin_dir).unwrap();
        let settings = Settings {
            bin_dir: bin_dir.clone(),
            ..settings()
        };
        let error = ensure_built(&settings, None, None).unwrap_err().to_string();
        assert!(error.contains("release/origin not found"), "{error}");
        assert!(
            error.contains("cargo build --profile release -p origin -p edge"),
            "{error}"
        );

        std::fs::write(bin_dir.join("origin"), "").unwrap();
        std::fs::write(bin_dir.join("edge"), "").unwrap();
        ensure_built(&settings, None, None).unwrap();
    }

    #[test]
    fn chooses_the_token() {
        assert_eq!(
            Token::new(Some("chosen".to_owned())),
            Token::Configured("chosen".to_owned())
        );
        for unset in [None, Some(String::new())] {
            let Token::Generated(token) = Token::new(unset) else {
                panic!("no token was generated");
            };
            assert_eq!(token.len(), 32);
        }
    }

    #[test]
    fn refuses_the_same_address_twice() {
        let settings = Settings {
            edge_metrics_listen: settings().edge_listen,
            ..settings()
        };
        let error = settings.ensure_addresses_free().unwrap_err().to_string();
        assert!(
            error.contains("--edge-listen and --edge-metrics-listen are both 127.0.0.1:8081"),
            "{error}"
        );
    }

    /// Free addresses for every server, the control plane's on the port of the origin's API, which
    /// is allowed: one is TCP, the other UDP.
    fn free_settings() -> Settings {
        let address = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let origin_listen = address(launch::free_port().unwrap());
        Settings {
            origin_listen,
            edge_listen: address(launch::free_port().unwrap()),
            edge_metrics_listen: address(launch::free_port().unwrap()),
            control_listen: origin_listen,
            ..settings()
        }
    }

    #[test]
    fn names_the_option_of_a_taken_address() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let settings = Settings {
            edge_listen: taken.local_addr().unwrap(),
            ..free_settings()
        };
        let error = settings.ensure_addresses_free().unwrap_err().to_string();
        assert!(error.contains("choose another address with --edge-listen"), "{error}");
    }

    #[test]
    fn checks_the_control_plane_address_over_udp() {
        free_settings().ensure_addresses_free().unwrap();

        let taken = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let settings = Settings {
            control_listen: taken.local_addr().unwrap(),
            ..free_settings()
        };
        let error = settings.ensure_addresses_free().unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "UDP {} is taken: choose another address with --control-listen",
                settings.control_listen
            )),
            "{error}"
        );
    }

    #[test]
    fn makes_the_development_pki_once() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let certificates = Certificates::ensure(&certs).unwrap();
        for file in [
            &certificates.origin.ca,
            &certificates.origin.cert,
            &certificates.origin.key,
            &certificates.edge.cert,
            &certificates.edge.key,
        ] {
            assert!(file.is_file(), "{} was not made", file.display());
        }
        assert_eq!(certificates.edge.cert, certs.join("edge-edge-1.pem"));
        let before = std::fs::read(&certificates.edge.cert).unwrap();
        Certificates::ensure(&certs).unwrap();
        assert_eq!(std::fs::read(&certificates.edge.cert).unwrap(), before);
    }

    #[test]
    fn ready_text_has_the_addresses_and_working_examples() {
        let now = OffsetDateTime::from_unix_timestamp(1_795_960_800).unwrap();
        let token = Token::Generated("5c0f".to_owned());
        let text = ready_text(&settings(), &token, (41, 42), now).unwrap();
        for expected in [
            "origin pid 41, edge pid 42",
            "http://127.0.0.1:8080   embedded store in /w/.data/origin",
            "http://127.0.0.1:8080/metrics   http://127.0.0.1:9081/metrics (edge)",
            "UDP 127.0.0.1:4433   QUIC from the origin to the edge, certificates in /w/certs",
            "http://127.0.0.1:8080/openapi.json",
            "export TOKEN=5c0f\n",
            "curl -s -w '\\n' -X PUT http://127.0.0.1:8080/admin/v1/forecasts/AAPL/1h \\\n",
            "curl -si http://127.0.0.1:8081/v1/forecasts/AAPL/1h | grep",
            "-H \"If-None-Match: $ETAG\"",
            "curl -s -w '\\n' 'http://127.0.0.1:8080/admin/v1/invalidations?after=0' -H \"Authorization: Bearer $TOKEN\"",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
        }
        // The body of each write, after `-d '`, up to the closing quote.
        let bodies: Vec<&str> = text
            .split("application/json' -d '")
            .skip(1)
            .map(|rest| rest.split('\'').next().unwrap())
            .collect();
        assert_eq!(bodies.len(), 2, "{text}");
        assert_eq!(bodies[0], bodies[1]);
        let body: serde_json::Value = serde_json::from_str(bodies[0]).unwrap();
        assert_eq!(body["generated_at"], "2026-11-29T14:00:00Z");
        assert_eq!(body["valid_until"], "2026-11-30T14:00:00Z");
        assert_eq!(body["intervals"][0]["level"], 0.9);

        let token = Token::Configured("secret".to_owned());
        let text = ready_text(&settings(), &token, (41, 42), now).unwrap();
        assert!(!text.contains("secret"), "{text}");
        assert!(
            text.contains("export TOKEN=\"$ORIGIN_AUTH__BOOTSTRAP_TOKEN\"\n"),
            "{text}"
        );
    }
}
