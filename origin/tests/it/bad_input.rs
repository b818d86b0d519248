//! Every bad input gets a clear 4xx answer in the API's JSON error shape, and changes nothing: the current
//! versions, the histories and the audit log read the same before and after.

use std::num::NonZeroUsize;

use reqwest::{Method, Response, header};
use serde_json::{Value, json};

use crate::support::{self, TestOrigin, expect_error, forecast, token};

/// The key every test seeds with one version.
const SEEDED: &str = "/admin/v1/forecasts/AAPL/1h";
/// A key no test writes.
const EMPTY: &str = "/admin/v1/forecasts/MSFT/1h";

/// What a client can see of the stored data: both keys' current versions (through the instruments'
/// listings, which cover every timeframe), their histories, the audit log and the invalidation log.
#[derive(Debug, PartialEq)]
struct Snapshot(Vec<(String, u16, Option<String>, String)>);

async fn snapshot(origin: &TestOrigin) -> Snapshot {
    let mut seen = Vec::new();
    for path in [
        "/v1/forecasts/AAPL/1h",
        "/v1/forecasts/AAPL",
        "/v1/forecasts/MSFT",
        "/admin/v1/forecasts/AAPL/1h/versions",
        "/admin/v1/forecasts/MSFT/1h/versions",
        "/admin/v1/audit?limit=1000",
        "/admin/v1/invalidations?limit=1000",
    ] {
        let response = origin.admin(Method::GET, path).send().await.unwrap();
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(header::ETAG)
            .map(|v| v.to_str().unwrap().to_owned());
        let mut text = response.text().await.unwrap();
        if path.starts_with("/admin/v1/audit") {
            // Refusals are audited by design; what is compared is everything else.
            let mut audit: serde_json::Value = serde_json::from_str(&text).unwrap();
            audit["entries"]
                .as_array_mut()
                .unwrap()
                .retain(|entry| entry["action"] != "auth.refused");
            text = audit.to_string();
        }
        seen.push((path.to_owned(), status, etag, text));
    }
    Snapshot(seen)
}

/// An origin whose `AAPL:1h` has one version and `MSFT:1h` none, and what it looks like.
async fn seeded(origin: TestOrigin) -> (TestOrigin, Snapshot) {
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 100.0)).await;
    let before = snapshot(&origin).await;
    assert_eq!(before.0[0].1, 200);
    assert_eq!(before.0[4].1, 404, "MSFT:1h must start without history");
    (origin, before)
}

async fn assert_unchanged(origin: &TestOrigin, before: &Snapshot) {
    assert_eq!(&snapshot(origin).await, before, "a refused request changed stored data");
}

/// A PUT with the admin token and a raw body of the given content type.
async fn put_raw(
    origin: &TestOrigin,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = origin.admin(Method::PUT, path).body(body);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    request.send().await.unwrap()
}

/// PUTs `body` as JSON to both keys and expects the same refusal for each.
async fn refuse_write(origin: &TestOrigin, body: &str, status: u16, code: &str) {
    for path in [SEEDED, EMPTY] {
        let response = put_raw(origin, path, Some("application/json"), body.to_owned()).await;
        expect_error(response, status, code).await;
    }
}

