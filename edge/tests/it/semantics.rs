//! HTTP caching through the real edge binary: RFC 9111 storage and freshness, RFC 9211
//! `Cache-Status`, RFC 9213 `CDN-Cache-Control`, Vary, Range, coalescing and invalidation.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;

use crate::support::{Edge, Fetched, RealOrigin, Reply, ScriptedOrigin, eventually, fetch, random_bytes};

const BODY: &str = r#"{"instrument":"AAPL","point":187.42}"#;

async fn scripted_edge(env: &[(&str, &str)]) -> (ScriptedOrigin, Edge) {
    let origin = ScriptedOrigin::start().await;
    let edge = Edge::start(&origin.url, env).await;
    (origin, edge)
}

/// Asserts that `response` came from upstream and was not stored.
fn assert_not_stored(response: &Fetched, what: &str) {
    let status = response.cache_status();
    assert!(
        status.starts_with("edge; fwd=miss") && !status.contains("stored"),
        "{what}: Cache-Status {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_stored_and_the_next_request_is_a_hit() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/v1/a", Reply::cached(BODY, "max-age=30"));

    let miss = edge.get("/v1/a").await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.text(), BODY);
    assert!(
        miss.cache_status()
            .starts_with("edge; fwd=miss; fwd-status=200; stored; ttl="),
        "{}",
        miss.cache_status()
    );
    assert!((28..=30).contains(&miss.ttl()), "{}", miss.cache_status());

    let hit = edge.get("/v1/a").await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.body, miss.body);
    assert!(
        hit.cache_status().starts_with("edge; hit; ttl="),
        "{}",
        hit.cache_status()
    );
    assert!((28..=30).contains(&hit.ttl()), "{}", hit.cache_status());
    assert_eq!(origin.count("/v1/a"), 1);

    // The query is part of the key.
    origin.set("/v1/a?x=1", Reply::cached("other", "max-age=30"));
    assert_eq!(edge.get("/v1/a?x=1").await.text(), "other");
    assert_eq!(origin.count("/v1/a?x=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_carry_their_age() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/aged", Reply::cached(BODY, "max-age=60"));
    edge.get("/aged").await;

    let (age, ttl) = eventually("a hit at least one second old", async || {
        let hit = edge.get("/aged").await;
        assert!(hit.is_hit(), "{}", hit.cache_status());
        let age: i64 = hit.header("age").expect("hits carry Age").parse().unwrap();
        (age >= 1).then(|| (age, hit.ttl()))
    })
    .await;
    // Age and the remaining freshness add up to max-age, give or take a second of rounding.
    assert!((58..=61).contains(&(age + ttl)), "age {age}, ttl {ttl}");
    assert_eq!(origin.count("/aged"), 1);

    // A response already 50 s old when it arrives has 10 s of its 60 left (RFC 9111 §4.2.3).
    origin.set("/aged-upstream", Reply::cached(BODY, "max-age=60").header("age", "50"));
    let miss = edge.get("/aged-upstream").await;
    assert!((8..=10).contains(&miss.ttl()), "{}", miss.cache_status());
    let hit = edge.get("/aged-upstream").await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    let age: i64 = hit.header("age").unwrap().parse().unwrap();
    assert!(
        (50..=52).contains(&age),
        "a hit on a response that arrived 50 s old says Age: {age}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_fetched_again_once_its_max_age_has_passed() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/short", Reply::cached("v1", "max-age=1"));
    assert_eq!(edge.get("/short").await.text(), "v1");
    origin.set("/short", Reply::cached("v2", "max-age=60"));

    let refreshed = eventually("a fetch after max-age", async || {
        let response = edge.get("/short").await;
        if response.text() == "v1" {
            assert!(response.is_hit(), "{}", response.cache_status());
            return None;
        }
        Some(response)
    })
    .await;
    assert_eq!(refreshed.text(), "v2");
    assert!(
        refreshed.cache_status().contains("fwd-status=200; stored"),
        "{}",
        refreshed.cache_status()
    );
    assert_eq!(origin.count("/short"), 2);
    assert!(edge.get("/short").await.is_hit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_answer_conditional_requests_with_304() {
    let (origin, edge) = scripted_edge(&[]).await;
    let modified = SystemTime::now() - Duration::from_secs(3600);
    let last_modified = httpdate::fmt_http_date(modified);
    origin.set(
        "/conditional",
        Reply::cached(BODY, "max-age=60")
            .header("etag", "\"v1\"")
            .header("last-modified", &last_modified),
    );
    assert_eq!(edge.get("/conditional").await.status, 200);

    let conditional =
        |name: &'static str, value: String| fetch(edge.request(Method::GET, "/conditional").header(name, value));
    let not_modified = conditional("if-none-match", "\"v1\"".into()).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    assert!(not_modified.is_hit(), "{}", not_modified.cache_status());
    assert_eq!(conditional("if-none-match", "\"v0\", \"v1\"".into()).await.status, 304);
    let changed = conditional("if-none-match", "\"v0\"".into()).await;
    assert_eq!((changed.status, changed.text()), (200, BODY));

    assert_eq!(
        conditional("if-modified-since", last_modified.clone()).await.status,
        304
    );
    let later = httpdate::fmt_http_date(SystemTime::now());
    assert_eq!(conditional("if-modified-since", later).await.status, 304);
    let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(3600));
    let newer = conditional("if-modified-since", earlier).await;
    assert_eq!((newer.status, newer.text()), (200, BODY));

    assert_eq!(origin.count("/conditional"), 1, "conditional requests went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_revalidated_with_its_etag() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/revalidate", Reply::cached(BODY, "max-age=1").header("etag", "\"r1\""));
    edge.get("/revalidate").await;

    let revalidated = eventually("a revalidation upstream", async || {
        let response = edge.get("/revalidate").await;
        (!response.is_hit()).then_some(response)
    })
    .await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), BODY, "the stored body is served after a 304");
    assert!(
        revalidated
            .cache_status()
            .starts_with("edge; fwd=stale; fwd-status=304; stored; ttl="),
        "{}",
        revalidated.cache_status()
    );
    let requests = origin.requests("/revalidate");
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].headers["if-none-match"], "\"r1\"");
    assert!(
        edge.get("/revalidate").await.is_hit(),
        "a 304 makes the entry fresh again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_variants_are_stored_apart_and_normalised() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set(
        "/vary",
        Reply::cached("", "max-age=60")
            .header("vary", "Accept-Encoding")
            .echo("accept-encoding"),
    );
    let get = |encoding: &'static str| fetch(edge.request(Method::GET, "/vary").header("accept-encoding", encoding));

    let gzip = get("gzip").await;
    assert_eq!(gzip.text(), "gzip");
    assert!(gzip.cache_status().contains("stored"), "{}", gzip.cache_status());
    let br = get("br").await;
    assert_eq!(br.text(), "br", "the br variant was served the gzip one");
    assert!(br.cache_status().contains("fwd=miss"), "{}", br.cache_status());
    assert_eq!(origin.count("/vary"), 2);

    let equivalent = get("GZIP, identity;q=0").await;
    assert_eq!(equivalent.text(), "gzip");
    assert!(equivalent.is_hit(), "{}", equivalent.cache_status());
    let br_again = get("br").await;
    assert_eq!(br_again.text(), "br");
    assert!(br_again.is_hit(), "{}", br_again.cache_status());
    assert_eq!(origin.count("/vary"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_varying_on_star_or_cookie_are_not_stored() {
    let (origin, edge) = scripted_edge(&[]).await;
    for (path, vary) in [("/vary-star", "*"), ("/vary-cookie", "Cookie")] {
        origin.set(path, Reply::cached(BODY, "max-age=60").header("vary", vary));
        for _ in 0..2 {
            let response = fetch(edge.request(Method::GET, path).header("cookie", "session=1")).await;
            assert_eq!(response.text(), BODY);
            assert_not_stored(&response, path);
        }
        assert_eq!(origin.count(path), 2, "{path}");
    }
}

/// `len` bytes of JSON-like text that compresses well.
fn compressible_text(len: usize) -> Bytes {
    let mut text = String::with_capacity(len + 64);
    let mut line = 0;
    while text.len() < len {
        text.push_str(&format!(
            "{{\"line\":{line},\"instrument\":\"AAPL\",\"point\":187.42}}\n"
        ));
        line += 1;
    }
    text.truncate(len);
    text.into()
}

/// Fills `path` with `body`, then checks that each range of `ranges` comes from cache as a 206 with
/// the right bytes and `Content-Range`.
async fn check_ranges(origin: &ScriptedOrigin, edge: &Edge, path: &str, body: &Bytes, ranges: &[(&str, usize, usize)]) {
    origin.set(path, Reply::cached(body.clone(), "max-age=60"));
    let full = edge.get(path).await;
    assert_eq!(full.body, *body, "{path}: the full body differs");
    let full = edge.get(path).await;
    assert!(full.is_hit(), "{}", full.cache_status());
    assert_eq!(full.body, *body, "{path}: the full body from cache differs");
    for &(range, first, last) in ranges {
        let partial = fetch(edge.request(Method::GET, path).header("range", range)).await;
        assert_eq!(partial.status, 206, "{path} {range}");
        assert_eq!(
            partial.header("content-range"),
            Some(format!("bytes {first}-{last}/{}", body.len()).as_str()),
            "{path} {range}"
        );
        assert!(partial.body == body[first..=last], "{path} {range}: wrong bytes");
    }
    assert_eq!(origin.count(path), 1, "{path}: ranges went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_cache() {
    let (origin, edge) = scripted_edge(&[]).await;
    let small = random_bytes(1000);
    check_ranges(
        &origin,
        &edge,
        "/range/small",
        &small,
        &[
            ("bytes=100-199", 100, 199),
            ("bytes=-50", 950, 999),
            ("bytes=990-", 990, 999),
            ("bytes=0-0", 0, 0),
        ],
    )
    .await;
    let unsatisfiable = fetch(edge.request(Method::GET, "/range/small").header("range", "bytes=5000-")).await;
    assert_eq!(unsatisfiable.status, 416);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_cross_chunks_of_large_and_compressed_bodies() {
    let (origin, edge) = scripted_edge(&[]).await;
    const CHUNK: usize = 64 * 1024;
    let ranges = [
        ("bytes=65530-65545", CHUNK - 6, CHUNK + 9),
        ("bytes=65536-131072", CHUNK, 2 * CHUNK),
        ("bytes=1000-150000", 1000, 150_000),
        ("bytes=-100", 200_000 - 100, 200_000 - 1),
    ];
    check_ranges(&origin, &edge, "/range/large", &random_bytes(200_000), &ranges).await;
    let before = edge.metric("edge_cache_compression_input_bytes_total").await;
    assert_eq!(before, 0.0, "random bytes were stored compressed");

    check_ranges(
        &origin,
        &edge,
        "/range/compressed",
        &compressible_text(200_000),
        &ranges,
    )
    .await;
    let input = edge.metric("edge_cache_compression_input_bytes_total").await;
    let output = edge.metric("edge_cache_compression_output_bytes_total").await;
    assert!(input >= 190_000.0, "the text was not compressed: {input} bytes in");
    assert!(
        output > 0.0 && output < input / 2.0,
        "{input} bytes compressed to {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_on_a_cached_entry_has_the_headers_and_no_body() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/head", Reply::cached(BODY, "max-age=60").header("etag", "\"h\""));
    let get = edge.get("/head").await;
    let head = fetch(edge.request(Method::HEAD, "/head")).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.is_hit(), "{}", head.cache_status());
    for name in ["content-length", "etag", "cache-control"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-length"), Some(BODY.len().to_string().as_str()));
    assert_eq!(origin.count("/head"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/swr", Reply::cached("v1", "max-age=1, stale-while-revalidate=30"));
    edge.get("/swr").await;
    origin.set("/swr", Reply::cached("v2", "max-age=60, stale-while-revalidate=30"));

    let stale = eventually("a stale response", async || {
        let response = edge.get("/swr").await;
        if response.is_hit() {
            return None;
        }
        Some(response)
    })
    .await;
    assert_eq!(stale.text(), "v1", "stale-while-revalidate answers from cache at once");
    let status = stale.cache_status();
    assert!(
        status.starts_with("edge; hit; ttl=-") && status.ends_with("; detail=stale-while-revalidate"),
        "{status}"
    );

    let fresh = eventually("the refreshed entry", async || {
        let response = edge.get("/swr").await;
        (response.text() == "v2").then_some(response)
    })
    .await;
    assert!(fresh.is_hit(), "the refresh was stored: {}", fresh.cache_status());
    assert_eq!(origin.count("/swr"), 2, "one background refresh");
    assert!(edge.get("/swr").await.is_hit());
    assert_eq!(origin.count("/swr"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_and_unspecified_freshness_are_not_stored() {
    let (origin, edge) = scripted_edge(&[]).await;
    let cases = [
        ("/no-store", Reply::cached(BODY, "no-store, max-age=60")),
        ("/private", Reply::cached(BODY, "private, max-age=60")),
        ("/unspecified", Reply::new(200, BODY)),
        (
            "/no-cache-control-but-etag",
            Reply::new(200, BODY).header("etag", "\"e\""),
        ),
    ];
    for (path, reply) in cases {
        origin.set(path, reply);
        for _ in 0..2 {
            let response = edge.get(path).await;
            assert_eq!(response.text(), BODY);
            assert_not_stored(&response, path);
        }
        assert_eq!(origin.count(path), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_authorization_are_stored_only_when_the_response_allows_it() {
    let (origin, edge) = scripted_edge(&[]).await;
    let cases = [
        ("/auth/max-age", "max-age=60", 2),
        ("/auth/public", "public, max-age=60", 1),
        ("/auth/s-maxage", "s-maxage=60", 1),
        ("/auth/must-revalidate", "must-revalidate, max-age=60", 1),
    ];
    for (path, cache_control, fetches) in cases {
        origin.set(path, Reply::cached(BODY, cache_control));
        for _ in 0..2 {
            let response = fetch(edge.request(Method::GET, path).bearer_auth("secret")).await;
            assert_eq!(response.text(), BODY);
        }
        assert_eq!(
            origin.count(path),
            fetches,
            "{path} with Cache-Control: {cache_control}"
        );
    }
}

/// RFC 9111 §3.5 with RFC 9213: a response to a request with `Authorization` is shared only when a
/// header addressed to this cache marks it shareable (`public`, `s-maxage` or `must-revalidate`,
/// without `private`); lifetimes still come from `CDN-Cache-Control` when present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_fetched_with_a_token_reaches_anonymous_readers_only_when_marked_shareable() {
    let (origin, edge) = scripted_edge(&[]).await;
    type Headers = &'static [(&'static str, &'static str)];
    let cases: [(&str, Headers, bool); 6] = [
        ("/token/max-age", &[("cache-control", "max-age=60")], false),
        (
            "/token/cdn-lifetime",
            &[("cache-control", "private"), ("cdn-cache-control", "max-age=60")],
            false,
        ),
        (
            "/token/private-s-maxage",
            &[
                ("cache-control", "private, s-maxage=60"),
                ("cdn-cache-control", "max-age=60"),
            ],
            false,
        ),
        (
            "/token/cdn-public",
            &[
                ("cache-control", "private"),
                ("cdn-cache-control", "public, max-age=60"),
            ],
            true,
        ),
        (
            "/token/public-cdn-lifetime",
            &[
                ("cache-control", "public, max-age=5"),
                ("cdn-cache-control", "max-age=60"),
            ],
            true,
        ),
        (
            "/token/s-maxage-cdn-lifetime",
            &[("cache-control", "s-maxage=5"), ("cdn-cache-control", "max-age=60")],
            true,
        ),
    ];
    for (path, headers, shareable) in cases {
        let mut reply = Reply::new(200, "").echo("authorization");
        for (name, value) in headers {
            reply = reply.header(name, value);
        }
        origin.set(path, reply);
        let with_token = fetch(edge.request(Method::GET, path).bearer_auth("reader-token")).await;
        assert_eq!(with_token.text(), "Bearer reader-token", "{path}");
        let anonymous = edge.get(path).await;
        if shareable {
            assert!(anonymous.is_hit(), "{path}: {}", anonymous.cache_status());
            assert_eq!(origin.count(path), 1, "{path}");
        } else {
            assert_eq!(
                anonymous.text(),
                "",
                "{path}: the token's response reached an anonymous reader"
            );
            assert_eq!(origin.count(path), 2, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_setting_cookies_are_stored_only_when_allowed_and_never_with_the_cookie() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set(
        "/cookie/plain",
        Reply::cached(BODY, "max-age=60").header("set-cookie", "session=first"),
    );
    for _ in 0..2 {
        let response = edge.get("/cookie/plain").await;
        assert_not_stored(&response, "/cookie/plain");
        assert_eq!(response.header("set-cookie"), Some("session=first"));
    }
    assert_eq!(origin.count("/cookie/plain"), 2);

    let allowed = [
        ("/cookie/private", "max-age=60, private=\"set-cookie\"", None),
        ("/cookie/no-cache", "max-age=60, no-cache=\"Set-Cookie\"", None),
        ("/cookie/cdn", "private=\"set-cookie\"", Some("max-age=60")),
    ];
    for (path, cache_control, cdn_cache_control) in allowed {
        let mut reply = Reply::cached(BODY, cache_control).header("set-cookie", "session=first");
        if let Some(value) = cdn_cache_control {
            reply = reply.header("cdn-cache-control", value);
        }
        origin.set(path, reply);
        let miss = edge.get(path).await;
        assert!(
            miss.cache_status().contains("stored"),
            "{path}: {}",
            miss.cache_status()
        );
        assert_eq!(
            miss.header("set-cookie"),
            Some("session=first"),
            "{path}: the fetching client"
        );
        let hit = edge.get(path).await;
        assert!(hit.is_hit(), "{path}: {}", hit.cache_status());
        assert_eq!(hit.header("set-cookie"), None, "{path}: a stored cookie was replayed");
        assert_eq!(hit.text(), BODY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_wins_over_cache_control() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set(
        "/cdn/stored",
        Reply::cached(BODY, "no-store").header("cdn-cache-control", "max-age=600"),
    );
    let miss = edge.get("/cdn/stored").await;
    assert!(miss.ttl() >= 590, "{}", miss.cache_status());
    let hit = edge.get("/cdn/stored").await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(
        hit.header("cache-control"),
        Some("no-store"),
        "browsers still get Cache-Control"
    );
    assert_eq!(origin.count("/cdn/stored"), 1);

    origin.set(
        "/cdn/refused",
        Reply::cached(BODY, "max-age=600").header("cdn-cache-control", "no-store"),
    );
    for _ in 0..2 {
        assert_not_stored(&edge.get("/cdn/refused").await, "/cdn/refused");
    }
    assert_eq!(origin.count("/cdn/refused"), 2);

    origin.set(
        "/cdn/longer",
        Reply::cached(BODY, "max-age=5").header("cdn-cache-control", "max-age=600"),
    );
    assert!(edge.get("/cdn/longer").await.ttl() >= 590);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_key_are_coalesced_into_one_fetch() {
    let (origin, edge) = scripted_edge(&[("EDGE_CACHE__LOCK_TIMEOUT", "30s")]).await;
    origin.set(
        "/slow",
        Reply::cached(BODY, "max-age=60").delay(Duration::from_millis(500)),
    );
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        requests.spawn(fetch(edge.request(Method::GET, "/slow")));
    }
    let responses = requests.join_all().await;
    assert_eq!(responses.len(), 20);
    for response in &responses {
        assert_eq!((response.status, response.text()), (200, BODY));
    }
    assert_eq!(origin.count("/slow"), 1, "concurrent misses each went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_unsafe_requests_invalidate_and_failed_ones_do_not() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set("/doc", Reply::cached(BODY, "max-age=60"));
    let post = |path: &'static str| fetch(edge.request(Method::POST, path).body("{}"));

    edge.get("/doc").await;
    origin.set_for(Method::POST, "/doc", Reply::new(204, ""));
    assert_eq!(post("/doc").await.status, 204);
    let after = edge.get("/doc").await;
    assert!(
        after.cache_status().starts_with("edge; fwd=miss"),
        "{}",
        after.cache_status()
    );
    assert_eq!(origin.gets("/doc"), 2);

    for failure in [403, 404, 500, 503] {
        origin.set_for(Method::POST, "/doc", Reply::new(failure, "no"));
        assert_eq!(post("/doc").await.status, failure);
        let after = edge.get("/doc").await;
        assert!(
            after.is_hit(),
            "after a POST answered {failure}: {}",
            after.cache_status()
        );
    }
    assert_eq!(origin.gets("/doc"), 2);

    // A created resource's Location is invalidated too (RFC 9111 §4.4).
    origin.set_for(Method::POST, "/docs", Reply::new(201, "").header("location", "/doc"));
    assert_eq!(post("/docs").await.status, 201);
    assert!(edge.get("/doc").await.cache_status().starts_with("edge; fwd=miss"));
    assert_eq!(origin.gets("/doc"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn surrogate_tags_are_stripped_from_responses() {
    let (origin, edge) = scripted_edge(&[]).await;
    origin.set(
        "/tagged",
        Reply::cached(BODY, "max-age=60")
            .header("surrogate-key", "AAPL AAPL:1h")
            .header("cache-tag", "model:lstm"),
    );
    for expected_hit in [false, true] {
        let response = edge.get("/tagged").await;
        assert_eq!(response.is_hit(), expected_hit, "{}", response.cache_status());
        assert_eq!(response.header("surrogate-key"), None);
        assert_eq!(response.header("cache-tag"), None);
        assert_eq!(response.text(), BODY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_flow_from_the_real_origin_through_the_edge() {
    let origin = RealOrigin::start().await;
    let edge = Edge::start(&origin.url, &[]).await;
    let etag = origin.put_forecast("AAPL", "1h", 187.42).await;
    let path = "/v1/forecasts/AAPL/1h";
    let direct = origin.get(path).await;
    assert!(
        direct
            .header("surrogate-key")
            .is_some_and(|tags| tags.contains("AAPL:1h"))
    );

    let miss = edge.get(path).await;
    assert_eq!(miss.status, 200);
    assert!(
        miss.cache_status().contains("fwd=miss; fwd-status=200; stored"),
        "{}",
        miss.cache_status()
    );
    assert!(
        miss.ttl() > 60,
        "CDN-Cache-Control (up to valid_until) was not used: {}",
        miss.cache_status()
    );
    assert_eq!(miss.header("etag"), Some(etag.as_str()));
    assert_eq!(miss.header("surrogate-key"), None);
    assert_eq!(miss.header("cdn-cache-control"), direct.header("cdn-cache-control"));
    assert_eq!(miss.header("cache-control"), direct.header("cache-control"));

    let hit = edge.get(path).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, direct.body);
    assert_eq!(hit.header("etag"), Some(etag.as_str()));
    let revalidate = fetch(edge.request(Method::GET, path).header("if-none-match", &etag)).await;
    assert_eq!(revalidate.status, 304);
}
