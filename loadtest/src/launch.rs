//! Starts the processes that integration tests and measurements need, on loopback only.
//!
//! Every process is owned by a value that kills it (SIGKILL) and reaps it on drop, so an error or a
//! panic never leaves a server behind. Output of a child goes to a log file in its own temporary
//! directory, or to the terminal when `LOADTEST_VERBOSE=1` (or where the caller says, with
//! [`ChildProcess::spawn_keeping_output`]); the log is kept when the owner is dropped during a panic,
//! and its path is printed so a failing test can be diagnosed.

use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tempfile::TempDir;

/// How often the blocking waits in this module look again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long a Redis server may take to answer its first PING.
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect, read and write timeout of one Redis command sent by [`redis_command`].
const REDIS_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// A server started on a port found by [`free_port`] may lose the port to another process in between.
const REDIS_START_ATTEMPTS: usize = 3;
/// How long `redis-cli --cluster create` may take, and then the cluster to report `cluster_state:ok`.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// One readiness probe of [`wait_ready`]; the process is checked for an early exit in between.
const READY_PROBE: Duration = Duration::from_millis(250);
/// How long [`ProcessTree`] waits for the processes it killed to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How many lines of a child's log an error message quotes.
const LOG_LINES_IN_ERRORS: usize = 20;
/// How much of the end of a log [`ChildProcess::log_tail`] reads at most.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

const CLUSTER_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
];

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0 to find a free port")?;
    let address = listener
        .local_addr()
        .context("read the address of a listener bound to port 0")?;
    Ok(address.port())
}

/// Whether children inherit the terminal instead of writing to a log file (`LOADTEST_VERBOSE=1`).
pub fn verbose() -> bool {
    std::env::var_os("LOADTEST_VERBOSE").is_some_and(|value| value == "1")
}

/// Finds an executable by name in the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether `taskset` (util-linux) is available to pin processes to CPUs.
pub fn taskset_available() -> bool {
    find_on_path("taskset").is_some()
}

/// A command for `program`, run under `taskset -c CPU` when `cpu` is given and `taskset` exists.
///
/// `taskset` executes the program in its own process, so the PID of the child is the program's.
pub fn command_on_cpu(program: impl AsRef<OsStr>, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) if taskset_available() => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        _ => Command::new(program),
    }
}

/// Keeps `command` from inheriting the environment variables whose names start with `prefix`, such
/// as the configuration of a server (`ORIGIN_`) set in the shell that runs loadtest.
pub fn remove_env_prefixed(command: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            command.env_remove(key);
        }
    }
}

/// Pins every thread of process `pid` to `cpu` (`taskset -a -cp CPU PID`); threads and children
/// created afterwards inherit the affinity.
pub fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    let output = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("run taskset (install the Debian package util-linux)")?;
    ensure!(
        output.status.success(),
        "taskset could not pin pid {pid} to cpu {cpu}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Which CPU the servers under test and the load generator run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub server_cpu: usize,
    pub load_cpu: usize,
}

impl Pinning {
    /// With two CPUs or more and `taskset` available, pins this process to CPU 1 and returns the
    /// pinning that servers started later should follow (CPU 0). Call it before any thread starts:
    /// threads and children inherit the affinity.
    pub fn apply(nproc: usize) -> Result<Option<Self>> {
        if nproc < 2 || !taskset_available() {
            return Ok(None);
        }
        let pinning = Self {
            server_cpu: 0,
            load_cpu: 1,
        };
        pin_process(std::process::id(), pinning.load_cpu).context("pin the load generator")?;
        Ok(Some(pinning))
    }

    pub fn server_cpu(pinning: Option<Self>) -> Option<usize> {
        pinning.map(|pinning| pinning.server_cpu)
    }

    pub fn load_cpu(pinning: Option<Self>) -> Option<usize> {
        pinning.map(|pinning| pinning.load_cpu)
    }
}

fn ensure_redis_installed(program: &str) -> Result<()> {
    ensure!(
        find_on_path(program).is_some(),
        "{program} is not on PATH: install the Debian package `redis-server` (apt-get install redis-server)"
    );
    Ok(())
}