/// A valid forecast as JSON with `change` applied to it.
fn forecast_with(change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut value = forecast(("lstm", "1"), 100.0);
    change(value.as_object_mut().unwrap());
    value.to_string()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let valid = forecast(("lstm", "1"), 1.0).to_string();
    let truncated = &valid[..valid.len() / 2];
    let trailing = format!("{valid}}}");
    for body in [
        "",
        "not json",
        "{\"horizon\":",
        "{'horizon': '1h'}",
        truncated,
        trailing.as_str(),
    ] {
        refuse_write(&origin, body, 400, "malformed_json").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_422() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let bodies = [
        forecast_with(|f| {
            f.insert("point".into(), json!("1"));
        }),
        forecast_with(|f| {
            f.insert("point".into(), Value::Null);
        }),
        forecast_with(|f| {
            f.remove("point");
        }),
        forecast_with(|f| {
            f.insert("model".into(), json!("lstm"));
        }),
        forecast_with(|f| {
            f.insert("generated_at".into(), json!(12));
        }),
        forecast_with(|f| {
            f.insert("generated_at".into(), json!("yesterday"));
        }),
        forecast_with(|f| {
            f.insert("horizon".into(), json!("0h"));
        }),
        forecast_with(|f| {
            f.insert("quantiles".into(), json!([1.0]));
        }),
        "[]".to_owned(),
        "\"forecast\"".to_owned(),
        "{}".to_owned(),
    ];
    for body in &bodies {
        refuse_write(&origin, body, 422, "invalid_body").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn unknown_fields_are_422() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let top_level = forecast_with(|f| {
        f.insert("pointt".into(), json!(1.0));
    });
    let in_model = forecast_with(|f| {
        f.insert("model".into(), json!({"id": "lstm", "version": "1", "name": "x"}));
    });
    for body in [top_level, in_model] {
        refuse_write(&origin, &body, 422, "invalid_body").await;
    }
    assert_unchanged(&origin, &before).await;
}

/// JSON has no NaN or infinities; a number too large for f64 is refused by the parser as well.
#[tokio::test]
async fn non_finite_points_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let valid = forecast_with(|f| {
        f.insert("point".into(), json!(12345.5));
    });
    for point in ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"] {
        let body = valid.replace("12345.5", point);
        assert!(body.contains(point));
        refuse_write(&origin, &body, 400, "malformed_json").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let huge = forecast_with(|f| {
        f.insert("metadata".into(), json!({"blob": "x".repeat(1 << 20)}));
    });
    assert!(huge.len() > 1 << 20);
    refuse_write(&origin, &huge, 413, "body_too_large").await;
    let garbage = "x".repeat(2 << 20);
    refuse_write(&origin, &garbage, 413, "body_too_large").await;
    let batch = json!({"writes": [{"instrument": "MSFT", "timeframe": "1h", "forecast": serde_json::from_str::<Value>(&huge).unwrap()}]});
    let response = origin
        .admin(Method::POST, "/admin/v1/forecasts:batch")
        .json(&batch)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "body_too_large").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn bodies_that_are_not_declared_json_are_415() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let body = forecast(("lstm", "1"), 1.0).to_string();
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
        Some("json"),
    ] {
        for path in [SEEDED, EMPTY] {
            let response = put_raw(&origin, path, content_type, body.clone()).await;
            expect_error(response, 415, "unsupported_media_type").await;
        }
    }
    let rollback = origin
        .admin(Method::POST, &format!("{SEEDED}/rollback"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"to_version":1}"#)
        .send()
        .await
        .unwrap();
    expect_error(rollback, 415, "unsupported_media_type").await;
    assert_unchanged(&origin, &before).await;

    // The same body with a JSON content type is accepted: the type alone was the problem.
    let accepted = put_raw(&origin, EMPTY, Some("application/json; charset=utf-8"), body).await;
    assert_eq!(accepted.status(), 201);
}

