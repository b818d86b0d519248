//! The API end to end over real HTTP: writes, reads with their caching headers, conditional requests,
//! versions, deletes, rollbacks, model operations, the audit log, the invalidation log, tokens,
//! operations endpoints, restarts.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;

use origin::api::auth::format_hash;
use origin::config::OriginConfig;
use reqwest::{Method, Response, header};
use serde_json::{Value, json};

use crate::support::{self, TestOrigin, admin_get, expect_error, forecast, token};

/// The example of the issue, as a producer would send it.
const ISSUE_EXAMPLE: &str = r#"{"horizon":"1h","generated_at":"2026-11-23T14:00:00Z","valid_until":"2026-11-23T15:00:00Z","model":{"id":"lstm","version":"3.2.0"},"point":187.42,"quantiles":{"0.05":181.2,"0.5":187.4,"0.95":193.9},"direction_prob_up":0.61,"metadata":{"features":"ohlcv"}}"#;

fn admin_path(instrument: &str, timeframe: &str) -> String {
    format!("/admin/v1/forecasts/{instrument}/{timeframe}")
}

/// A write whose answer the test inspects itself.
async fn write(origin: &TestOrigin, instrument: &str, timeframe: &str, body: &Value) -> Response {
    origin
        .admin(Method::PUT, &admin_path(instrument, timeframe))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get(origin: &TestOrigin, path: &str) -> Response {
    origin.get(path).send().await.unwrap()
}

fn header_of(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The number after `max-age=` in a cache-control value.
fn max_age(value: &str) -> u64 {
    let rest = value
        .split_once("max-age=")
        .unwrap_or_else(|| panic!("no max-age in {value:?}"))
        .1;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_issue_example_is_stored_as_numbered_versions() {
    let origin = TestOrigin::embedded().await;
    let send = || {
        origin
            .admin(Method::PUT, "/admin/v1/forecasts/aapl/1h")
            .header(header::CONTENT_TYPE, "application/json")
            .body(ISSUE_EXAMPLE)
            .send()
    };

    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let etag = header_of(&first, "etag");
    assert!(etag.starts_with("\"1-") && etag.ends_with('"'), "{etag}");
    assert_eq!(header_of(&first, "location"), "/v1/forecasts/AAPL/1h/versions/1");
    assert_eq!(header_of(&first, "content-type"), "application/json");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["instrument"], "AAPL");
    assert_eq!(body["timeframe"], "1h");
    assert_eq!(body["point"], 187.42);
    assert_eq!(body["quantiles"]["0.95"], 193.9);
    assert_eq!(body["model"], json!({"id": "lstm", "version": "3.2.0"}));
    assert_eq!(body["metadata"], json!({"features": "ohlcv"}));

    let second = send().await.unwrap();
    assert_eq!(second.status(), 200);
    let second_etag = header_of(&second, "etag");
    assert!(second_etag.starts_with("\"2-"), "{second_etag}");
    assert_eq!(header_of(&second, "location"), "/v1/forecasts/AAPL/1h/versions/2");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["version"], 2);

    let current = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(current.status(), 200);
    assert_eq!(header_of(&current, "etag"), second_etag);
    let body: Value = current.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["direction_prob_up"], 0.61);
    assert_eq!(body["generated_at"], "2026-11-23T14:00:00Z");
    assert_eq!(body["valid_until"], "2026-11-23T15:00:00Z");
}

#[tokio::test]
async fn the_current_version_carries_validators_and_caching_headers() {
    let origin = TestOrigin::embedded().await;
    let written = write(&origin, "AAPL", "1h", &forecast(("lstm", "3.2.0"), 187.42)).await;
    assert_eq!(written.status(), 201);
    let etag = header_of(&written, "etag");

    let response = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header_of(&response, "etag"), etag);
    assert_eq!(header_of(&response, "content-type"), "application/json");
    let last_modified = header_of(&response, "last-modified");
    httpdate::parse_http_date(&last_modified).unwrap();

    let cache_control = header_of(&response, "cache-control");
    assert!(cache_control.starts_with("public, max-age="), "{cache_control}");
    assert!(max_age(&cache_control) <= 1, "{cache_control}");
    let cdn = header_of(&response, "cdn-cache-control");
    let cdn_max_age = max_age(&cdn);
    assert!((3500..=3600).contains(&cdn_max_age), "{cdn}");
    assert!(cdn.contains("stale-while-revalidate=30"), "{cdn}");
    assert!(cdn.contains("stale-if-error=600"), "{cdn}");
    assert_eq!(
        header_of(&response, "surrogate-key"),
        "AAPL AAPL:1h model:lstm model:lstm@3.2.0"
    );

    let body: Value = response.json().await.unwrap();
    assert_eq!(body["instrument"], "AAPL");
    assert_eq!(body["timeframe"], "1h");
    assert_eq!(body["version"], 1);
    let updated_at = body["updated_at"].as_str().unwrap();
    time::OffsetDateTime::parse(updated_at, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(body["point"], 187.42);
    assert_eq!(body["model"]["id"], "lstm");
}