/// Where a child's stdout and stderr go.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    /// The directory holding the log; taken (and so kept on disk) when the owner drops during a panic.
    dir: Option<TempDir>,
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    /// `None` when the output is inherited (`LOADTEST_VERBOSE=1`).
    log: Option<Log>,
}

impl ChildProcess {
    /// Starts `command`; `name` appears in log file names and error messages.
    ///
    /// Stdin is closed; stdout and stderr go to one log file, or to the terminal when [`verbose`].
    pub fn spawn(name: &str, command: Command) -> Result<Self> {
        Self::spawn_with(name, command, verbose())
    }

    /// Starts `command` with its stdout and stderr as it sets them: inherited (the terminal) unless
    /// it redirects them. Stdin is closed; the child has no log file.
    pub fn spawn_keeping_output(name: &str, command: Command) -> Result<Self> {
        Self::spawn_with(name, command, true)
    }

    fn spawn_with(name: &str, mut command: Command, inherit_output: bool) -> Result<Self> {
        let log = if inherit_output {
            None
        } else {
            let dir = tempfile::Builder::new()
                .prefix(&format!("loadtest-{name}-"))
                .tempdir()
                .with_context(|| format!("create a log directory for {name}"))?;
            let path = dir.path().join(format!("{name}.log"));
            let stdout = File::create(&path).with_context(|| format!("create log file {}", path.display()))?;
            let stderr = stdout
                .try_clone()
                .with_context(|| format!("share log file {}", path.display()))?;
            command.stdout(stdout).stderr(stderr);
            Some(Log { path, dir: Some(dir) })
        };
        command.stdin(Stdio::null());
        let child = command
            .spawn()
            .with_context(|| format!("start {name} ({})", command.get_program().to_string_lossy()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding stdout and stderr, or `None` when the output is inherited.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_ref().map(|log| log.path.as_path())
    }

    /// The last `lines` lines of the log (from its last 64 KiB), or a note when there is no log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(log) = &self.log else {
            return format!("(output of {} goes to the terminal)", self.name);
        };
        match read_tail(&log.path) {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(error) => format!("(could not read {}: {error:#})", log.path.display()),
        }
    }

    /// Text for error messages: where the log is and how it ends.
    pub fn log_excerpt(&self) -> String {
        match self.log_path() {
            Some(path) => format!(
                "; log {}, last lines:\n{}",
                path.display(),
                self.log_tail(LOG_LINES_IN_ERRORS)
            ),
            None => String::new(),
        }
    }