#[tokio::test]
async fn invalid_instruments_in_paths_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let too_long = "A".repeat(33);
    let body = forecast(("lstm", "1"), 1.0);
    for instrument in [too_long.as_str(), "..%2Fx", "a%20b", "%C3%84PPL", "AAPL$", "AA%3A1h"] {
        let write = origin
            .admin(Method::PUT, &format!("/admin/v1/forecasts/{instrument}/1h"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(write, 400, "invalid_instrument").await;
        for (method, path) in [
            (Method::DELETE, format!("/admin/v1/forecasts/{instrument}/1h")),
            (Method::GET, format!("/admin/v1/forecasts/{instrument}/1h/versions")),
            (Method::GET, format!("/v1/forecasts/{instrument}/1h")),
            (Method::GET, format!("/v1/forecasts/{instrument}/1h/versions/1")),
            (Method::GET, format!("/v1/forecasts/{instrument}")),
        ] {
            let response = origin.admin(method, &path).send().await.unwrap();
            expect_error(response, 400, "invalid_instrument").await;
        }
        let rollback = origin
            .admin(Method::POST, &format!("/admin/v1/forecasts/{instrument}/1h/rollback"))
            .json(&json!({"to_version": 1}))
            .send()
            .await
            .unwrap();
        expect_error(rollback, 400, "invalid_instrument").await;
    }
    // The longest valid instrument is accepted as a path.
    let longest = origin
        .get(&format!("/v1/forecasts/{}/1h", "A".repeat(32)))
        .send()
        .await
        .unwrap();
    expect_error(longest, 404, "not_found").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn paths_that_are_not_utf8_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let write = origin
        .admin(Method::PUT, "/admin/v1/forecasts/%FF/1h")
        .json(&forecast(("lstm", "1"), 1.0))
        .send()
        .await
        .unwrap();
    expect_error(write, 400, "invalid_path").await;
    let read = origin.get("/v1/forecasts/%FF/1h").send().await.unwrap();
    expect_error(read, 400, "invalid_path").await;
    assert_unchanged(&origin, &before).await;
}

/// An empty instrument segment still matches the route, and is refused as an instrument.
#[tokio::test]
async fn an_empty_instrument_is_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let write = origin
        .admin(Method::PUT, "/admin/v1/forecasts//1h")
        .json(&forecast(("lstm", "1"), 1.0))
        .send()
        .await
        .unwrap();
    expect_error(write, 400, "invalid_instrument").await;
    let delete = origin
        .admin(Method::DELETE, "/admin/v1/forecasts//1h")
        .send()
        .await
        .unwrap();
    expect_error(delete, 400, "invalid_instrument").await;
    let read = origin.get("/v1/forecasts//1h").send().await.unwrap();
    expect_error(read, 400, "invalid_instrument").await;
    assert_unchanged(&origin, &before).await;
}