#[tokio::test]
async fn conditional_reads_answer_304_until_the_forecast_changes() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let first = get(&origin, "/v1/forecasts/AAPL/1h").await;
    let etag = header_of(&first, "etag");
    let last_modified = header_of(&first, "last-modified");
    let path = "/v1/forecasts/AAPL/1h";

    let matching = origin.get(path).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(matching.status(), 304);
    assert_eq!(header_of(&matching, "etag"), etag);
    assert!(matching.bytes().await.unwrap().is_empty());

    let other = origin
        .get(path)
        .header("if-none-match", "\"1-0000000000000000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.bytes().await.unwrap().is_empty());

    let since = origin
        .get(path)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(since.status(), 304);

    let old_since = origin
        .get(path)
        .header("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(old_since.status(), 200);

    // If-None-Match wins over If-Modified-Since, both ways.
    let none_match_wins = origin
        .get(path)
        .header("if-none-match", "\"other\"")
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(none_match_wins.status(), 200);
    let none_match_wins = origin
        .get(path)
        .header("if-none-match", &etag)
        .header("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(none_match_wins.status(), 304);

    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;
    let after = origin.get(path).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(after.status(), 200);
    let new_etag = header_of(&after, "etag");
    assert_ne!(new_etag, etag);
    let body: Value = after.json().await.unwrap();
    assert_eq!((body["version"].clone(), body["point"].clone()), (json!(2), json!(2.0)));
}

#[tokio::test]
async fn head_answers_the_headers_of_get_without_a_body() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let path = "/v1/forecasts/AAPL/1h";
    let got = get(&origin, path).await;
    let got_headers = got.headers().clone();
    let got_body = got.bytes().await.unwrap();

    let head = origin.client.head(origin.url(path)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    for name in ["etag", "last-modified", "surrogate-key", "content-type"] {
        assert_eq!(head.headers().get(name), got_headers.get(name), "{name}");
    }
    assert!(head.headers().contains_key("cache-control"));
    assert!(head.headers().contains_key("cdn-cache-control"));
    if let Some(length) = head.headers().get(header::CONTENT_LENGTH) {
        assert_eq!(length.to_str().unwrap(), got_body.len().to_string());
    }
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn versions_are_immutable_and_outlive_newer_writes() {
    let origin = TestOrigin::embedded().await;
    let first = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let first_etag = header_of(&first, "etag");
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;

    let one = get(&origin, "/v1/forecasts/AAPL/1h/versions/1").await;
    assert_eq!(one.status(), 200);
    assert!(header_of(&one, "cache-control").contains("immutable"));
    assert!(header_of(&one, "cdn-cache-control").contains("immutable"));
    assert_eq!(header_of(&one, "etag"), first_etag);
    let body: Value = one.json().await.unwrap();
    assert_eq!((body["version"].clone(), body["point"].clone()), (json!(1), json!(1.0)));

    let two: Value = get(&origin, "/v1/forecasts/aapl/1h/versions/2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((two["version"].clone(), two["point"].clone()), (json!(2), json!(2.0)));
}

#[tokio::test]
async fn an_instrument_lists_every_timeframe_it_has() {
    let origin = TestOrigin::embedded().await;
    for timeframe in ["1h", "1d", "1w"] {
        origin.put("AAPL", timeframe, &forecast(("lstm", "1"), 1.0)).await;
    }
    origin.put("MSFT", "1h", &forecast(("lstm", "1"), 1.0)).await;

    let response = get(&origin, "/v1/forecasts/aapl").await;
    assert_eq!(response.status(), 200);
    let keys = header_of(&response, "surrogate-key");
    assert!(keys.split(' ').any(|k| k == "AAPL"), "{keys}");
    assert!(!keys.contains("MSFT"), "{keys}");
    let body: Value = response.json().await.unwrap();
    let forecasts = body["forecasts"].as_array().unwrap();
    let timeframes: BTreeSet<&str> = forecasts.iter().map(|f| f["timeframe"].as_str().unwrap()).collect();
    assert_eq!(timeframes, BTreeSet::from(["1h", "1d", "1w"]));
    assert!(forecasts.iter().all(|f| f["instrument"] == "AAPL"));
    assert_eq!(body["missing"], json!([]));

    let empty = get(&origin, "/v1/forecasts/NVDA").await;
    assert_eq!(empty.status(), 200);
    assert!(header_of(&empty, "surrogate-key").split(' ').any(|k| k == "NVDA"));
    let body: Value = empty.json().await.unwrap();
    assert_eq!(body, json!({"forecasts": [], "missing": []}));
}

#[tokio::test]
async fn a_batch_read_answers_in_order_and_lists_the_missing() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    origin.put("MSFT", "1d", &forecast(("lstm", "1"), 2.0)).await;

    let response = get(&origin, "/v1/forecasts?keys=MSFT:1d,AAPL:1h,NVDA:1h,aapl:1h,MSFT:1d").await;
    assert_eq!(response.status(), 200);
    let tags = header_of(&response, "surrogate-key");
    for tag in ["AAPL:1h", "MSFT:1d", "NVDA:1h"] {
        assert!(tags.split(' ').any(|t| t == tag), "{tag} not in {tags}");
    }
    let body: Value = response.json().await.unwrap();
    let found: Vec<(String, String)> = body["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["instrument"].as_str().unwrap().into(),
                f["timeframe"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(found, [("MSFT".into(), "1d".into()), ("AAPL".into(), "1h".into())]);
    assert_eq!(body["missing"], json!(["NVDA:1h"]));

    // Copies of one key are answered once, and count against the limit as the document's maxItems does.
    let many = vec!["AAPL:1h"; 100].join(",");
    let response = get(&origin, &format!("/v1/forecasts?keys={many}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["forecasts"].as_array().unwrap().len(), 1);
    let too_many = vec!["AAPL:1h"; 101].join(",");
    let response = get(&origin, &format!("/v1/forecasts?keys={too_many}")).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_delete_keeps_the_history_and_the_numbering() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;
    let path = admin_path("AAPL", "1h");

    let deleted = origin.admin(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!({"deleted_version": 2}));

    let gone = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(header_of(&gone, "cache-control"), "no-store");
    expect_error(gone, 404, "not_found").await;
    let again = origin.admin(Method::DELETE, &path).send().await.unwrap();
    expect_error(again, 404, "not_found").await;

    let history = admin_get(&origin, &format!("{path}/versions")).await;
    assert_eq!(history["latest"], 2);
    assert_eq!(history["current"], Value::Null);
    let numbers: Vec<u64> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(get(&origin, "/v1/forecasts/AAPL/1h/versions/2").await.status(), 200);

    let next = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 3.0)).await;
    assert_eq!(next.status(), 200);
    assert_eq!(next.json::<Value>().await.unwrap()["version"], 3);
    let current: Value = get(&origin, "/v1/forecasts/AAPL/1h").await.json().await.unwrap();
    assert_eq!(
        (current["version"].clone(), current["point"].clone()),
        (json!(3), json!(3.0))
    );
}

#[tokio::test]
async fn the_history_lists_versions_newest_first() {
    let origin = TestOrigin::embedded().await;
    let mut etags = Vec::new();
    for model_version in ["1", "2"] {
        let response = write(&origin, "AAPL", "1h", &forecast(("lstm", model_version), 1.0)).await;
        etags.push(header_of(&response, "etag"));
    }

    let history = admin_get(&origin, "/admin/v1/forecasts/AAPL/1h/versions").await;
    assert_eq!(history["instrument"], "AAPL");
    assert_eq!(history["timeframe"], "1h");
    assert_eq!(history["latest"], 2);
    assert_eq!(history["current"], 2);
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["version"], 2);
    assert_eq!(versions[0]["model"], json!({"id": "lstm", "version": "2"}));
    assert_eq!(versions[0]["etag"], etags[1].as_str());
    assert_eq!(versions[0]["created_by"], "bootstrap");
    assert_eq!(versions[1]["version"], 1);
    assert_eq!(versions[1]["model"], json!({"id": "lstm", "version": "1"}));
    assert_eq!(versions[1]["etag"], etags[0].as_str());

    let never = origin
        .admin(Method::GET, "/admin/v1/forecasts/MSFT/1h/versions")
        .send()
        .await
        .unwrap();
    expect_error(never, 404, "not_found").await;
}

#[tokio::test]
async fn only_the_last_versions_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.storage.versions_kept = NonZeroUsize::new(3).unwrap();
    let origin = TestOrigin::start(config).await;
    for point in 1..=5 {
        origin
            .put("AAPL", "1h", &forecast(("lstm", "1"), f64::from(point)))
            .await;
    }

    for trimmed in [1, 2] {
        let response = get(&origin, &format!("/v1/forecasts/AAPL/1h/versions/{trimmed}")).await;
        expect_error(response, 410, "version_trimmed").await;
    }
    let beyond = get(&origin, "/v1/forecasts/AAPL/1h/versions/6").await;
    expect_error(beyond, 404, "version_not_found").await;
    for kept in 3..=5 {
        let response = get(&origin, &format!("/v1/forecasts/AAPL/1h/versions/{kept}")).await;
        assert_eq!(response.status(), 200, "version {kept}");
        assert_eq!(response.json::<Value>().await.unwrap()["point"], f64::from(kept));
    }
    let history = admin_get(&origin, "/admin/v1/forecasts/AAPL/1h/versions").await;
    assert_eq!(history["versions"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_rollback_makes_old_content_current_as_a_new_version() {
    let origin = TestOrigin::embedded().await;
    let first = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let first_etag = header_of(&first, "etag");
    origin.put("AAPL", "1h", &forecast(("lstm", "2"), 2.0)).await;

    let response = origin
        .admin(Method::POST, "/admin/v1/forecasts/AAPL/1h/rollback")
        .json(&json!({"to_version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = header_of(&response, "etag");
    assert_ne!(etag, first_etag);
    assert!(etag.starts_with("\"3-"), "{etag}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["version"], 3);
    assert_eq!(body["point"], 1.0);
    assert_eq!(body["model"]["version"], "1");
    assert_eq!(body["rollback_of"], 1);

    let current = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(header_of(&current, "etag"), etag);
    let current: Value = current.json().await.unwrap();
    assert_eq!(current["version"], 3);
    assert_eq!(current["point"], 1.0);
    assert_eq!(current["rollback_of"], 1);
}

#[tokio::test]
async fn if_match_guards_writes() {
    let origin = TestOrigin::embedded().await;
    let first = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let first_etag = header_of(&first, "etag");
    let guarded = |etag: &str, point: f64| {
        origin
            .admin(Method::PUT, &admin_path("AAPL", "1h"))
            .header(header::IF_MATCH, etag)
            .json(&forecast(("lstm", "1"), point))
            .send()
    };

    let second = guarded(&first_etag, 2.0).await.unwrap();
    assert_eq!(second.status(), 200);
    let second_etag = header_of(&second, "etag");

    let stale = guarded(&first_etag, 99.0).await.unwrap();
    expect_error(stale, 412, "precondition_failed").await;
    let current = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(header_of(&current, "etag"), second_etag);
    assert_eq!(current.json::<Value>().await.unwrap()["point"], 2.0);

    let never = origin
        .admin(Method::PUT, &admin_path("MSFT", "1h"))
        .header(header::IF_MATCH, "*")
        .json(&forecast(("lstm", "1"), 1.0))
        .send()
        .await
        .unwrap();
    expect_error(never, 412, "precondition_failed").await;
    assert_eq!(get(&origin, "/v1/forecasts/MSFT/1h").await.status(), 404);

    let any = guarded("*", 3.0).await.unwrap();
    assert_eq!(any.status(), 200);
    assert_eq!(any.json::<Value>().await.unwrap()["version"], 3);
}

/// RFC 9110 §13.1.1: If-Match compares whole entity tags (strong comparison), not just a part of them.
#[tokio::test]
async fn if_match_compares_the_whole_etag() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let other_key = write(&origin, "MSFT", "1h", &forecast(("lstm", "1"), 5.0)).await;
    let other_etag = header_of(&other_key, "etag");
    let current_etag = header_of(&get(&origin, "/v1/forecasts/AAPL/1h").await, "etag");
    assert_ne!(other_etag, current_etag);

    for foreign in ["\"1-0000000000000000\"", other_etag.as_str()] {
        let response = origin
            .admin(Method::PUT, &admin_path("AAPL", "1h"))
            .header(header::IF_MATCH, foreign)
            .json(&forecast(("lstm", "1"), 99.0))
            .send()
            .await
            .unwrap();
        expect_error(response, 412, "precondition_failed").await;
    }
    let current = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(header_of(&current, "etag"), current_etag);
}

#[tokio::test]
async fn a_model_rollback_returns_each_key_to_the_previous_model() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("m", "1"), 10.0)).await;
    origin.put("MSFT", "1h", &forecast(("m", "1"), 20.0)).await;
    origin.put("AAPL", "1h", &forecast(("m", "2"), 11.0)).await;
    origin.put("MSFT", "1h", &forecast(("m", "2"), 21.0)).await;
    origin.put("NVDA", "1h", &forecast(("m", "2"), 31.0)).await;

    let listed = admin_get(&origin, "/admin/v1/models/m/2/forecasts").await;
    let forecasts = listed["forecasts"].as_array().unwrap();
    let keys: BTreeSet<String> = forecasts
        .iter()
        .map(|f| {
            format!(
                "{}:{}",
                f["instrument"].as_str().unwrap(),
                f["timeframe"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["AAPL:1h".into(), "MSFT:1h".into(), "NVDA:1h".into()])
    );
    assert!(forecasts.iter().all(|f| f["current"] == true), "{listed}");

    let response = origin
        .admin(Method::POST, "/admin/v1/models/m/2/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");
    let result_of = |key: &str| {
        results
            .iter()
            .find(|r| r["key"] == key)
            .unwrap_or_else(|| panic!("{key}"))
    };
    for key in ["AAPL:1h", "MSFT:1h"] {
        let result = result_of(key);
        assert_eq!(result["outcome"], "rolled_back", "{result}");
        assert_eq!(result["from_version"], 2, "{result}");
        assert_eq!(result["to_version"], 1, "{result}");
        assert_eq!(result["new_version"], 3, "{result}");
    }
    assert_eq!(result_of("NVDA:1h")["outcome"], "no_previous_model");

    let current: Value = get(&origin, "/v1/forecasts/AAPL/1h").await.json().await.unwrap();
    assert_eq!(current["model"]["version"], "1");
    assert_eq!(current["point"], 10.0);
    assert_eq!(current["version"], 3);
    let nvda: Value = get(&origin, "/v1/forecasts/NVDA/1h").await.json().await.unwrap();
    assert_eq!(nvda["model"]["version"], "2");

    let listed = admin_get(&origin, "/admin/v1/models/m/2/forecasts").await;
    let current_of = |instrument: &str| {
        listed["forecasts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["instrument"] == instrument)
            .unwrap()["current"]
            .clone()
    };
    assert_eq!(current_of("AAPL"), false);
    assert_eq!(current_of("NVDA"), true);
}

#[tokio::test]
async fn the_audit_log_lists_admin_actions_newest_first() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("m", "1"), 1.0)).await;
    origin.put("AAPL", "1h", &forecast(("m", "2"), 2.0)).await;
    let rollback = origin
        .admin(Method::POST, "/admin/v1/forecasts/AAPL/1h/rollback")
        .json(&json!({"to_version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), 200);
    origin.put("AAPL", "1h", &forecast(("m", "2"), 3.0)).await;
    let model_rollback = origin
        .admin(Method::POST, "/admin/v1/models/m/2/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(model_rollback.status(), 200);
    let deleted = origin
        .admin(Method::DELETE, &admin_path("AAPL", "1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    let audit = admin_get(&origin, "/admin/v1/audit?limit=10").await;
    let entries = audit["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("forecast.delete", "AAPL:1h"),
            ("model.rollback", "m@2"),
            ("forecast.write", "AAPL:1h"),
            ("forecast.rollback", "AAPL:1h"),
            ("forecast.write", "AAPL:1h"),
            ("forecast.write", "AAPL:1h"),
        ]
    );
    assert!(entries.iter().all(|e| e["actor"] == "bootstrap"), "{audit}");
    assert_eq!(entries[5]["status"], 201);
    assert_eq!(entries[4]["status"], 200);

    let limited = admin_get(&origin, "/admin/v1/audit?limit=2").await;
    assert_eq!(limited["entries"].as_array().unwrap().len(), 2);
    assert_eq!(limited["entries"][0]["action"], "forecast.delete");
}

#[tokio::test]
async fn a_batch_write_reports_each_item_in_order() {
    let origin = TestOrigin::embedded().await;
    let request = json!({"writes": [
        {"instrument": "AAPL", "timeframe": "1h", "forecast": forecast(("lstm", "1"), 1.0)},
        {"instrument": "AA/PL", "timeframe": "1h", "forecast": forecast(("lstm", "1"), 2.0)},
        {"instrument": "msft", "timeframe": "1d", "forecast": forecast(("lstm", "1"), 3.0)},
    ]});
    let response = origin
        .admin(Method::POST, "/admin/v1/forecasts:batch")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{body}");

    let indexes: Vec<u64> = results.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[0]["key"], "AAPL:1h");
    assert_eq!(results[0]["version"], 1);
    assert!(results[0].get("error").is_none(), "{body}");
    let bad_status = results[1]["status"].as_u64().unwrap();
    assert!(bad_status == 400 || bad_status == 422, "{body}");
    assert!(!results[1]["error"]["code"].as_str().unwrap().is_empty(), "{body}");
    assert!(!results[1]["error"]["message"].as_str().unwrap().is_empty(), "{body}");
    assert!(results[1].get("version").is_none(), "{body}");
    assert_eq!(results[2]["status"], 201);
    assert_eq!(results[2]["key"], "MSFT:1d");

    let aapl = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(aapl.status(), 200);
    assert_eq!(header_of(&aapl, "etag"), results[0]["etag"].as_str().unwrap());
    let msft: Value = get(&origin, "/v1/forecasts/MSFT/1d").await.json().await.unwrap();
    assert_eq!(msft["point"], 3.0);
}

#[tokio::test]
async fn tokens_only_do_what_their_scopes_allow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.tokens = vec![token("writer", "writer-secret", &["forecasts:write"])];
    let origin = TestOrigin::start(config).await;

    let written = origin
        .client
        .put(origin.url(&admin_path("AAPL", "1h")))
        .bearer_auth("writer-secret")
        .json(&forecast(("lstm", "1"), 1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), 201);
    let audit = origin
        .client
        .get(origin.url("/admin/v1/audit"))
        .bearer_auth("writer-secret")
        .send()
        .await
        .unwrap();
    expect_error(audit, 403, "forbidden").await;

    // Reads are public by default.
    assert_eq!(get(&origin, "/v1/forecasts/AAPL/1h").await.status(), 200);
    let audit = admin_get(&origin, "/admin/v1/audit").await;
    assert_eq!(audit["entries"][0]["actor"], "writer");
}

#[tokio::test]
async fn private_reads_need_a_read_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.public_reads = false;
    config.auth.tokens = vec![
        token("reader", "reader-secret", &["forecasts:read"]),
        token("writer", "writer-secret", &["forecasts:write"]),
    ];
    let origin = TestOrigin::start(config).await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;

    for path in [
        "/v1/forecasts/AAPL/1h",
        "/v1/forecasts/AAPL",
        "/v1/forecasts?keys=AAPL:1h",
    ] {
        expect_error(get(&origin, path).await, 401, "unauthorized").await;
        let read = origin.get(path).bearer_auth("reader-secret").send().await.unwrap();
        assert_eq!(read.status(), 200, "{path}");
        let wrong_scope = origin.get(path).bearer_auth("writer-secret").send().await.unwrap();
        expect_error(wrong_scope, 403, "forbidden").await;
    }
}

#[tokio::test]
async fn a_generated_admin_token_is_kept_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = support::config(dir.path());
        config.auth.bootstrap_token = None;
        config.auth.tokens = Vec::new();
        config
    };
    let refused = |origin: &TestOrigin| {
        let audit = origin.url("/admin/v1/audit");
        let without = origin.client.get(&audit).send();
        let random = origin.client.get(&audit).bearer_auth("ft_not-the-generated-one").send();
        let bootstrap = origin.client.get(&audit).bearer_auth(support::ADMIN_TOKEN).send();
        async move {
            expect_error(without.await.unwrap(), 401, "unauthorized").await;
            expect_error(random.await.unwrap(), 401, "unauthorized").await;
            expect_error(bootstrap.await.unwrap(), 401, "unauthorized").await;
        }
    };

    let origin = TestOrigin::start(config()).await;
    refused(&origin).await;
    origin.stop().await;

    // The restart finds the stored hash and must start fine.
    let origin = TestOrigin::start(config()).await;
    refused(&origin).await;
    assert_eq!(get(&origin, "/readyz").await.status(), 200);
    let first_hash = stored_admin_hash(origin, dir.path()).await;
    assert!(first_hash.starts_with("sha256:"), "{first_hash}");

    let origin = TestOrigin::start(config()).await;
    refused(&origin).await;
    let second_hash = stored_admin_hash(origin, dir.path()).await;
    assert_eq!(
        first_hash, second_hash,
        "a restart must keep the generated token's hash"
    );
}

/// Stops `running` and reads the generated admin token's hash from its store, leaving it as it was.
async fn stored_admin_hash(running: TestOrigin, dir: &std::path::Path) -> String {
    running.stop().await;
    let mut config = OriginConfig::default();
    config.storage.data_dir = dir.to_path_buf();
    let store = origin::server::open_store(&config).unwrap();
    // A hash is stored by the first start, so this candidate is never kept.
    let unused = format_hash(&[0; 32]);
    let stored = store.admin_token_hash(&unused).await.unwrap();
    assert_ne!(stored, unused, "no admin token hash was stored");
    stored
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let origin = TestOrigin::embedded().await;
    assert_eq!(get(&origin, "/healthz").await.status(), 200);
    let ready = get(&origin, "/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["storage"], "embedded");

    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    assert_eq!(get(&origin, "/v1/forecasts/AAPL/1h").await.status(), 200);
    let metrics = get(&origin, "/metrics").await;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("origin_http_requests_total{")
                && line.contains("route=\"/v1/forecasts/{instrument}/{timeframe}\"")),
        "{metrics}"
    );
    assert!(metrics.contains("origin_l1_lookups_total"), "{metrics}");
    assert!(!metrics.contains("/v1/forecasts/AAPL"), "raw paths must not be labels");

    let openapi = get(&origin, "/openapi.json").await;
    assert_eq!(openapi.status(), 200);
    let document: Value = openapi.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().unwrap();
    for route in [
        "/v1/forecasts",
        "/v1/forecasts/{instrument}",
        "/v1/forecasts/{instrument}/{timeframe}",
        "/v1/forecasts/{instrument}/{timeframe}/versions/{version}",
        "/admin/v1/forecasts:batch",
        "/admin/v1/forecasts/{instrument}/{timeframe}",
        "/admin/v1/forecasts/{instrument}/{timeframe}/versions",
        "/admin/v1/forecasts/{instrument}/{timeframe}/rollback",
        "/admin/v1/models/{model_id}/{model_version}/forecasts",
        "/admin/v1/models/{model_id}/{model_version}/rollback",
        "/admin/v1/audit",
        "/admin/v1/invalidations",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    for route in ["/v1/forecasts", "/admin/v1/audit", "/admin/v1/invalidations"] {
        for parameter in paths[route]["get"]["parameters"].as_array().unwrap() {
            // A batch read needs its keys; everything else in these queries is optional.
            let required = parameter["name"] == "keys";
            assert_eq!(
                (parameter["in"].as_str(), parameter["required"].as_bool()),
                (Some("query"), Some(required)),
                "{route}: {parameter}"
            );
        }
    }
}

#[tokio::test]
async fn forecasts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start(support::config(dir.path())).await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let written = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;
    let etag = header_of(&written, "etag");
    origin.stop().await;

    let origin = TestOrigin::start(support::config(dir.path())).await;
    let current = get(&origin, "/v1/forecasts/AAPL/1h").await;
    assert_eq!(current.status(), 200);
    assert_eq!(header_of(&current, "etag"), etag);
    assert_eq!(current.json::<Value>().await.unwrap()["point"], 2.0);
    let history = admin_get(&origin, "/admin/v1/forecasts/AAPL/1h/versions").await;
    assert_eq!(history["latest"], 2);
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
    let next = write(&origin, "AAPL", "1h", &forecast(("lstm", "1"), 3.0)).await;
    assert_eq!(next.json::<Value>().await.unwrap()["version"], 3);
    let log = admin_get(&origin, "/admin/v1/invalidations").await;
    assert_eq!(
        log["invalidations"].as_array().unwrap().len(),
        3,
        "the invalidation log did not survive the restart: {log}"
    );
    assert_eq!(log["head"], 3, "the numbering did not continue after the restart");
}

#[tokio::test]
async fn without_the_l1_cache_the_api_behaves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.cache.enabled = false;
    let origin = TestOrigin::start(config).await;
    let path = "/v1/forecasts/AAPL/1h";

    expect_error(get(&origin, path).await, 404, "not_found").await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    let first = get(&origin, path).await;
    assert_eq!(first.status(), 200);
    let etag = header_of(&first, "etag");
    assert_eq!(
        origin
            .get(path)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap()
            .status(),
        304
    );
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;
    let second: Value = get(&origin, path).await.json().await.unwrap();
    assert_eq!(
        (second["version"].clone(), second["point"].clone()),
        (json!(2), json!(2.0))
    );

    let deleted = origin
        .admin(Method::DELETE, &admin_path("AAPL", "1h"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.json::<Value>().await.unwrap(), json!({"deleted_version": 2}));
    expect_error(get(&origin, path).await, 404, "not_found").await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 3.0)).await;
    let third: Value = get(&origin, path).await.json().await.unwrap();
    assert_eq!(third["version"], 3);
}

/// A listing that lost a member has changed, even though none of its remaining members is newer: its
/// Last-Modified must not let a client keep the old listing.
#[tokio::test]
async fn a_listing_is_not_reported_unmodified_after_a_delete() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 1.0)).await;
    origin.put("AAPL", "1d", &forecast(("lstm", "1"), 2.0)).await;
    let listing = get(&origin, "/v1/forecasts/AAPL").await;
    assert!(
        listing.headers().get("last-modified").is_none(),
        "a list has no date that proves it unchanged"
    );
    let etag = header_of(&listing, "etag");
    let newest = get(&origin, "/v1/forecasts/AAPL/1d").await;
    let last_modified = header_of(&newest, "last-modified");
    let body: Value = listing.json().await.unwrap();
    assert_eq!(body["forecasts"].as_array().unwrap().len(), 2);

    let deleted = origin
        .admin(Method::DELETE, &admin_path("AAPL", "1d"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);

    for (name, value) in [("if-modified-since", &last_modified), ("if-none-match", &etag)] {
        let revalidated = origin
            .get("/v1/forecasts/AAPL")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(
            revalidated.status(),
            200,
            "the listing changed but was answered 304 to {name}"
        );
    }
    let revalidated = get(&origin, "/v1/forecasts/AAPL").await;
    let body: Value = revalidated.json().await.unwrap();
    assert_eq!(body["forecasts"].as_array().unwrap().len(), 1);
}

/// The example of the issue, with every kind of selector.
const INVALIDATION_EXAMPLE: &str = r#"{"keys":["/v1/forecasts/AAPL/1h"],"prefixes":["/v1/forecasts/MSFT"],"tags":["AAPL"],"models":[{"id":"lstm","version":"3.2.0"}],"all":false,"soft":false}"#;

/// Posts an invalidation and expects it logged.
async fn invalidate(origin: &TestOrigin, body: &Value) -> Value {
    let response = origin
        .admin(Method::POST, "/admin/v1/invalidations")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "POST /admin/v1/invalidations {body}");
    response.json().await.unwrap()
}