    /// The exit status if the child has exited, without waiting.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("check whether {} has exited", self.name))
    }

    /// Waits up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Kills the child with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        // Killing a child that has already exited is not an error: std reports success for it.
        self.child
            .kill()
            .with_context(|| format!("kill {} (pid {})", self.name, self.pid()))?;
        self.child
            .wait()
            .with_context(|| format!("reap {} (pid {})", self.name, self.pid()))
    }

    /// Sends SIGTERM and waits up to `timeout` for the child to exit. A child still running then
    /// is killed, and that is reported as an error.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        // Once reaped, the PID may belong to another process: never signal it.
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        let pid = self.pid();
        // A failure here means the child exited in between; the wait below sees that.
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run kill -TERM")?;
        if let Some(status) = self.wait_timeout(timeout)? {
            return Ok(status);
        }
        self.kill()?;
        bail!(
            "{} (pid {pid}) did not exit within {timeout:?} of SIGTERM and was killed{}",
            self.name,
            self.log_excerpt()
        )
    }

    /// The whole log as text.
    fn log_text(&self) -> Result<String> {
        let log = self
            .log
            .as_ref()
            .with_context(|| format!("{} has no log file", self.name))?;
        let bytes = std::fs::read(&log.path).with_context(|| format!("read log file {}", log.path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Errors are ignored: the child may have exited already, and drop has no one to tell.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(log) = &mut self.log
            && let Some(dir) = log.dir.take()
        {
            // Keeping is all that matters here; the kept directory is the parent of `log.path`.
            let _ = dir.keep();
            eprintln!("log of {} kept at {}", self.name, log.path.display());
        }
    }
}

fn read_tail(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let length = file
        .metadata()
        .with_context(|| format!("read metadata of {}", path.display()))?
        .len();
    file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))
        .with_context(|| format!("seek in {}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A child that starts processes of its own, such as nginx's workers or Varnish's cache process.
///
/// Dropping it sends SIGTERM (SIGKILL when `grace` is zero) so that the child stops the processes
/// it started, waits up to `grace`, and then kills by PID whatever of them is left: a child killed
/// outright would leave them running.
#[derive(Debug)]
pub struct ProcessTree {
    root: ChildProcess,
    grace: Duration,
}

impl ProcessTree {
    pub fn new(root: ChildProcess, grace: Duration) -> Self {
        Self { root, grace }
    }

    pub fn root(&self) -> &ChildProcess {
        &self.root
    }

    pub fn root_mut(&mut self) -> &mut ChildProcess {
        &mut self.root
    }

    /// The PIDs of the child and of every process under it, as of now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.root.pid()];
        pids.extend(descendants(self.root.pid()).into_iter().map(|(pid, _)| pid));
        pids
    }

    /// Resident memory of the whole tree: the sum of each process's proportional set size, which
    /// splits a page shared by several of them (such as nginx's key zone) among them instead of
    /// counting it once per process.
    pub fn resident_bytes(&self) -> Result<u64> {
        self.pids().into_iter().map(proportional_set_size).sum()
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        let descendants = descendants(self.root.pid());
        // Errors are ignored: whatever is still running afterwards is killed below.
        if self.grace.is_zero() {
            let _ = self.root.kill();
        } else {
            let _ = self.root.terminate(self.grace);
        }
        let left: Vec<(u32, u64)> = descendants
            .into_iter()
            .filter(|&(pid, started)| is_running(pid, started))
            .collect();
        for &(pid, _) in &left {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // SIGKILL takes effect when the process next runs: wait for that, so that nothing of the
        // tree outlives its owner (and, say, still writes into a directory about to be removed).
        let deadline = Instant::now() + KILL_WAIT;
        while left.iter().any(|&(pid, started)| is_running(pid, started)) && Instant::now() < deadline {
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// The fields of `/proc/PID/stat` that tell processes apart and whether they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessStat {
    /// `R`, `S`, `D`…; `Z` for a zombie, which has exited.
    state: char,
    parent: u32,
    /// Clock ticks after boot, which together with the PID names one process.
    started: u64,
}

fn parse_stat(stat: &str) -> Option<ProcessStat> {
    // `PID (COMM) STATE PPID …`: COMM may hold spaces and parentheses, so fields count from the
    // last ')'; after it, field 3 (the state) has index 0, field 4 (the parent) index 1 and
    // field 22 (the start time) index 19.
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    Some(ProcessStat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

fn process_stat(pid: u32) -> Option<ProcessStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether the process `pid` that started at `started` still runs: not a zombie, and not another
/// process that has been given the PID since.
fn is_running(pid: u32, started: u64) -> bool {
    process_stat(pid).is_some_and(|stat| stat.started == started && !matches!(stat.state, 'Z' | 'X'))
}

/// Every process under `root` (children, their children, …) with its start time.
fn descendants(root: u32) -> Vec<(u32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let processes: Vec<(u32, ProcessStat)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, process_stat(pid)?)))
        .collect();
    let mut found: Vec<(u32, u64)> = Vec::new();
    let mut parents = vec![root];
    // Each pass goes one generation down; a process is found once, so the passes end.
    while !parents.is_empty() {
        let children: Vec<(u32, u64)> = processes
            .iter()
            .filter(|(pid, stat)| parents.contains(&stat.parent) && !found.iter().any(|(seen, _)| seen == pid))
            .map(|&(pid, stat)| (pid, stat.started))
            .collect();
        parents = children.iter().map(|&(pid, _)| pid).collect();
        found.extend(children);
    }
    found
}

/// The proportional set size of process `pid` in bytes (`Pss` of `/proc/PID/smaps_rollup`).
pub fn proportional_set_size(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_pss(&text).with_context(|| format!("no Pss line in {path}"))
}

fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    let line = smaps_rollup.lines().find_map(|line| line.strip_prefix("Pss:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// Runs `command` to completion within `timeout` and returns what it wrote to stdout and stderr
/// (always captured, even when [`verbose`]). A non-zero exit is an error that quotes the output.
pub fn run_bounded(name: &str, command: Command, timeout: Duration) -> Result<String> {
    run_to_end(ChildProcess::spawn_with(name, command, false)?, timeout)?.log_text()
}

/// Like [`run_bounded`], but the output of `command` goes where it sets it: the terminal unless it
/// redirects it.
pub fn run_bounded_keeping_output(name: &str, command: Command, timeout: Duration) -> Result<()> {
    run_to_end(ChildProcess::spawn_keeping_output(name, command)?, timeout).map(drop)
}

/// Waits up to `timeout` for `process` to exit (it is killed when dropped after that) and
/// requires a successful exit.
fn run_to_end(mut process: ChildProcess, timeout: Duration) -> Result<ChildProcess> {
    let status = process.wait_timeout(timeout)?.with_context(|| {
        format!(
            "{} did not finish within {timeout:?}{}",
            process.name,
            process.log_excerpt()
        )
    })?;
    ensure_success(&process, status)?;
    Ok(process)
}

/// Like [`run_bounded`], but waits without blocking the async runtime, so that dropping the future
/// (on Ctrl-C, say) kills the command at once.
pub async fn run_bounded_async(name: &str, command: Command, timeout: Duration) -> Result<String> {
    let mut process = ChildProcess::spawn_with(name, command, false)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = process.try_wait()? {
            break status;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{name} did not finish within {timeout:?}{}", process.log_excerpt());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    ensure_success(&process, status)?;
    process.log_text()
}

fn ensure_success(process: &ChildProcess, status: ExitStatus) -> Result<()> {
    ensure!(
        status.success(),
        "{} failed with {status}{}",
        process.name,
        process.log_excerpt()
    );
    Ok(())
}

/// Sends one command to the Redis server on 127.0.0.1:`port` over a fresh connection and returns
/// the reply: a simple string, an integer or a bulk string as text, `None` for nil. An error reply is
/// an error, and so is an array.
pub fn redis_command(port: u16, args: &[&str]) -> Result<Option<String>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let client = redis::Client::open(format!("redis://{address}")).context("describe a redis connection")?;
    let mut connection = client
        .get_connection_with_timeout(REDIS_IO_TIMEOUT)
        .with_context(|| format!("connect to redis at {address}"))?;
    connection
        .set_read_timeout(Some(REDIS_IO_TIMEOUT))
        .context("set a read timeout")?;
    connection
        .set_write_timeout(Some(REDIS_IO_TIMEOUT))
        .context("set a write timeout")?;
    redis::Cmd::new()
        .arg(args)
        .query(&mut connection)
        .with_context(|| format!("send {args:?} to redis at {address}"))
}

fn answers_ping(port: u16) -> bool {
    matches!(redis_command(port, &["PING"]), Ok(Some(reply)) if reply == "PONG")
}

/// Starts `redis-server` on `port` with its data in `dir`, and waits until it answers PING.
fn spawn_redis(port: u16, dir: &Path, cpu: Option<usize>, extra_args: &[String]) -> Result<ChildProcess> {
    let mut command = command_on_cpu("redis-server", cpu);
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
        ])
        .args(extra_args);
    let mut process = ChildProcess::spawn(&format!("redis-server-{port}"), command)?;
    let deadline = Instant::now() + REDIS_READY_TIMEOUT;
    loop {
        if answers_ping(port) {
            return Ok(process);
        }
        if let Some(status) = process.try_wait()? {
            bail!(
                "redis-server on port {port} exited with {status} before answering PING{}",
                process.log_excerpt()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "redis-server on port {port} did not answer PING within {REDIS_READY_TIMEOUT:?}{}",
                process.log_excerpt()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A `redis-server` on a free port of 127.0.0.1 with its own data directory and an append-only
/// file, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir` so that the process is killed before its directory is removed.
    process: Option<ChildProcess>,
    port: u16,
    cpu: Option<usize>,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> Result<Self> {
        Self::start_on_cpu(None)
    }

    /// Like [`RedisServer::start`], pinned to `cpu` (see [`command_on_cpu`]).
    pub fn start_on_cpu(cpu: Option<usize>) -> Result<Self> {
        Self::start_with(cpu, &[])
    }

    fn start_with(cpu: Option<usize>, extra_args: &[&str]) -> Result<Self> {
        ensure_redis_installed("redis-server")?;
        let extra_args: Vec<String> = extra_args.iter().map(|&arg| arg.to_owned()).collect();
        let mut last_error = None;
        for _ in 0..REDIS_START_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("loadtest-redis-")
                .tempdir()
                .context("create a redis data directory")?;
            let port = free_port()?;
            match spawn_redis(port, dir.path(), cpu, &extra_args) {
                Ok(process) => {
                    return Ok(Self {
                        process: Some(process),
                        port,
                        cpu,
                        extra_args,
                        dir,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        let error = last_error.context("no attempt to start redis-server was made")?;
        Err(error.context(format!("start redis-server ({REDIS_START_ATTEMPTS} attempts)")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory, kept across [`RedisServer::restart`].
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running process, or `None` after [`RedisServer::stop`].
    pub fn process(&self) -> Option<&ChildProcess> {
        self.process.as_ref()
    }

    /// Kills the server (SIGKILL); what the append-only file holds survives a later restart.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Stops the server if it runs, then starts it again on the same port and data directory and
    /// waits until it answers PING.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let process = spawn_redis(self.port, self.dir.path(), self.cpu, &self.extra_args)
            .with_context(|| format!("restart redis-server on port {}", self.port))?;
        self.process = Some(process);
        Ok(())
    }
}

/// A Redis Cluster of three masters without replicas on free ports, all killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start() -> Result<Self> {
        ensure_redis_installed("redis-cli")?;
        let nodes = (0..3)
            .map(|_| RedisServer::start_with(None, CLUSTER_ARGS))
            .collect::<Result<Vec<_>>>()
            .context("start the cluster nodes")?;
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(nodes.iter().map(|node| format!("127.0.0.1:{}", node.port())));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        run_bounded("redis-cli-cluster-create", create, CLUSTER_CREATE_TIMEOUT)?;
        let cluster = Self { nodes };
        cluster.wait_until_ok()?;
        Ok(cluster)
    }

    fn wait_until_ok(&self) -> Result<()> {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        loop {
            let mut last_info = None;
            let mut all_ok = true;
            for node in &self.nodes {
                let info = redis_command(node.port(), &["CLUSTER", "INFO"]);
                let ok = matches!(&info, Ok(Some(text)) if text.contains("cluster_state:ok"));
                if !ok {
                    all_ok = false;
                    last_info = Some((node.port(), info));
                    break;
                }
            }
            if all_ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let detail = match last_info {
                    Some((port, Ok(info))) => format!("node {port} reports {info:?}"),
                    Some((port, Err(error))) => format!("node {port}: {error:#}"),
                    None => String::new(),
                };
                bail!("redis cluster did not reach cluster_state:ok within {CLUSTER_READY_TIMEOUT:?}: {detail}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `redis://127.0.0.1:PORT` of each master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// Polls `url` with GET every 20 ms until it answers 200, for at most `timeout`.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> Result<()> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("parse url {url}"))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let last = tokio::time::timeout_at(deadline, crate::http::get_status(&uri)).await;
        let last = match last {
            Ok(Ok(status)) if status == hyper::StatusCode::OK => return Ok(()),
            Ok(Ok(status)) => format!("last answer {status}"),
            Ok(Err(error)) => format!("last error: {error:#}"),
            Err(_) => "no answer".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {timeout:?} ({last})");
        }
    }
}

/// Polls `url` until it answers 200, for at most `timeout`, failing early when `process` exits.
pub async fn wait_ready(process: &mut ChildProcess, url: &str, timeout: Duration) -> Result<()> {
    wait_for(&mut [process], timeout, || wait_http_ok(url, READY_PROBE)).await
}

/// Waits until `address` accepts TCP connections, for at most `timeout`, failing early when
/// `process` exits: for a server whose listeners do not all open at once, such as the edge's.
pub async fn wait_listening(process: &mut ChildProcess, address: SocketAddr, timeout: Duration) -> Result<()> {
    wait_for(&mut [process], timeout, || async move {
        let connect = tokio::time::timeout(READY_PROBE, tokio::net::TcpStream::connect(address)).await;
        match connect {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                // Refused at once: pause, so that the wait does not spin.
                tokio::time::sleep(POLL_INTERVAL).await;
                Err(anyhow::Error::new(error).context(format!("connect to {address}")))
            }
            Err(_) => bail!("connect to {address}: timed out"),
        }
    })
    .await
}

/// Polls the Prometheus text at `url` until one of its lines is `line` (such as
/// `edge_control_connected 1`), for at most `timeout`, failing early when one of `processes` exits:
/// for a state that depends on them all, such as an edge connected to its origin.
pub async fn wait_metric(processes: &mut [&mut ChildProcess], url: &str, line: &str, timeout: Duration) -> Result<()> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("parse url {url}"))?;
    wait_for(processes, timeout, || async {
        let response = crate::http::fetch(&uri).await?;
        let found = response.status() == hyper::StatusCode::OK
            && String::from_utf8_lossy(response.body())
                .lines()
                .any(|text| text == line);
        if !found {
            tokio::time::sleep(POLL_INTERVAL).await;
            bail!("{url} has no line {line:?} (status {})", response.status());
        }
        Ok(())
    })
    .await
}

/// Runs `probe` until it succeeds, for at most `timeout`, failing early when one of `processes`
/// exits.
async fn wait_for<F, P>(processes: &mut [&mut ChildProcess], timeout: Duration, mut probe: P) -> Result<()>
where
    P: FnMut() -> F,
    F: Future<Output = Result<()>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let probe = probe().await;
        if probe.is_ok() {
            return Ok(());
        }
        for process in processes.iter_mut() {
            if let Some(status) = process.try_wait()? {
                bail!(
                    "{} exited with {status} before it was ready{}",
                    process.name(),
                    process.log_excerpt()
                );
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let error = probe.err().map(|error| format!("{error:#}")).unwrap_or_default();
            let names: Vec<&str> = processes.iter().map(|process| process.name()).collect();
            let excerpts: String = processes.iter().map(|process| process.log_excerpt()).collect();
            let verb = if names.len() == 1 { "was" } else { "were" };
            bail!(
                "{} {verb} not ready within {timeout:?}: {error}{excerpts}",
                names.join(" and ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "4242 (nginx: worker (1)) S 4240 4240 4240 0 -1 4194624 371 0 0 0 0 0 0 0 20 0 1 0 \
                    98765 11452416 712 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(ProcessStat {
                state: 'S',
                parent: 4240,
                started: 98765
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn finds_this_process_and_its_children() {
        let own = process_stat(std::process::id()).unwrap();
        assert!(own.started > 0);
        assert!(is_running(std::process::id(), own.started));
        assert!(!is_running(std::process::id(), own.started + 1));
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let found = descendants(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.iter().any(|&(pid, _)| pid == child.id()), "{found:?}");
    }

    #[test]
    fn parses_pss() {
        let rollup = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:  5120 kB\nPss:  3072 kB\n";
        assert_eq!(parse_pss(rollup), Some(3 * 1024 * 1024));
        assert_eq!(parse_pss("Rss: 5120 kB\n"), None);
        assert!(proportional_set_size(std::process::id()).unwrap() > 0);
    }
}