/// The API's bodies are JSON objects; serde would also fill a struct from an array of its fields in
/// order, which no client means to send.
#[tokio::test]
async fn arrays_in_place_of_objects_are_422() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let as_array = json!([
        "1h",
        "2026-11-23T14:00:00Z",
        "2026-11-23T15:00:00Z",
        {"id": "lstm", "version": "1"},
        5.0,
        {},
        [],
        null,
        {}
    ])
    .to_string();
    refuse_write(&origin, &as_array, 422, "invalid_body").await;
    let model_as_array = forecast_with(|f| {
        f.insert("model".into(), json!(["lstm", "1"]));
    });
    refuse_write(&origin, &model_as_array, 422, "invalid_body").await;
    let rollback = origin
        .admin(Method::POST, &format!("{SEEDED}/rollback"))
        .json(&json!([1]))
        .send()
        .await
        .unwrap();
    expect_error(rollback, 422, "invalid_body").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn unknown_timeframes_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for timeframe in ["2h", "0m", "1y", "1H", "60m"] {
        let write = origin
            .admin(Method::PUT, &format!("/admin/v1/forecasts/AAPL/{timeframe}"))
            .json(&forecast(("lstm", "1"), 1.0))
            .send()
            .await
            .unwrap();
        expect_error(write, 400, "invalid_timeframe").await;
        for (method, path) in [
            (Method::DELETE, format!("/admin/v1/forecasts/AAPL/{timeframe}")),
            (Method::GET, format!("/admin/v1/forecasts/AAPL/{timeframe}/versions")),
            (Method::GET, format!("/v1/forecasts/AAPL/{timeframe}")),
            (Method::GET, format!("/v1/forecasts/AAPL/{timeframe}/versions/1")),
        ] {
            let response = origin.admin(method, &path).send().await.unwrap();
            expect_error(response, 400, "invalid_timeframe").await;
        }
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn invalid_or_unknown_version_numbers() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for version in ["0", "-1", "abc", "1.5", "99999999999999999999999", "%201"] {
        let response = origin
            .get(&format!("/v1/forecasts/AAPL/1h/versions/{version}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_version").await;
    }
    let beyond = origin.get("/v1/forecasts/AAPL/1h/versions/2").send().await.unwrap();
    expect_error(beyond, 404, "version_not_found").await;
    let never_written = origin.get("/v1/forecasts/MSFT/1h/versions/1").send().await.unwrap();
    expect_error(never_written, 404, "version_not_found").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn bad_rollbacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.versions_kept = NonZeroUsize::new(2).unwrap();
    let origin = TestOrigin::start(config).await;
    // With two versions kept, version 1 of AAPL:1h is trimmed once `seeded` writes version 3.
    for point in [1.0, 2.0] {
        origin.put("AAPL", "1h", &forecast(("lstm", "1"), point)).await;
    }
    let (origin, before) = seeded(origin).await;
    let rollback = |path: &str, body: Value| {
        origin
            .admin(Method::POST, &format!("{path}/rollback"))
            .json(&body)
            .send()
    };

    for body in [
        json!({"to_version": 0}),
        json!({"to_version": -1}),
        json!({"to_version": "3"}),
        json!({"to_version": 1.5}),
        json!({}),
        json!({"version": 3}),
        json!({"to_version": 3, "force": true}),
    ] {
        expect_error(rollback(SEEDED, body).await.unwrap(), 422, "invalid_body").await;
    }
    let trimmed = rollback(SEEDED, json!({"to_version": 1})).await.unwrap();
    expect_error(trimmed, 410, "version_trimmed").await;
    let beyond = rollback(SEEDED, json!({"to_version": 4})).await.unwrap();
    expect_error(beyond, 404, "version_not_found").await;
    let never_written = rollback(EMPTY, json!({"to_version": 1})).await.unwrap();
    expect_error(never_written, 404, "version_not_found").await;
    let malformed = origin
        .admin(Method::POST, &format!("{SEEDED}/rollback"))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"to_version\":")
        .send()
        .await
        .unwrap();
    expect_error(malformed, 400, "malformed_json").await;
    assert_unchanged(&origin, &before).await;
}

/// Every admin endpoint, with a body it would accept.
fn admin_calls() -> Vec<(Method, &'static str, Option<Value>)> {
    let write = forecast(("lstm", "1"), 1.0);
    vec![
        (Method::PUT, SEEDED, Some(write.clone())),
        (Method::PUT, EMPTY, Some(write.clone())),
        (Method::DELETE, SEEDED, None),
        (
            Method::POST,
            "/admin/v1/forecasts/AAPL/1h/rollback",
            Some(json!({"to_version": 1})),
        ),
        (
            Method::POST,
            "/admin/v1/forecasts:batch",
            Some(json!({"writes": [{"instrument": "MSFT", "timeframe": "1h", "forecast": write}]})),
        ),
        (Method::GET, "/admin/v1/forecasts/AAPL/1h/versions", None),
        (Method::GET, "/admin/v1/models/lstm/1/forecasts", None),
        (Method::POST, "/admin/v1/models/lstm/1/rollback", None),
        (Method::GET, "/admin/v1/audit", None),
        (
            Method::POST,
            "/admin/v1/invalidations",
            Some(json!({"tags": ["AAPL:1h"]})),
        ),
        (Method::GET, "/admin/v1/invalidations", None),
    ]
}

