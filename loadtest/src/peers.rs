//! The caches the edge is compared with: nginx `proxy_cache` and Varnish, configured as
//! `shared/peers/` describes (tuned to serve hits of ~1 KB at full speed on one core), with ports,
//! paths and the cache size of the run written in.
//!
//! Both answer a `Cache-Status` header (RFC 9211) as the edge does, so that one check tells a hit
//! from a miss for every cache. Neither reads `CDN-Cache-Control` (RFC 9213), where the origin puts
//! the freshness meant for shared caches; each is told the freshness in its own way.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::launch::{self, ChildProcess, ProcessTree};

/// How long nginx and Varnish may take to stop their own processes after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);
const MIB: u64 = 1024 * 1024;

/// A peer started on loopback, stopped with every process it started on drop, and the directory of
/// its configuration and files, to be removed after it stopped.
pub type Peer = (ProcessTree, TempDir);

/// `nginx.conf` for `nginx -p DIR/`: relative paths are under DIR.
pub fn nginx_conf(listen: SocketAddr, upstream: SocketAddr, cache_bytes: u64) -> String {
    let cache_mib = (cache_bytes / MIB).max(1);
    format!(
        r#"# From shared/peers/nginx.conf.
user www-data;                # the worker must be able to enter DIR (mode 0755)
worker_processes 1;           # one event loop, on the one CPU the process is pinned to
pid nginx.pid;
error_log stderr warn;        # into the log of the process kept by loadtest
events {{ worker_connections 4096; }}
http {{
    access_log off;           # no per-request logging in any cache
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;   # the default 1000 makes the load generator reconnect
    client_body_temp_path tmp/client;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;

    # keys in shared memory (64m holds ~500k), bodies in files read from the page cache
    proxy_cache_path cache levels=1:2 keys_zone=edge:64m max_size={cache_mib}m inactive=1d use_temp_path=off;
    map $upstream_cache_status $cache_status {{
        HIT     "nginx; hit";
        default "nginx; fwd=miss";
    }}

    upstream origin {{
        server {upstream};
        keepalive 16;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            # Cache-Control's max-age=1 is meant for browsers; the forecasts of a run are valid for a day
            proxy_ignore_headers Cache-Control Expires;
            proxy_cache_valid 200 1d;
            add_header Cache-Status $cache_status always;
        }}
    }}
}}
"#
    )
}

/// The VCL; the built-in VCL does everything else.
pub fn varnish_vcl(upstream: SocketAddr) -> String {
    format!(
        r#"vcl 4.1;
# From shared/peers/varnish.vcl.
import std;

backend origin {{
    .host = "{host}";
    .port = "{port}";
}}

sub vcl_backend_response {{
    # Varnish reads Cache-Control, whose max-age=1 is meant for browsers; take the shared caches' one
    if (beresp.http.CDN-Cache-Control ~ "max-age=[0-9]+") {{
        set beresp.ttl = std.duration(regsub(beresp.http.CDN-Cache-Control, "^.*max-age=([0-9]+).*$", "\1s"), 0s);
    }}
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.Cache-Status = "varnish; hit";
    }} else {{
        set resp.http.Cache-Status = "varnish; fwd=miss";
    }}
}}
"#,
        host = upstream.ip(),
        port = upstream.port()
    )
}

/// Starts nginx on `listen` in front of `upstream` with `cache_bytes` of cache, on `cpu` when given.
/// It is not ready yet when this returns.
pub fn start_nginx(
    program: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    cache_bytes: u64,
    cpu: Option<usize>,
) -> Result<Peer> {
    let dir = shared_dir("loadtest-nginx-", std::env::temp_dir())?;
    for sub in ["logs", "tmp"] {
        let path = dir.path().join(sub);
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
    }
    write(
        &dir.path().join("nginx.conf"),
        &nginx_conf(listen, upstream, cache_bytes),
    )?;
    let mut command = launch::command_on_cpu(program, cpu);
    command
        .arg("-p")
        .arg(format!("{}/", dir.path().display()))
        .args(["-c", "nginx.conf", "-g", "daemon off;"]);
    let process = ChildProcess::spawn("nginx", command)?;
    Ok((ProcessTree::new(process, STOP_GRACE), dir))
}

