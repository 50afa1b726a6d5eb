//! Service contracts: request bodies checked before they reach the upstream, responses
//! reported or enforced, the size limit, other media types untouched, the mesh API's call
//! checked the same way, and schema files reloaded (an invalid one refused).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::harness::{Proxy, backends, call_json, client, eventually, json, send, text};

const ORDER_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["sku", "qty"],
  "properties": { "sku": { "type": "string" }, "qty": { "type": "integer", "minimum": 1 } }
}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
    path
}

async fn post(proxy: &Proxy, path: &str, content_type: &str, body: &str) -> (u16, String) {
    let req = Request::post(proxy.url(path))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = send(req).await;
    let status = resp.status().as_u16();
    (status, text(resp).await)
}

#[tokio::test]
async fn request_bodies_that_break_the_contract_get_400_and_never_reach_the_upstream() {
    let dir = tempfile::tempdir().expect("dir");
    let schema = write(dir.path(), "order.json", ORDER_SCHEMA);
    let b = backends(1).await;
    let config = format!(
        r#"
[[routes]]
name = "orders"
service = "orders"

[[services]]
name = "orders"
endpoints = [{{ address = "{}" }}]
[[services.contracts]]
methods = ["POST"]
path = "/upload/{{kind}}"
request_schema = "{}"
max_body_bytes = 64
"#,
        b[0].addr,
        schema.display()
    );
    let proxy = Proxy::start(&config).await;

    let valid = r#"{"sku":"a-1","qty":2}"#;
    assert_eq!(post(&proxy, "/upload/new", "application/json", valid).await, (200, valid.len().to_string()));
    let hits = b[0].hits();

    let (status, body) = post(&proxy, "/upload/new", "application/json; charset=utf-8", r#"{"qty":0}"#).await;
    assert_eq!(status, 400, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("a JSON error");
    let found: Vec<(String, String)> = answer["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            (v["instance_path"].as_str().unwrap_or("?").to_owned(), v["keyword"].as_str().unwrap_or("?").to_owned())
        })
        .collect();
    assert!(found.contains(&("".into(), "required".into())), "{answer}");
    assert!(found.contains(&("/qty".into(), "minimum".into())), "{answer}");
    assert!(answer["violations"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    assert!(answer["schema"].as_str().is_some_and(|s| s.ends_with("order.json")), "{answer}");

    let (status, body) = post(&proxy, "/upload/new", "application/json", "{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains(r#""keyword":"json""#), "{body}");

    let big = format!(r#"{{"sku":"{}","qty":1}}"#, "x".repeat(100));
    assert_eq!(post(&proxy, "/upload/new", "application/json", &big).await.0, 413, "over max_body_bytes");
    assert_eq!(b[0].hits(), hits, "no rejected request reached the upstream");

    // Not covered: another media type, another method, another path.
    assert_eq!(post(&proxy, "/upload/new", "text/plain", "{\"qty\":0}").await.0, 200, "text passes untouched");
    assert_eq!(post(&proxy, "/upload", "application/json", "{\"qty\":0}").await.0, 200, "path not covered");
    let put = Request::put(proxy.url("/upload/new"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"[]")))
        .expect("request");
    assert_eq!(send(put).await.status(), 200, "method not covered");

    // The mesh API's call is checked the same way.
    let call = json!({
        "service_name": "orders", "method": "POST", "path": "/upload/x",
        "headers": { "content-type": "application/json" }, "body": "{\"sku\":5}",
    });
    let (status, answer) = call_json("POST", &proxy.admin_url("/api/v1/mesh/v2/call"), Some(&call), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], 400, "{answer}");
    assert!(answer["body"].as_str().is_some_and(|b| b.contains("/sku")), "{answer}");

    // Listed by the admin API; counted.
    let (_, services) = call_json("GET", &proxy.admin_url("/api/v1/mesh/v2/services"), None, None).await;
    let contract = &services["services"][0]["contracts"][0];
    assert_eq!(contract["path"], "/upload/{kind}", "{services}");
    assert!(contract["request_schema"].as_str().is_some_and(|s| s.ends_with("order.json")), "{services}");
    let rejected = proxy
        .metric("wasmesh_contract_violations_total{service=\"orders\",direction=\"request\",action=\"rejected\"}")
        .await;
    assert_eq!(rejected, Some(4.0), "400, 400, 413 and the call");
}

#[tokio::test]
async fn a_response_that_breaks_the_contract_is_reported_or_replaced_by_a_502() {
    let dir = tempfile::tempdir().expect("dir");
    let schema = write(
        dir.path(),
        "echo.json",
        r#"{ "type": "object", "required": ["backend", "order_id"], "properties": { "order_id": { "type": "integer" } } }"#,
    );
    let b = backends(1).await;
    let contract = |mode: &str| {
        format!(
            "contracts = [{{ path = \"/echo/*\", response_schema = \"{}\", response_mode = \"{mode}\" }}]",
            schema.display()
        )
    };
    let config = format!(
        r#"
[[routes]]
name = "strict"
service = "strict"
match = {{ path_prefix = "/strict" }}
rewrite = {{ prefix = "/" }}
[[routes]]
name = "lenient"
service = "lenient"

[[services]]
name = "strict"
endpoints = [{{ address = "{addr}" }}]
{enforce}
[[services]]
name = "lenient"
endpoints = [{{ address = "{addr}" }}]
{report}
"#,
        addr = b[0].addr,
        enforce = contract("enforce"),
        report = contract("report"),
    );
    let proxy = Proxy::start(&config).await;

    let resp = client().get(proxy.url("/strict/echo/1").parse().expect("url")).await.expect("strict");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-wasmesh-error"], "contract_violation");
    let answer = json(resp).await;
    assert_eq!(answer["violations"][0]["keyword"], "required", "{answer}");
    assert!(answer["violations"][0]["message"].as_str().is_some_and(|m| m.contains("order_id")), "{answer}");

    let resp = client().get(proxy.url("/echo/1").parse().expect("url")).await.expect("lenient");
    assert_eq!(resp.status(), 200, "report mode passes the response");
    assert_eq!(json(resp).await["backend"], "b0", "the upstream's own body, whole");
    // Responses not covered (other status, other path) pass untouched.
    let resp = client().get(proxy.url("/strict/status/404").parse().expect("url")).await.expect("404");
    assert_eq!(resp.status(), 404);

    assert!(proxy.log().contains("response breaks the service's contract"), "{}", proxy.log());
    let metric = |service: &str, action: &str| {
        format!("wasmesh_contract_violations_total{{service=\"{service}\",direction=\"response\",action=\"{action}\"}}")
    };
    assert_eq!(proxy.metric(&metric("strict", "rejected")).await, Some(1.0));
    assert_eq!(proxy.metric(&metric("lenient", "reported")).await, Some(1.0));
}

#[tokio::test]
async fn schema_files_reload_and_an_invalid_one_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let schema = write(dir.path(), "order.json", ORDER_SCHEMA);
    let b = backends(1).await;
    let config = format!(
        "[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\ncontracts = [{{ path = \"/upload\", request_schema = \"{}\" }}]\n",
        b[0].addr,
        schema.display()
    );
    let proxy = Proxy::start(&config).await;
    let no_qty = r#"{"sku":"a"}"#;
    assert_eq!(post(&proxy, "/upload", "application/json", no_qty).await.0, 400);

    // qty becomes optional: the same body passes once the file is reloaded.
    write(dir.path(), "order.json", &ORDER_SCHEMA.replace(r#"["sku", "qty"]"#, r#"["sku"]"#));
    eventually(Duration::from_secs(10), "the changed schema applies", || async {
        (post(&proxy, "/upload", "application/json", no_qty).await.0 == 200).then_some(())
    })
    .await;

    // A schema that is not a JSON Schema is refused; the one in force stays.
    write(dir.path(), "order.json", r#"{ "type": "no-such-type" }"#);
    let error = eventually(Duration::from_secs(10), "the reload is refused", || async {
        let status = json(client().get(proxy.admin_url("/config").parse().ok()?).await.ok()?).await;
        status["last_error"]["message"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("order.json") && error.contains("not a valid JSON Schema"), "{error}");
    assert!(error.contains("service `s`"), "{error}");
    assert_eq!(post(&proxy, "/upload", "application/json", no_qty).await.0, 200, "the previous schema still serves");
    assert_eq!(post(&proxy, "/upload", "application/json", r#"{"qty":1}"#).await.0, 400);
}