#[tokio::test]
async fn admin_calls_without_a_known_token_are_401() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for (method, path, body) in admin_calls() {
        for authorization in [
            None,
            Some("Bearer wrong-token"),
            Some("Basic dGVzdDp0ZXN0"),
            Some("Bearer "),
            Some(support::ADMIN_TOKEN),
        ] {
            let mut request = origin.client.request(method.clone(), origin.url(path));
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let message = expect_error(response, 401, "unauthorized").await;
            assert!(!message.contains("wrong-token"), "{message}");
        }
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn tokens_without_the_scope_are_403() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.tokens = vec![
        token("reader", "reader-secret", &["forecasts:read"]),
        token("writer", "writer-secret", &["forecasts:write"]),
        token("auditor", "auditor-secret", &["audit:read"]),
    ];
    let (origin, before) = seeded(TestOrigin::start(config).await).await;
    let needs = |method: &Method, path: &str| match (method.as_str(), path) {
        ("GET", "/admin/v1/audit") => "audit:read",
        ("GET", "/admin/v1/invalidations") => "invalidations:read",
        ("POST", "/admin/v1/invalidations") => "invalidations:write",
        ("GET", _) => "forecasts:read",
        _ => "forecasts:write",
    };
    for (method, path, body) in admin_calls() {
        let scope = needs(&method, path);
        for (name, secret) in [
            ("reader", "reader-secret"),
            ("writer", "writer-secret"),
            ("auditor", "auditor-secret"),
        ] {
            let holds = match name {
                "reader" => scope == "forecasts:read",
                "writer" => scope == "forecasts:write",
                _ => scope == "audit:read",
            };
            if holds {
                continue;
            }
            let mut request = origin
                .client
                .request(method.clone(), origin.url(path))
                .bearer_auth(secret);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let message = expect_error(request.send().await.unwrap(), 403, "forbidden").await;
            assert!(message.contains(scope), "{method} {path} as {name}: {message}");
        }
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn a_write_batch_over_the_limit_is_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.http.max_batch_writes = NonZeroUsize::new(2).unwrap();
    let (origin, before) = seeded(TestOrigin::start(config).await).await;
    let item = |instrument: &str| json!({"instrument": instrument, "timeframe": "1h", "forecast": forecast(("lstm", "1"), 7.0)});
    let response = origin
        .admin(Method::POST, "/admin/v1/forecasts:batch")
        .json(&json!({"writes": [item("AAPL"), item("MSFT"), item("NVDA")]}))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "batch_too_large").await;
    expect_error(
        origin.get("/v1/forecasts/NVDA/1h").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_unchanged(&origin, &before).await;

    for body in [
        json!({}),
        json!({"writes": {}}),
        json!({"writes": [], "extra": 1}),
        json!([]),
    ] {
        let response = origin
            .admin(Method::POST, "/admin/v1/forecasts:batch")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, 422, "invalid_body").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn bad_batch_reads_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let too_many: Vec<String> = (0..101).map(|i| format!("K{i}:1h")).collect();
    let response = origin
        .get(&format!("/v1/forecasts?keys={}", too_many.join(",")))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "batch_too_large").await;

    // A list is comma-separated keys, without spaces or empty items.
    for keys in [
        "AAPL:2h",
        "AAPL",
        "AA%20PL:1h",
        ":1h",
        "AAPL:1h:1d",
        "AAPL:1h,MSFT",
        ",,",
        "%20",
        "AAPL:1h,",
        "AAPL:1h,%20MSFT:1d",
    ] {
        let response = origin.get(&format!("/v1/forecasts?keys={keys}")).send().await.unwrap();
        expect_error(response, 400, "invalid_key").await;
    }
    for query in ["", "?keys="] {
        let response = origin.get(&format!("/v1/forecasts{query}")).send().await.unwrap();
        expect_error(response, 400, "missing_keys").await;
    }
    let unknown_parameter = origin.get("/v1/forecasts?key=AAPL:1h").send().await.unwrap();
    expect_error(unknown_parameter, 400, "invalid_query").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn audit_limits_out_of_range_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for limit in ["0", "1001", "5000"] {
        let response = origin
            .admin(Method::GET, &format!("/admin/v1/audit?limit={limit}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_limit").await;
    }
    for limit in ["-1", "abc", ""] {
        let response = origin
            .admin(Method::GET, &format!("/admin/v1/audit?limit={limit}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_query").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn forecasts_that_break_the_rules_are_422() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let bodies = [
        forecast_with(|f| {
            let generated_at = f["generated_at"].clone();
            f.insert("generated_at".into(), f["valid_until"].clone());
            f.insert("valid_until".into(), generated_at);
        }),
        forecast_with(|f| {
            f.insert("valid_until".into(), f["generated_at"].clone());
        }),
        forecast_with(|f| {
            f.insert("quantiles".into(), json!({"1.5": 1.0}));
        }),
        forecast_with(|f| {
            f.insert("quantiles".into(), json!({"0": 1.0}));
        }),
        forecast_with(|f| {
            f.insert("quantiles".into(), json!({"median": 1.0}));
        }),
        forecast_with(|f| {
            f.insert("direction_prob_up".into(), json!(1.5));
        }),
        forecast_with(|f| {
            f.insert("direction_prob_up".into(), json!(-0.1));
        }),
        forecast_with(|f| {
            f.insert("metadata".into(), json!({"blob": "x".repeat(4097)}));
        }),
        forecast_with(|f| {
            f.insert("model".into(), json!({"id": "ls/tm", "version": "1"}));
        }),
        forecast_with(|f| {
            f.insert("model".into(), json!({"id": "lstm", "version": ""}));
        }),
        forecast_with(|f| {
            f.insert("model".into(), json!({"id": "m".repeat(65), "version": "1"}));
        }),
        forecast_with(|f| {
            f.insert("horizon".into(), json!("1y"));
        }),
        forecast_with(|f| {
            f.insert("intervals".into(), json!([{"level": 0.9, "lower": 2.0, "upper": 1.0}]));
        }),
    ];
    for body in &bodies {
        refuse_write(&origin, body, 422, "invalid_body").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for (method, path) in [
        (Method::GET, "/v2/forecasts/AAPL/1h"),
        (Method::GET, "/v1/forecasts/AAPL/1h/extra"),
        (Method::GET, "/v1/forecasts/AAPL/1h/versions"),
        (Method::PUT, "/admin/v1/forecasts/AAPL/1h/versions/1"),
        (Method::DELETE, "/admin/v1/forecasts/AAPL"),
        (Method::POST, "/nothing"),
    ] {
        let response = origin
            .admin(method, path)
            .json(&forecast(("lstm", "1"), 1.0))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store");
        expect_error(response, 404, "not_found").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn wrong_methods_are_json_405() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for (method, path) in [
        (Method::POST, "/v1/forecasts/AAPL/1h"),
        (Method::PUT, "/v1/forecasts/AAPL/1h"),
        (Method::DELETE, "/v1/forecasts/AAPL/1h"),
        (Method::POST, "/v1/forecasts"),
        (Method::GET, "/admin/v1/forecasts:batch"),
        (Method::PATCH, SEEDED),
        (Method::POST, SEEDED),
        (Method::DELETE, "/admin/v1/forecasts/AAPL/1h/versions"),
        (Method::GET, "/admin/v1/forecasts/AAPL/1h/rollback"),
        (Method::PUT, "/healthz"),
    ] {
        let response = origin
            .admin(method, path)
            .json(&forecast(("lstm", "1"), 1.0))
            .send()
            .await
            .unwrap();
        expect_error(response, 405, "method_not_allowed").await;
    }
    assert_unchanged(&origin, &before).await;
}

/// POSTs `body` with `content_type` to the invalidation log and expects the refusal.
async fn refuse_invalidation(origin: &TestOrigin, content_type: &str, body: String, status: u16, code: &str) -> String {
    let response = origin
        .admin(Method::POST, "/admin/v1/invalidations")
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(response, status, code).await
}

#[tokio::test]
async fn invalidations_need_valid_selectors() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for body in [
        json!({}),
        json!({"soft": true}),
        json!({"all": false}),
        json!({"keys": [], "tags": []}),
    ] {
        let message = refuse_invalidation(&origin, "application/json", body.to_string(), 422, "invalid_body").await;
        assert!(message.contains("at least one selector"), "{body}: {message}");
    }
    let too_long = "x".repeat(shared::wire::MAX_KEY_BYTES + 1);
    let too_many: Vec<String> = (0..=shared::wire::MAX_SELECTORS).map(|i| format!("T{i}")).collect();
    for body in [
        json!({"keys": [""]}),
        json!({"keys": ["v1/forecasts/AAPL/1h"]}),
        json!({"keys": ["/v1/forecasts/AAPL/1h "]}),
        json!({"prefixes": ["/v1/ä"]}),
        json!({"tags": [""]}),
        json!({"tags": ["AAPL 1h"]}),
        json!({"tags": [too_long]}),
        json!({"tags": too_many}),
        json!({"all": true, "prefixes": [""]}),
        json!({"models": [{"id": "ls/tm", "version": "1"}]}),
        json!({"models": [{"id": "lstm"}]}),
        json!({"models": [["lstm", "1"]]}),
        json!({"models": ["lstm@1"]}),
        json!({"tags": "AAPL"}),
        json!({"tags": [1]}),
        json!({"keys": null}),
        json!({"all": "yes"}),
        json!({"soft": 1, "tags": ["AAPL"]}),
        json!({"tag": ["AAPL"]}),
        json!({"tags": ["AAPL"], "wait": "100ms"}),
        json!([{"tags": ["AAPL"]}]),
        json!(["AAPL"]),
        json!("AAPL"),
    ] {
        refuse_invalidation(&origin, "application/json", body.to_string(), 422, "invalid_body").await;
    }
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn invalidation_bodies_that_are_not_json_are_refused() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    for body in ["", "not json", "{\"tags\":", "{\"tags\":[\"AAPL\"]}}"] {
        refuse_invalidation(&origin, "application/json", body.to_owned(), 400, "malformed_json").await;
    }
    let valid = json!({"tags": ["AAPL"]}).to_string();
    refuse_invalidation(&origin, "text/plain", valid, 415, "unsupported_media_type").await;
    let huge = json!({"tags": vec!["x".repeat(8000); 200]}).to_string();
    assert!(huge.len() > 1 << 20);
    refuse_invalidation(&origin, "application/json", huge, 413, "body_too_large").await;
    assert_unchanged(&origin, &before).await;
}

#[tokio::test]
async fn bad_invalidation_log_queries_are_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    // A sequence is a whole number of at most 2^63 - 1, as the document's int64 says.
    for (query, code) in [
        ("after=-1", "invalid_after"),
        ("after=abc", "invalid_after"),
        ("after=+1", "invalid_after"),
        ("after=9223372036854775808", "invalid_after"),
        ("after=99999999999999999999999", "invalid_after"),
        ("after=", "invalid_after"),
        ("from=1", "invalid_query"),
        ("limit=x", "invalid_query"),
    ] {
        let response = origin
            .admin(Method::GET, &format!("/admin/v1/invalidations?{query}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, code).await;
    }
    for limit in ["0", "1001"] {
        let response = origin
            .admin(Method::GET, &format!("/admin/v1/invalidations?limit={limit}"))
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_limit").await;
    }
    assert_unchanged(&origin, &before).await;
}

/// `If-Match` is `*` or a list of quoted entity-tags; anything else is a malformed request, not a
/// failed precondition, and changes nothing.
#[tokio::test]
async fn malformed_if_match_is_400() {
    let (origin, before) = seeded(TestOrigin::embedded().await).await;
    let write = |value: &str| {
        origin
            .admin(Method::PUT, "/admin/v1/forecasts/AAPL/1h")
            .header("if-match", value)
            .json(&forecast(("lstm", "1"), 101.0))
            .send()
    };
    for value in ["null", "3-abc", "\"unterminated", "W/x", "*, \"a\""] {
        expect_error(write(value).await.unwrap(), 400, "invalid_if_match").await;
    }
    // Well-formed but stale, weak (If-Match compares strongly), or an empty list (RFC 9110 §5.6.1: a list
    // may hold no element, and then none matches): a failed precondition.
    for value in ["\"0-stale\"", "W/\"0-stale\"", "", ", ,"] {
        expect_error(write(value).await.unwrap(), 412, "precondition_failed").await;
    }
    assert_unchanged(&origin, &before).await;
}

/// A stream's starting points are all checked, even one that another overrides.
#[tokio::test]
async fn every_stream_start_is_checked() {
    let origin = TestOrigin::embedded().await;
    for (query, header, code) in [
        ("since=yesterday", Some("1"), "invalid_since"),
        ("last_event_id=x", Some("1"), "invalid_last_event_id"),
        ("since=0", Some("x"), "invalid_last_event_id"),
        // Ids are int64, as the document says; instants are RFC 3339 or 1 to 16 digits.
        ("since=0", Some("9223372036854775808"), "invalid_last_event_id"),
        ("last_event_id=%2B1", None, "invalid_last_event_id"),
        ("since=%2B1", None, "invalid_since"),
        ("since=12345678901234567", None, "invalid_since"),
        // Lists are comma-separated, without spaces or empty items; types are event type names.
        ("instruments=AAPL,", None, "invalid_instruments"),
        ("instruments=", None, "invalid_instruments"),
        ("types=", None, "invalid_types"),
        ("types=Pattern%20Detected", None, "invalid_types"),
        ("types=A,,B", None, "invalid_types"),
    ] {
        let mut request = origin
            .get(&format!("/v1/stream?topics=**&{query}"))
            .bearer_auth(support::ADMIN_TOKEN);
        if let Some(header) = header {
            request = request.header("last-event-id", header);
        }
        expect_error(request.send().await.unwrap(), 400, code).await;
    }
}

/// What the document says of webhook endpoints and tokens is what the origin takes: header values of
/// visible ASCII, lengths in characters, token names without outer spaces, event ids of int64.
#[tokio::test]
async fn endpoint_and_token_fields_are_read_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    support::allow_discard_targets(&mut config);
    let origin = TestOrigin::start(config).await;
    let create = |body: Value| origin.admin(Method::POST, "/admin/v1/webhooks").json(&body).send();
    let endpoint = |extra: Value| {
        let mut body = json!({"url": "https://[100::1]/hook", "topics": ["indicators.**"], "enabled": false});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for refused in [
        json!({"headers": {"x-desk": "caf\u{e9}"}}),
        json!({"headers": {"x-desk": "a\u{7f}"}}),
        json!({"description": "\u{e9}".repeat(1025)}),
        json!({"url": format!("https://[100::1]/{}", "a".repeat(2048))}),
    ] {
        expect_error(create(endpoint(refused.clone())).await.unwrap(), 422, "invalid_body").await;
    }
    // 1024 characters of two bytes each: the limit counts characters, as JSON Schema's maxLength does.
    let response = create(endpoint(
        json!({"description": "\u{e9}".repeat(1024), "headers": {"x-desk": "eu\t1"}}),
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for event_id in ["9223372036854775808", "-1", "%2B1"] {
        let response = origin
            .admin(
                Method::POST,
                &format!("/admin/v1/webhooks/{id}/messages/{event_id}/resend"),
            )
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "invalid_event_id").await;
    }

    let make_token = |body: Value| origin.admin(Method::POST, "/admin/v1/tokens").json(&body).send();
    let topics: Vec<String> = (0..65).map(|i| format!("t{i}.**")).collect();
    for refused in [
        json!({"name": " desk", "scopes": ["forecasts:read"]}),
        json!({"name": "desk ", "scopes": ["forecasts:read"]}),
        json!({"name": "desk", "scopes": ["forecasts:read"], "topics": topics}),
    ] {
        expect_error(make_token(refused).await.unwrap(), 422, "invalid_body").await;
    }
    let made = make_token(json!({"name": "desk eu", "scopes": ["forecasts:read"]}))
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
}
