//! The control plane end to end: the real edge binary connected over QUIC (mutual TLS) to a scripted
//! control origin, in front of the scripted HTTP origin.

use loadtest::launch::{ChildProcess, RedisServer, free_port};
use shared::domain::ModelRef;
use shared::wire::{DropAll, DropReason, Invalidate, OriginMessage, Selector};

use crate::control_origin::{ControlOrigin, Pki};
use crate::support::{Edge, RealOrigin, Reply, ScriptedOrigin, WAIT, edge_command, eventually};

/// An edge in front of `http` that takes its invalidations from `control`, reconnecting quickly.
async fn edge(http: &ScriptedOrigin, control: &ControlOrigin, pki: &Pki, extra: &[(&str, &str)]) -> Edge {
    let mut env = pki.edge_env();
    env.push(("EDGE_CONTROL__ORIGINS".into(), control.origins()));
    env.push(("EDGE_CONTROL__RECONNECT_DELAY".into(), "50ms".into()));
    env.push(("EDGE_CONTROL__MAX_RECONNECT_DELAY".into(), "200ms".into()));
    env.push(("EDGE_CONTROL__HEARTBEAT_INTERVAL".into(), "200ms".into()));
    let mut env: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    env.extend_from_slice(extra);
    Edge::start(&http.url, &env).await
}

/// A control origin, an HTTP origin answering each of `paths` with a cacheable body, and an edge
/// connected to both with `paths` cached.
/// Keep every part alive: the PKI's folder is read again on each reconnect.
struct Setup {
    pki: Pki,
    control: ControlOrigin,
    http: ScriptedOrigin,
    edge: Edge,
}

async fn setup(paths: &[&str], extra: &[(&str, &str)]) -> Setup {
    let pki = Pki::new();
    let control = ControlOrigin::start(&pki).await;
    let http = ScriptedOrigin::start().await;
    for path in paths {
        http.set(path, Reply::cached(path.to_string(), "max-age=600"));
    }
    let edge = edge(&http, &control, &pki, extra).await;
    control.hello(1).await;
    for path in paths {
        cached(&edge, path).await;
    }
    Setup {
        pki,
        control,
        http,
        edge,
    }
}

fn invalidate(sequence: u64, selectors: Vec<Selector>, soft: bool) -> OriginMessage {
    OriginMessage::Invalidate(Invalidate {
        sequence,
        selectors,
        soft,
        issued_at_ms: 0,
    })
}

/// Fetches `path` twice and checks the second answer is a hit.
async fn cached(edge: &Edge, path: &str) {
    edge.get(path).await;
    let second = edge.get(path).await;
    assert!(second.is_hit(), "{path}: {}", second.cache_status());
}