/// The value of one sample in the Prometheus text, such as `name{label="x"}`.
async fn metric(origin: &TestOrigin, sample: &str) -> f64 {
    let text = get(origin, "/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
}

/// Waiting for edges, looking an invalidation up and warming refuse what they cannot use; with no edge
/// connected, a wait is over at once and complete.
#[tokio::test]
async fn waits_lookups_and_warming_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start(support::config(dir.path())).await;
    let tags = json!({"tags": ["AAPL"]});
    for (query, code) in [
        ("wait=soon", "invalid_wait"),
        ("wait=31s", "invalid_wait"),
        ("wait=1m", "invalid_wait"),
        ("wait=", "invalid_wait"),
        ("wait=1s&wait=2s", "invalid_query"),
    ] {
        let path = format!("/admin/v1/invalidations?{query}");
        let response = origin.admin(Method::POST, &path).json(&tags).send().await.unwrap();
        expect_error(response, 400, code).await;
    }
    let path = "/admin/v1/invalidations?wait=2s";
    let waited = origin.admin(Method::POST, path).json(&tags).send().await.unwrap();
    assert_eq!(waited.status(), 200);
    let waited: Value = waited.json().await.unwrap();
    assert_eq!(
        waited["propagation"],
        json!({"complete": true, "applied": [], "pending": []})
    );
    let shown = admin_get(&origin, "/admin/v1/invalidations/1").await;
    assert_eq!(
        (shown["id"].clone(), shown["tags"].clone()),
        (json!(1), json!(["AAPL"]))
    );
    for (path, status, code) in [
        ("/admin/v1/invalidations/0", 400, "invalid_id"),
        ("/admin/v1/invalidations/2", 404, "not_found"),
    ] {
        let response = origin.admin(Method::GET, path).send().await.unwrap();
        expect_error(response, status, code).await;
    }
    for body in [json!({}), json!({"keys": ["x"]}), json!({"prefixes": ["/a b"]})] {
        let response = origin
            .admin(Method::POST, "/admin/v1/warm")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(response, 422, "invalid_body").await;
    }
    origin.put("AAPL", "1h", &forecast(("m", "1"), 1.0)).await;
    let body = json!({"keys": ["/v1/forecasts/AAPL/1h", "/v1/forecasts/AAPL/1d"]});
    let warmed: Value = origin
        .admin(Method::POST, "/admin/v1/warm")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(warmed["edges"], 0);
    let statuses: Vec<(Value, Value)> = warmed["warmed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["status"].clone(), w["pushed"].clone()))
        .collect();
    assert_eq!(statuses, [(json!(200), json!(true)), (json!(404), json!(false))]);
}

#[tokio::test]
async fn invalidations_are_numbered_logged_and_listed() {
    let origin = TestOrigin::embedded().await;
    let first = origin
        .admin(Method::POST, "/admin/v1/invalidations")
        .header(header::CONTENT_TYPE, "application/json")
        .body(INVALIDATION_EXAMPLE)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"id": 1, "seq": 1, "selectors": 4})
    );
    let second = invalidate(&origin, &json!({"all": true, "tags": ["AAPL"], "soft": true})).await;
    assert_eq!(second, json!({"id": 2, "seq": 2, "selectors": 1}), "all stands alone");
    assert_eq!(invalidate(&origin, &json!({"tags": ["MSFT:1d"]})).await["seq"], 3);

    let log = admin_get(&origin, "/admin/v1/invalidations").await;
    assert_eq!((log["head"].clone(), log["trimmed"].clone()), (json!(3), json!(false)));
    let listed = log["invalidations"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    let mut example: Value = serde_json::from_str(INVALIDATION_EXAMPLE).unwrap();
    let issued_at = listed[0]["issued_at"].as_str().unwrap();
    time::OffsetDateTime::parse(issued_at, &time::format_description::well_known::Rfc3339).unwrap();
    example["sequence"] = json!(1);
    example["issued_at"] = json!(issued_at);
    assert_eq!(listed[0], example);
    assert_eq!(
        (
            listed[1]["all"].clone(),
            listed[1]["soft"].clone(),
            listed[1]["tags"].clone()
        ),
        (json!(true), json!(true), json!([]))
    );

    let page = admin_get(&origin, "/admin/v1/invalidations?after=1&limit=1").await;
    let page = page["invalidations"].as_array().unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["sequence"], 2);
    let caught_up = admin_get(&origin, "/admin/v1/invalidations?after=3").await;
    assert_eq!(caught_up, json!({"invalidations": [], "head": 3, "trimmed": false}));

    let audit = admin_get(&origin, "/admin/v1/audit?limit=1").await;
    assert_eq!(audit["entries"][0]["action"], "invalidation.create");
    assert_eq!(audit["entries"][0]["status"], 202);
    assert_eq!(
        metric(&origin, "origin_invalidations_appended_total{cause=\"api\"}").await,
        3.0
    );
    assert_eq!(metric(&origin, "origin_invalidation_log_head").await, 3.0);
}