/// `nginx.conf` for nginx with nchan: one channel, published by POST to `/pub`, followed as
/// EventSource at `/sub`, its messages kept in memory.
pub fn nchan_conf(module: &str, listen: SocketAddr) -> String {
    format!(
        r#"load_module {module};
user www-data;
worker_processes 1;           # one event loop, on the one CPU the process is pinned to
worker_rlimit_nofile 40000;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path tmp/client;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 100000000;
    server {{
        listen {listen};
        location = /pub {{
            nchan_publisher;
            nchan_channel_id bench;
            nchan_message_buffer_length 10000;
            nchan_message_timeout 1h;
        }}
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id bench;
        }}
        location = /healthz {{ return 200 "ok"; }}
    }}
}}
"#
    )
}

/// Starts nginx with nchan (`module`, the path of its shared object) on `listen`, on `cpu` when
/// given. It is not ready yet when this returns.
pub fn start_nchan(program: &Path, module: &str, listen: SocketAddr, cpu: Option<usize>) -> Result<Peer> {
    let dir = shared_dir("loadtest-nchan-", std::env::temp_dir())?;
    for sub in ["logs", "tmp"] {
        let path = dir.path().join(sub);
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
    }
    write(&dir.path().join("nginx.conf"), &nchan_conf(module, listen))?;
    let mut command = launch::command_on_cpu(program, cpu);
    command
        .arg("-p")
        .arg(format!("{}/", dir.path().display()))
        .args(["-c", "nginx.conf", "-g", "daemon off;"]);
    let process = ChildProcess::spawn("nginx-nchan", command)?;
    Ok((ProcessTree::new(process, STOP_GRACE), dir))
}

/// Starts Varnish on `listen` in front of `upstream` with `cache_bytes` of malloc storage, on `cpu`
/// when given. It is not ready yet when this returns.
pub fn start_varnish(
    program: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    cache_bytes: u64,
    cpu: Option<usize>,
) -> Result<Peer> {
    // Its working directory holds the shared log, which it writes for every request: on tmpfs.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = shared_dir("loadtest-varnish-", base)?;
    let vcl = dir.path().join("varnish.vcl");
    write(&vcl, &varnish_vcl(upstream))?;
    let admin = format!("127.0.0.1:{}", launch::free_port()?);
    let mut command = launch::command_on_cpu(program, cpu);
    command
        .arg("-F")
        .arg("-n")
        .arg(dir.path().join("work"))
        .args(["-a", &listen.to_string(), "-T", &admin, "-f"])
        .arg(&vcl)
        .args(["-s", &format!("malloc,{}m", (cache_bytes / MIB).max(1))]);
    let process = ChildProcess::spawn("varnishd", command)?;
    Ok((ProcessTree::new(process, STOP_GRACE), dir))
}

/// A temporary directory that the unprivileged users nginx and Varnish switch to can enter.
fn shared_dir(prefix: &str, base: PathBuf) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("create a directory in {}", base.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("open {} to other users", dir.path().display()))?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn nginx_conf_has_the_addresses_and_the_tuning() {
        let conf = nginx_conf(address(18101), address(18100), 1024 * MIB);
        for line in [
            "listen 127.0.0.1:18101;",
            "server 127.0.0.1:18100;",
            "max_size=1024m",
            "worker_processes 1;",
            "access_log off;",
            "keepalive_requests 100000000;",
            "proxy_cache_valid 200 1d;",
            "add_header Cache-Status $cache_status always;",
        ] {
            assert!(conf.contains(line), "{line:?} missing from\n{conf}");
        }
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
        assert!(nginx_conf(address(1), address(2), 1).contains("max_size=1m"));
    }

    #[test]
    fn varnish_vcl_has_the_backend_and_reads_cdn_cache_control() {
        let vcl = varnish_vcl(address(18100));
        assert!(vcl.starts_with("vcl 4.1;\n"));
        assert!(vcl.contains(".host = \"127.0.0.1\";"));
        assert!(vcl.contains(".port = \"18100\";"));
        assert!(vcl.contains("beresp.http.CDN-Cache-Control"));
        assert!(vcl.contains(r#""\1s""#));
        assert_eq!(vcl.matches('{').count(), vcl.matches('}').count());
    }

    #[test]
    fn shared_dirs_are_open_to_other_users() {
        let dir = shared_dir("loadtest-test-", std::env::temp_dir()).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