fn assert_miss(fetched: &crate::support::Fetched, path: &str) {
    assert!(
        fetched.cache_status().starts_with("edge; fwd=miss"),
        "{path} was not purged: {}",
        fetched.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_key_is_refetched_and_acknowledged() {
    let Setup {
        control,
        http,
        edge,
        pki: _pki,
    } = setup(&["/a", "/b"], &[]).await;
    let hello = control.hello(1).await;
    assert_eq!(hello.last_applied, None);
    assert_eq!(hello.versions, [1]);
    eventually("the edge to be connected", async || {
        (edge.metric("edge_control_connected").await == 1.0).then_some(())
    })
    .await;
    control.send(invalidate(1, vec![Selector::Key("/a".into())], false));
    control.acked(1).await;
    assert_miss(&edge.get("/a").await, "/a");
    assert!(edge.get("/b").await.is_hit(), "another key was purged");
    assert_eq!(http.gets("/a"), 2);
    assert_eq!(edge.metric("edge_control_last_applied").await, 1.0);
    assert_eq!(edge.metric("edge_control_invalidations_applied_total").await, 1.0);
    assert_eq!(edge.metric("edge_cache_purged_total{kind=\"control\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_models_and_soft_purges_reach_their_entries() {
    let pki = Pki::new();
    let control = ControlOrigin::start(&pki).await;
    let http = ScriptedOrigin::start().await;
    http.set(
        "/aapl",
        Reply::cached("aapl", "max-age=600").header("surrogate-key", "AAPL AAPL:1h model:lstm model:lstm@3.2.0"),
    );
    http.set(
        "/msft",
        Reply::cached("msft", "max-age=600").header("surrogate-key", "MSFT MSFT:1h model:lstm model:lstm@3.2.0"),
    );
    http.set("/soft", Reply::cached("soft", "max-age=600").header("etag", "\"v1\""));
    let edge = edge(&http, &control, &pki, &[]).await;
    control.hello(1).await;
    for path in ["/aapl", "/msft", "/soft"] {
        cached(&edge, path).await;
    }

    control.send(invalidate(1, vec![Selector::Tag("AAPL".into())], false));
    control.acked(1).await;
    assert_miss(&edge.get("/aapl").await, "/aapl");
    assert!(edge.get("/msft").await.is_hit());

    let model = ModelRef::new("lstm", "3.2.0").unwrap();
    control.send(invalidate(2, vec![Selector::Model(model)], false));
    control.acked(2).await;
    assert_miss(&edge.get("/aapl").await, "/aapl");
    assert_miss(&edge.get("/msft").await, "/msft");

    control.send(invalidate(3, vec![Selector::Key("/soft".into())], true));
    control.acked(3).await;
    let revalidated = edge.get("/soft").await;
    assert!(
        revalidated.cache_status().starts_with("edge; fwd=stale"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(revalidated.text(), "soft");
    let last = http.requests("/soft").pop().unwrap();
    assert_eq!(last.headers["if-none-match"], "\"v1\"", "a soft purge revalidates");
    assert!(edge.get("/soft").await.is_hit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reconnects_and_resumes_from_its_last_applied_sequence() {
    let Setup {
        control,
        edge,
        http: _http,
        pki: _pki,
    } = setup(&[], &[]).await;
    let first = control.hello(1).await;
    control.send(invalidate(1, vec![Selector::Key("/x".into())], false));
    control.send(invalidate(2, vec![Selector::Prefix("/y".into())], false));
    control.acked(2).await;

    control.drop_connection();
    let second = control.hello(2).await;
    assert_eq!(second.last_applied, Some(2));
    assert_eq!(
        (second.instance_id, second.started_at_ms),
        (first.instance_id, first.started_at_ms),
        "the same cache instance resumes"
    );
    control.send(invalidate(3, vec![Selector::All], false));
    control.acked(3).await;
    assert!(edge.metric("edge_control_reconnects_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_with_drop_all_empties_the_cache() {
    let Setup {
        control,
        edge,
        http: _http,
        pki: _pki,
    } = setup(&["/a", "/b"], &[]).await;

    control.set_welcome(Some(7), Some(DropReason::Trimmed));
    control.drop_connection();
    control.hello(2).await;
    eventually("the drop-all to be applied", async || {
        (edge.metric("edge_control_last_applied").await == 7.0).then_some(())
    })
    .await;
    assert_miss(&edge.get("/a").await, "/a");
    assert_miss(&edge.get("/b").await, "/b");

    // The log goes on from the head; a DropAll message empties it too.
    control.send(invalidate(8, vec![Selector::Key("/none".into())], false));
    control.acked(8).await;
    assert!(edge.get("/a").await.is_hit());
    control.send(OriginMessage::DropAll(DropAll {
        sequence: 9,
        reason: DropReason::LogReset,
    }));
    control.acked(9).await;
    assert_miss(&edge.get("/a").await, "/a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_staleness_bound_hits_are_revalidated_until_the_control_plane_is_back() {
    let Setup {
        pki,
        control,
        http,
        edge,
    } = setup(&["/s"], &[("EDGE_CONTROL__STALENESS_BOUND", "1s")]).await;
    let addr = control.addr;
    assert_eq!(edge.metric("edge_control_stale_serving").await, 0.0);

    control.stop().await;
    let before = http.gets("/s");
    let forced = eventually("hits to be revalidated", async || {
        let fetched = edge.get("/s").await;
        fetched
            .cache_status()
            .contains("detail=control-plane-lost")
            .then_some(fetched)
    })
    .await;
    assert!(
        forced.cache_status().starts_with("edge; fwd=stale"),
        "{}",
        forced.cache_status()
    );
    assert!(http.gets("/s") > before, "the origin saw no revalidation");
    assert_eq!(edge.metric("edge_control_stale_serving").await, 1.0);
    assert_eq!(edge.metric("edge_control_connected").await, 0.0);

    let control = ControlOrigin::restart(&pki, addr).await;
    control.hello(1).await;
    eventually("hits to be served again", async || {
        edge.get("/s").await.is_hit().then_some(())
    })
    .await;
    assert_eq!(edge.metric("edge_control_stale_serving").await, 0.0);
}

#[test]
fn unusable_tls_files_stop_the_edge_with_a_message_naming_them() {
    let pki = Pki::new();
    let env = pki.edge_env();
    let missing = pki.path("missing.pem");
    let cases = [
        (
            "EDGE_TLS__CA",
            missing.display().to_string(),
            missing.display().to_string(),
        ),
        // The origin's key is not the edge certificate's key.
        (
            "EDGE_TLS__KEY",
            pki.path("origin.key").display().to_string(),
            pki.path("origin.key").display().to_string(),
        ),
    ];
    for (variable, value, named) in cases {
        let mut command = edge_command();
        command
            .env("EDGE_HTTP__LISTEN", format!("127.0.0.1:{}", free_port().unwrap()))
            .env("EDGE_METRICS__LISTEN", format!("127.0.0.1:{}", free_port().unwrap()))
            .env("EDGE_CONTROL__ORIGINS", "127.0.0.1:4433")
            .envs(env.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .env(variable, &value);
        let mut process = ChildProcess::spawn("edge-bad-tls", command).unwrap();
        let status = process
            .wait_timeout(WAIT)
            .unwrap()
            .unwrap_or_else(|| panic!("the edge kept running with {variable}={value}"));
        assert!(!status.success());
        let log = process.log_tail(50);
        assert!(log.contains(&named), "the error does not name {named}: {log}");
    }
}

/// The whole path of a change: a forecast written to the real origin is in its invalidation log, sent
/// over QUIC to the edge, applied (the next read is a miss that fetches the new version) and confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_write_reaches_the_edge_through_the_real_origins_control_plane() {
    let pki = Pki::new();
    let origin = RealOrigin::with_control_plane(&pki).await;
    let control = origin.control.as_ref().expect("started with a control plane");
    let mut env = pki.edge_env();
    env.push(("EDGE_CONTROL__ORIGINS".into(), control.addr.to_string()));
    env.push(("EDGE_CONTROL__RECONNECT_DELAY".into(), "50ms".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let edge = Edge::start(&origin.url, &env).await;
    eventually("the edge to connect", async || {
        control
            .edges
            .list()
            .first()
            .map(|status| (status.name.clone(), status.region.clone()))
    })
    .await;
    let path = "/v1/forecasts/AAPL/1h";
    let first = origin.put_forecast("AAPL", "1h", 187.0).await;
    cached(&edge, path).await;
    assert_eq!(edge.get(path).await.header("etag"), Some(first.as_str()));

    // The write is answered once its invalidation is in the log; the edge applies it a moment later.
    let second = origin.put_forecast("AAPL", "1h", 188.0).await;
    eventually("the edge to serve the new version", async || {
        let fetched = edge.get(path).await;
        (fetched.header("etag") == Some(second.as_str())).then_some(())
    })
    .await;
    eventually("the edge to confirm both invalidations", async || {
        control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(2)).then_some(()))
    })
    .await;
    let listed = origin.admin_get("/admin/v1/edges").await;
    let listed: serde_json::Value = serde_json::from_str(listed.text()).unwrap();
    assert_eq!(listed["head"], 2, "{listed}");
    assert_eq!(listed["edges"][0]["name"], "edge-1", "{listed}");
    assert_eq!(listed["edges"][0]["acked"], 2, "{listed}");
    let metrics = origin.get("/metrics").await;
    for line in ["origin_control_edges 1", "origin_control_invalidations_sent_total 2"] {
        assert!(
            metrics.text().lines().any(|l| l == line),
            "{line} not in\n{}",
            metrics.text()
        );
    }

    // A purge through the admin API reaches the edge the same way.
    cached(&edge, path).await;
    let body = serde_json::json!({"keys": [path]});
    let accepted = origin.admin_post("/admin/v1/invalidations", &body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    eventually("the edge to apply the purge sent through the admin API", async || {
        control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(3)).then_some(()))
    })
    .await;
    assert_miss(&edge.get(path).await, path);

    // With ?wait=, the answer comes once every connected edge applied it, and says how long each took.
    let waited = origin.admin_post("/admin/v1/invalidations?wait=5s", &body).await;
    assert_eq!(waited.status, 200, "{}", waited.text());
    let waited: serde_json::Value = serde_json::from_str(waited.text()).unwrap();
    assert_eq!(
        (waited["id"].clone(), waited["seq"].clone()),
        (4.into(), 4.into()),
        "{waited}"
    );
    let propagation = &waited["propagation"];
    assert_eq!(propagation["complete"], true, "{waited}");
    assert_eq!(propagation["pending"], serde_json::json!([]), "{waited}");
    assert_eq!(propagation["applied"][0]["name"], "edge-1", "{waited}");
    assert!(propagation["applied"][0]["took_ms"].is_u64(), "{waited}");
    let shown = origin.admin_get("/admin/v1/invalidations/4").await;
    let shown: serde_json::Value = serde_json::from_str(shown.text()).unwrap();
    assert_eq!(shown["keys"], serde_json::json!([path]), "{shown}");
    assert_eq!(shown["applied"][0]["applied"], true, "{shown}");
    assert_eq!(origin.admin_get("/admin/v1/invalidations/99").await.status, 404);
    assert_eq!(origin.admin_get("/admin/v1/invalidations/x").await.status, 400);
    let listed = origin.admin_get("/admin/v1/edges").await;
    let listed: serde_json::Value = serde_json::from_str(listed.text()).unwrap();
    assert_eq!(listed["edges"][0]["lag"], 0, "{listed}");
    assert!(
        listed["edges"][0]["origin"].as_str().unwrap().starts_with("origin@"),
        "{listed}"
    );
}

/// Three edges follow one origin: a write is purged at all three, each confirms it, and each serves
/// the new version as a fresh miss; their metrics say where they stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_purged_at_three_edges_and_each_refetches_it() {
    let pki = Pki::new();
    let origin = RealOrigin::with_control_plane(&pki).await;
    let control = origin.control.as_ref().expect("started with a control plane");
    let mut edges = Vec::new();
    for index in 0..3 {
        let mut env = pki.edge_env_of(index);
        env.push(("EDGE_CONTROL__ORIGINS".into(), control.addr.to_string()));
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        edges.push(Edge::start(&origin.url, &env).await);
    }
    eventually("three edges to connect", async || {
        let mut names: Vec<String> = control.edges.list().into_iter().map(|status| status.name).collect();
        names.sort();
        (names == ["edge-1", "edge-2", "edge-3"]).then_some(())
    })
    .await;
    let path = "/v1/forecasts/ES.F/15m";
    origin.put_forecast("ES.F", "15m", 5000.0).await;
    for edge in &edges {
        cached(edge, path).await;
    }
    let newest = origin.put_forecast("ES.F", "15m", 5001.0).await;
    eventually("every edge to confirm the write's invalidation", async || {
        let acked: Vec<Option<u64>> = control.edges.list().iter().map(|status| status.acked).collect();
        (acked == [Some(2); 3]).then_some(())
    })
    .await;
    for edge in &edges {
        let fetched = edge.get(path).await;
        assert_miss(&fetched, path);
        assert_eq!(fetched.header("etag"), Some(newest.as_str()));
        let metrics = edge.metrics().await;
        for line in [
            "edge_control_connected 1",
            "edge_control_last_applied 2",
            "edge_control_lag 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} not in\n{metrics}");
        }
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("edge_control_last_contact_timestamp_seconds 1")),
            "{metrics}"
        );
    }
}

/// An edge whose control traffic to a real origin goes through a relay the test can cut, with its
/// forecasts cached, and the origin keeping `retention` invalidations.
struct Partitioned {
    origin: RealOrigin,
    relay: loadtest::relay::DelayRelay,
    edge: Edge,
    _pki: Pki,
}

const PARTITIONED_KEYS: [&str; 5] = ["P0", "P1", "P2", "P3", "P4"];
/// Cached, and written only before the partition.
const BYSTANDER: &str = "/v1/forecasts/QUIET/1h";

async fn partitioned(retention: usize) -> Partitioned {
    let pki = Pki::new();
    let origin = RealOrigin::with_control_plane_and(&pki, None, |config| {
        config.invalidation.retention_entries = std::num::NonZeroUsize::new(retention).unwrap();
    })
    .await;
    let control = origin.control.as_ref().expect("started with a control plane");
    let relay = loadtest::relay::DelayRelay::start(control.addr, std::time::Duration::ZERO)
        .await
        .unwrap();
    let mut env = pki.edge_env();
    env.push(("EDGE_CONTROL__ORIGINS".into(), relay.address.to_string()));
    env.push(("EDGE_CONTROL__RECONNECT_DELAY".into(), "50ms".into()));
    env.push(("EDGE_CONTROL__MAX_RECONNECT_DELAY".into(), "200ms".into()));
    env.push(("EDGE_CONTROL__HEARTBEAT_INTERVAL".into(), "200ms".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let edge = Edge::start(&origin.url, &env).await;
    for key in PARTITIONED_KEYS.into_iter().chain(["QUIET"]) {
        origin.put_forecast(key, "1h", 1.0).await;
    }
    let written = PARTITIONED_KEYS.len() as u64 + 1;
    eventually("the edge to apply the first writes", async || {
        (edge.metric("edge_control_last_applied").await == written as f64).then_some(())
    })
    .await;
    for key in PARTITIONED_KEYS {
        cached(&edge, &format!("/v1/forecasts/{key}/1h")).await;
    }
    cached(&edge, BYSTANDER).await;
    Partitioned {
        origin,
        relay,
        edge,
        _pki: pki,
    }
}

impl Partitioned {
    /// Cuts the control plane until the edge has noticed, writes each key ten times (50
    /// invalidations), and mends it; answers the newest ETag of each key.
    async fn write_while_cut_off(&self) -> Vec<String> {
        self.relay.set_cut(true);
        eventually("the edge to notice it is cut off", async || {
            (self.edge.metric("edge_control_connected").await == 0.0).then_some(())
        })
        .await;
        let mut newest = Vec::new();
        for round in 0..10 {
            newest.clear();
            for key in PARTITIONED_KEYS {
                newest.push(self.origin.put_forecast(key, "1h", f64::from(round) + 2.0).await);
            }
        }
        self.relay.set_cut(false);
        let head = (PARTITIONED_KEYS.len() * 11 + 1) as f64;
        eventually("the edge to catch up with the log", async || {
            (self.edge.metric("edge_control_last_applied").await == head).then_some(())
        })
        .await;
        newest
    }

    async fn assert_serves(&self, newest: &[String]) {
        for (key, etag) in PARTITIONED_KEYS.iter().zip(newest) {
            let path = format!("/v1/forecasts/{key}/1h");
            let fetched = self.edge.get(&path).await;
            assert_miss(&fetched, &path);
            assert_eq!(fetched.header("etag"), Some(etag.as_str()), "{path}");
        }
    }

    async fn origin_metric(&self, series: &str) -> String {
        let metrics = self.origin.get("/metrics").await;
        metrics
            .text()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
            .unwrap_or_default()
    }
}

/// Cut off from its origin during 50 invalidations, an edge is replayed every one of them when it
/// comes back, and serves none of the versions they replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_during_50_invalidations_is_replayed_them() {
    let setup = partitioned(100_000).await;
    let newest = setup.write_while_cut_off().await;
    setup.assert_serves(&newest).await;
    let untouched = setup.edge.get(BYSTANDER).await;
    assert!(
        untouched.is_hit(),
        "replay purged more than it named: {}",
        untouched.cache_status()
    );
    let replayed: u64 = setup
        .origin_metric("origin_control_invalidations_replayed_total")
        .await
        .parse()
        .unwrap();
    assert!(replayed >= 50, "{replayed} replayed");
    assert_eq!(
        setup
            .origin_metric("origin_control_drop_all_total{reason=\"trimmed\"}")
            .await,
        "0"
    );
}

/// When the invalidations an edge missed were trimmed from the log, it is told to drop everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_missed_trimmed_invalidations_drops_its_cache() {
    let setup = partitioned(5).await;
    let newest = setup.write_while_cut_off().await;
    setup.assert_serves(&newest).await;
    assert_eq!(
        setup
            .origin_metric("origin_control_drop_all_total{reason=\"trimmed\"}")
            .await,
        "1"
    );
}

/// A read through the edge under the host pushed responses are stored for.
async fn warm_read(edge: &Edge, path: &str) -> crate::support::Fetched {
    crate::support::fetch(edge.request(reqwest::Method::GET, path).header("host", WARM_HOST)).await
}

const WARM_HOST: &str = "warm.test";

/// Warming: after a write the origin pushes the new response of a configured hot key, and of a key
/// the edge reported among its most read; `POST /admin/v1/warm` pushes on demand. Each time the
/// edge's next read is a hit with the new version, never fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_hot_keys_are_pushed_so_the_next_read_is_a_hit() {
    let pki = Pki::new();
    let configured = "/v1/forecasts/AAPL/1h";
    let origin = RealOrigin::with_control_plane_and(&pki, None, |config| {
        config.warming.hot_keys = vec![configured.to_owned()];
    })
    .await;
    let control = origin.control.as_ref().expect("started with a control plane");
    let mut env = pki.edge_env();
    env.push(("EDGE_CONTROL__ORIGINS".into(), control.addr.to_string()));
    env.push(("EDGE_CONTROL__WARM_HOSTS".into(), WARM_HOST.into()));
    env.push(("EDGE_CONTROL__STATS_INTERVAL".into(), "100ms".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let edge = Edge::start(&origin.url, &env).await;
    eventually("the edge to connect", async || {
        (!control.edges.list().is_empty()).then_some(())
    })
    .await;

    // A configured hot key: even its first read is a hit, and so is the read after each new version.
    for (point, pushes) in [(1.0, 1), (2.0, 2)] {
        let etag = origin.put_forecast("AAPL", "1h", point).await;
        pushes_stored(&edge, pushes).await;
        let read = warm_read(&edge, configured).await;
        assert!(read.is_hit(), "{}", read.cache_status());
        assert_eq!(read.header("etag"), Some(etag.as_str()));
    }

    // A key the edge reads most, reported in its stats.
    let reported = "/v1/forecasts/MSFT/1d";
    origin.put_forecast("MSFT", "1d", 1.0).await;
    eventually("the edge to report its hottest key", async || {
        warm_read(&edge, reported).await;
        let listed = origin.admin_get("/admin/v1/edges").await;
        listed.text().contains(reported).then_some(())
    })
    .await;
    let etag = origin.put_forecast("MSFT", "1d", 2.0).await;
    pushes_stored(&edge, 3).await;
    let read = warm_read(&edge, reported).await;
    assert!(read.is_hit(), "{}", read.cache_status());
    assert_eq!(read.header("etag"), Some(etag.as_str()));

    // On demand: an instrument's prefix pushes its list and each forecast it has.
    let etag = origin.put_forecast("TSLA", "4h", 1.0).await;
    let body = serde_json::json!({"prefixes": ["/v1/forecasts/TSLA"]});
    let warmed = origin.admin_post("/admin/v1/warm", &body).await;
    assert_eq!(warmed.status, 200, "{}", warmed.text());
    let warmed: serde_json::Value = serde_json::from_str(warmed.text()).unwrap();
    let pushed: Vec<&str> = warmed["warmed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["pushed"] == true)
        .map(|w| w["key"].as_str().unwrap())
        .collect();
    assert_eq!(pushed, ["/v1/forecasts/TSLA", "/v1/forecasts/TSLA/4h"], "{warmed}");
    pushes_stored(&edge, 5).await;
    let read = warm_read(&edge, "/v1/forecasts/TSLA/4h").await;
    assert!(read.is_hit(), "{}", read.cache_status());
    assert_eq!(read.header("etag"), Some(etag.as_str()));
    let refused = origin
        .admin_post("/admin/v1/warm", &serde_json::json!({"keys": ["no-slash"]}))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text());
}

/// Waits until the edge has stored `count` pushed responses in all.
async fn pushes_stored(edge: &Edge, count: u64) {
    let line = format!("edge_control_warm_stored_total {count}");
    eventually(&format!("{count} pushed responses to be stored"), async || {
        edge.metrics().await.lines().any(|l| l == line).then_some(())
    })
    .await;
}

/// Only certificates of the control plane's CA get in: an edge certificate from another CA is refused
/// during the handshake, and never listed as an edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_refuses_an_edge_certificate_from_another_ca() {
    let pki = Pki::new();
    let origin = RealOrigin::with_control_plane(&pki).await;
    let control = origin.control.as_ref().expect("started with a control plane");
    let stranger = Pki::new();
    let refused = stranger.try_control_handshake(control.addr).await;
    assert!(refused.is_err(), "a foreign certificate was let in");
    assert!(control.edges.list().is_empty());
    eventually("the origin to count the refusal", async || {
        let metrics = origin.get("/metrics").await;
        metrics
            .text()
            .lines()
            .any(|line| line == "origin_control_failures_total 1")
            .then_some(())
    })
    .await;
    let welcomed = pki.try_control_handshake(control.addr).await;
    assert!(welcomed.is_ok(), "{welcomed:?}");
}

/// Two origins share one Redis log; the edge is attached to the first. When that origin goes away, the
/// edge fails over to the second and is replayed what was logged meanwhile: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_origin_dies_the_edge_fails_over_and_loses_no_invalidation() {
    let redis = RedisServer::start().unwrap();
    let pki = Pki::new();
    let first = RealOrigin::with_control_plane_on(&pki, Some(redis.url())).await;
    let second = RealOrigin::with_control_plane_on(&pki, Some(redis.url())).await;
    let control_of = |origin: &RealOrigin| origin.control.as_ref().expect("started with a control plane").clone();
    let (first_control, second_control) = (control_of(&first), control_of(&second));
    let mut env = pki.edge_env();
    let origins = format!("{},{}", first_control.addr, second_control.addr);
    env.push(("EDGE_CONTROL__ORIGINS".into(), origins));
    env.push(("EDGE_CONTROL__RECONNECT_DELAY".into(), "50ms".into()));
    env.push(("EDGE_CONTROL__MAX_RECONNECT_DELAY".into(), "200ms".into()));
    env.push(("EDGE_CONTROL__HEARTBEAT_INTERVAL".into(), "200ms".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // Reads go to the second origin's HTTP API, which stays up.
    let edge = Edge::start(&second.url, &env).await;
    eventually("the edge to attach to the first origin", async || {
        (!first_control.edges.list().is_empty()).then_some(())
    })
    .await;
    let path = "/v1/forecasts/MSFT/1d";
    second.put_forecast("MSFT", "1d", 410.0).await;
    eventually("the edge to apply the first write", async || {
        first_control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(1)).then_some(()))
    })
    .await;
    cached(&edge, path).await;

    drop(first);
    let newest = second.put_forecast("MSFT", "1d", 411.0).await;
    eventually(
        "the edge to serve the version written while it failed over",
        async || (edge.get(path).await.header("etag") == Some(newest.as_str())).then_some(()),
    )
    .await;
    eventually("the second origin to see the edge confirm it", async || {
        second_control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(2)).then_some(()))
    })
    .await;
}

/// A write through another origin: the origin the edge is attached to (and fetches from) drops the
/// forecast from its own L1 cache before it sends the invalidation, so the edge's refetch gets the new
/// version even before that origin's periodic look at the log (an hour here) would have seen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_write_through_another_origin_the_edge_refetches_the_new_version() {
    let redis = RedisServer::start().unwrap();
    let pki = Pki::new();
    let slow_follow = |config: &mut origin::config::OriginConfig| {
        config.cache.ttl = std::time::Duration::from_secs(3600);
        config.cache.follow_interval = std::time::Duration::from_secs(3600);
    };
    let attached = RealOrigin::with_control_plane_and(&pki, Some(redis.url()), slow_follow).await;
    let writer = RealOrigin::with_control_plane_and(&pki, Some(redis.url()), slow_follow).await;
    let control = attached.control.as_ref().expect("started with a control plane");
    let mut env = pki.edge_env();
    env.push(("EDGE_CONTROL__ORIGINS".into(), control.addr.to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let edge = Edge::start(&attached.url, &env).await;
    eventually("the edge to attach", async || {
        (!control.edges.list().is_empty()).then_some(())
    })
    .await;
    let path = "/v1/forecasts/NVDA/4h";
    writer.put_forecast("NVDA", "4h", 100.0).await;
    eventually("the edge to apply the first write", async || {
        control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(1)).then_some(()))
    })
    .await;
    cached(&edge, path).await;

    let newest = writer.put_forecast("NVDA", "4h", 101.0).await;
    eventually("the edge to apply the second write", async || {
        control
            .edges
            .list()
            .first()
            .and_then(|status| (status.acked == Some(2)).then_some(()))
    })
    .await;
    let fetched = edge.get(path).await;
    assert_eq!(
        fetched.header("etag"),
        Some(newest.as_str()),
        "{}",
        fetched.cache_status()
    );
}