/// The tag of each logged invalidation after `after`, oldest first; each must be one hard tag purge.
async fn logged_tags(origin: &TestOrigin, after: u64) -> Vec<String> {
    let log = admin_get(origin, &format!("/admin/v1/invalidations?after={after}")).await;
    log["invalidations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|logged| {
            assert_eq!(logged["soft"], false, "{logged}");
            let tags = logged["tags"].as_array().unwrap();
            assert_eq!(tags.len(), 1, "{logged}");
            assert_eq!(
                (logged["keys"].clone(), logged["all"].clone()),
                (json!([]), json!(false))
            );
            tags[0].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_change_of_a_forecast_invalidates_its_tag() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1h", &forecast(("m", "1"), 1.0)).await;
    origin.put("AAPL", "1h", &forecast(("m", "1"), 2.0)).await;
    assert_eq!(logged_tags(&origin, 0).await, ["AAPL:1h", "AAPL:1h"]);

    let item =
        |instrument: &str| json!({"instrument": instrument, "timeframe": "1d", "forecast": forecast(("m", "1"), 3.0)});
    let batch = origin
        .admin(Method::POST, "/admin/v1/forecasts:batch")
        .json(&json!({"writes": [item("MSFT"), item("AAPL"), {"instrument": "BAD!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 200);
    let batched: BTreeSet<String> = logged_tags(&origin, 2).await.into_iter().collect();
    assert_eq!(batched, BTreeSet::from(["AAPL:1d".into(), "MSFT:1d".into()]));

    let rollback = origin
        .admin(Method::POST, &format!("{}/rollback", admin_path("AAPL", "1h")))
        .json(&json!({"to_version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), 200);
    origin.put("NVDA", "1h", &forecast(("m", "1"), 4.0)).await;
    origin.put("NVDA", "1h", &forecast(("m", "2"), 5.0)).await;
    let model_rollback = origin
        .admin(Method::POST, "/admin/v1/models/m/2/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(model_rollback.status(), 200);
    let delete = || origin.admin(Method::DELETE, &admin_path("AAPL", "1h")).send();
    assert_eq!(delete().await.unwrap().status(), 200);
    assert_eq!(
        logged_tags(&origin, 4).await,
        ["AAPL:1h", "NVDA:1h", "NVDA:1h", "NVDA:1h", "AAPL:1h"]
    );

    // What changes nothing invalidates nothing.
    expect_error(delete().await.unwrap(), 404, "not_found").await;
    let refused = origin
        .admin(Method::PUT, &admin_path("NVDA", "1h"))
        .header(header::IF_MATCH, "\"1-0000000000000000\"")
        .json(&forecast(("m", "1"), 6.0))
        .send()
        .await
        .unwrap();
    expect_error(refused, 412, "precondition_failed").await;
    let unchanged = origin
        .admin(Method::POST, "/admin/v1/models/m/2/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 200);
    assert_eq!(admin_get(&origin, "/admin/v1/invalidations?after=9").await["head"], 9);

    for (cause, count) in [
        ("write", 6.0),
        ("delete", 1.0),
        ("rollback", 1.0),
        ("model_rollback", 1.0),
        ("api", 0.0),
    ] {
        let sample = format!("origin_invalidations_appended_total{{cause=\"{cause}\"}}");
        assert_eq!(metric(&origin, &sample).await, count, "{cause}");
    }
    assert_eq!(metric(&origin, "origin_invalidation_log_head").await, 9.0);
}

#[tokio::test]
async fn every_response_that_includes_a_forecast_carries_its_tag() {
    let origin = TestOrigin::embedded().await;
    origin.put("AAPL", "1d", &forecast(("lstm", "1"), 1.0)).await;
    let tags_of = |path: &'static str| {
        let request = origin.get(path).send();
        async move {
            let response = request.await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            header_of(&response, "surrogate-key")
                .split(' ')
                .map(str::to_owned)
                .collect::<BTreeSet<String>>()
        }
    };
    // Before AAPL:1h exists: the lists that would include it already answer for it.
    for path in ["/v1/forecasts/AAPL", "/v1/forecasts?keys=AAPL:1h,AAPL:1d"] {
        assert!(tags_of(path).await.contains("AAPL:1h"), "{path}");
    }
    origin.put("AAPL", "1h", &forecast(("lstm", "1"), 2.0)).await;
    for path in [
        "/v1/forecasts/AAPL/1h",
        "/v1/forecasts/AAPL/1h/versions/1",
        "/v1/forecasts/AAPL",
        "/v1/forecasts?keys=AAPL:1h",
        "/v1/forecasts?keys=MSFT:1h,AAPL:1h",
    ] {
        assert!(tags_of(path).await.contains("AAPL:1h"), "{path}");
    }
    assert!(!tags_of("/v1/forecasts?keys=AAPL:1d").await.contains("AAPL:1h"));
}

#[tokio::test]
async fn a_trimmed_part_of_the_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.invalidation.retention_entries = NonZeroUsize::new(2).unwrap();
    let origin = TestOrigin::start(config).await;
    for i in 1..=4 {
        assert_eq!(invalidate(&origin, &json!({"tags": [format!("T{i}")]})).await["seq"], i);
    }
    let sequences = |log: &Value| {
        log["invalidations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|logged| logged["sequence"].as_u64().unwrap())
            .collect::<Vec<u64>>()
    };
    for (query, trimmed) in [("?after=0", true), ("?after=1", true), ("?after=2", false), ("", false)] {
        let log = admin_get(&origin, &format!("/admin/v1/invalidations{query}")).await;
        assert_eq!(sequences(&log), [3, 4], "{query}");
        assert_eq!(
            (log["head"].clone(), log["trimmed"].clone()),
            (json!(4), json!(trimmed)),
            "{query}"
        );
    }
}

#[tokio::test]
async fn invalidation_tokens_only_do_what_their_scopes_allow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path());
    config.auth.tokens = vec![
        token("purger", "purger-secret", &["invalidations:write"]),
        token("watcher", "watcher-secret", &["invalidations:read"]),
    ];
    let origin = TestOrigin::start(config).await;
    let post = |secret: &str| {
        origin
            .client
            .post(origin.url("/admin/v1/invalidations"))
            .bearer_auth(secret)
            .json(&json!({"tags": ["AAPL"]}))
            .send()
    };
    let list = |secret: &str| {
        origin
            .client
            .get(origin.url("/admin/v1/invalidations"))
            .bearer_auth(secret)
            .send()
    };
    assert_eq!(post("purger-secret").await.unwrap().status(), 202);
    expect_error(list("purger-secret").await.unwrap(), 403, "forbidden").await;
    expect_error(post("watcher-secret").await.unwrap(), 403, "forbidden").await;
    let listed: Value = list("watcher-secret").await.unwrap().json().await.unwrap();
    assert_eq!(listed["head"], 1);
    let audit = admin_get(&origin, "/admin/v1/audit").await;
    let changes: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] != "auth.refused")
        .collect();
    assert_eq!(changes[0]["actor"], "purger");
}

/// Two origins share one Redis: a write through one reaches the other's L1 cache through the
/// invalidation log within moments, not after the L1 TTL (a minute here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_another_origin_drops_the_forecast_from_this_origins_l1() {
    let redis = loadtest::launch::RedisServer::start().unwrap();
    let start = |dir: &std::path::Path| {
        let mut config = support::config(dir);
        config.storage.redis_url = Some(redis.url());
        config.cache.ttl = std::time::Duration::from_secs(60);
        TestOrigin::start(config)
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = start(dir_a.path()).await;
    let reader = start(dir_b.path()).await;
    writer.put("SHRD", "1h", &forecast(("m", "1"), 1.0)).await;
    let etag_of = async |origin: &TestOrigin| {
        let read = origin.get("/v1/forecasts/SHRD/1h").send().await.unwrap();
        assert_eq!(read.status(), 200);
        read.headers()["etag"].to_str().unwrap().to_owned()
    };
    let first = etag_of(&reader).await;
    assert_eq!(etag_of(&reader).await, first, "served from the reader's L1");

    let written = writer.put("SHRD", "1h", &forecast(("m", "1"), 2.0)).await;
    assert_eq!(written["version"], 2);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let etag = etag_of(&reader).await;
        if etag != first {
            assert!(etag.starts_with("\"2-"), "{etag}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reader kept serving version 1"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
