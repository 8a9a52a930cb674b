//! The gateway over real HTTP, in front of a three-node cluster: routes to a group, a named
//! actor and an entity; every error mapping; authentication; limits; trace context; drain.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actormesh::{GroupConfig, Saturation};
use actormesh_gateway::{ApiError, Auth, Gateway, GatewayBuilder, RateLimit, Route};
use common::*;
use http::{Method, StatusCode};
use serde::Deserialize;

#[derive(Deserialize)]
struct AddBody {
    amount: u64,
}

#[derive(Deserialize)]
struct EntryBody {
    entry: String,
}

/// The routes of these tests.
fn routes(builder: GatewayBuilder) -> GatewayBuilder {
    builder
        .route(greet_route("/hello/{name}", "greeters"))
        .route(
            Route::get("/slow/{ms}")
                .group::<Greeter>("greeters")
                .ask_idempotent(|call| {
                    Ok(Slow {
                        ms: call.param("ms")?,
                    })
                }),
        )
        .route(
            Route::get("/busy/{ms}")
                .group_with::<Greeter>(
                    "greeters",
                    GroupConfig::new()
                        .max_in_flight(1)
                        .saturation(Saturation::Fail),
                )
                .ask_idempotent(|call| {
                    Ok(Slow {
                        ms: call.param("ms")?,
                    })
                }),
        )
        .route(
            Route::post("/boom")
                .group::<Greeter>("greeters")
                .ask(|_| Ok(Boom)),
        )
        .route(
            Route::post("/route-panics")
                .group::<Greeter>("greeters")
                .ask(|_| -> Result<Boom, ApiError> { panic!("secret route detail 4712") }),
        )
        .route(greet_route("/nobody/{name}", "nobody-joined-this"))
        .route(
            Route::post("/ledger")
                .actor::<Ledger>("ledger")
                .body::<EntryBody>()
                .tell(|call| {
                    Ok(Append {
                        entry: call.body.entry,
                    })
                }),
        )
        .route(
            Route::get("/ledger")
                .actor::<Ledger>("ledger")
                .ask_idempotent(|_| Ok(Entries)),
        )
        .route(
            Route::post("/tallies/{id}/add")
                .entity::<Tally>("id")
                .body::<AddBody>()
                .ask(|call| {
                    if call.body.amount == 0 {
                        return Err(ApiError::bad_request("amount", "must be positive"));
                    }
                    Ok(Add {
                        amount: call.body.amount,
                    })
                }),
        )
        .route(read_tally_route("/tallies/{id}"))
}

async fn serve(builder: GatewayBuilder) -> (actormesh_gateway::RunningGateway, Http) {
    let gateway = builder.build().unwrap();
    let running = gateway.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = Http::new(running.local_addr());
    (running, http)
}

#[actix::test]
async fn routes_reach_a_group_a_named_actor_and_entities() {
    let cluster = Cluster::start().await;
    let (gw, http) = serve(routes(Gateway::builder(cluster.a.clone()))).await;

    // A group: round robin over both instances.
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let answer = http.get("/hello/ada").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["text"], "hello, ada");
        assert_eq!(answer.header("content-type"), "application/json");
        assert_eq!(answer.header("x-trace-id").len(), 32);
        nodes.insert(answer.body["node"].as_str().unwrap().to_owned());
    }
    assert_eq!(nodes.len(), 2, "both instances answered: {nodes:?}");

    // A named actor: a tell is 202, and what it did is visible to the next ask.
    let answer = http.post("/ledger", r#"{"entry": "first"}"#).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text);
    assert_eq!(answer.body["accepted"], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = http.get("/ledger").await;
        assert_eq!(answer.status, StatusCode::OK);
        if answer.body == serde_json::json!(["first"]) {
            break;
        }
        assert!(Instant::now() < deadline, "the told entry never showed");
    }

    // Entities: the path parameter is the key; each key keeps its own total.
    for (key, amount) in [("k1", 5), ("k2", 7), ("k1", 10)] {
        let answer = http
            .post(
                &format!("/tallies/{key}/add"),
                &format!(r#"{{"amount": {amount}}}"#),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    let k1 = http.get("/tallies/k1").await;
    assert_eq!(k1.body["total"], 15);
    let k2 = http.get("/tallies/k2").await;
    assert_eq!(k2.body["total"], 7);
    // A route's own refusal.
    let refused = http.post("/tallies/k1/add", r#"{"amount": 0}"#).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.field(), "amount");

    gw.shutdown(Duration::from_secs(5)).await;
    cluster.stop().await;
}

#[actix::test]
async fn failures_map_to_the_statuses_http_clients_expect() {
    let cluster = Cluster::start().await;
    let (gw, http) = serve(routes(Gateway::builder(cluster.a.clone()))).await;

    // Malformed JSON names the field; a bad path parameter names the parameter.
    let answer = http.post("/tallies/k/add", r#"{"amount": "many"}"#).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_eq!(answer.error_code(), "bad_request");
    assert_eq!(answer.field(), "amount");
    let answer = http.post("/tallies/k/add", r#"{"amount": 1"#).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let answer = http.post("/tallies/k/add", "").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("required"));
    let answer = http.get("/slow/soon").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.field(), "ms");
    let answer = http
        .send(
            Method::GET,
            "/hello/x",
            &[("x-request-timeout", "whenever")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.field(), "x-request-timeout");
    let answer = http
        .send(
            Method::POST,
            "/tallies/k/add",
            &[("content-type", "text/plain")],
            "amount=1",
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Unknown route, wrong method.
    let answer = http.get("/no/such/route").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
    assert_eq!(answer.body["trace_id"].as_str().unwrap().len(), 32);
    let answer = http.send(Method::DELETE, "/ledger", &[], "").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);

    // No instance: 503 with Retry-After.
    let answer = http.get("/nobody/x").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert_eq!(answer.header("retry-after"), "1");

    // Overloaded: every instance at its cap (1 each, failing at once).
    let slow = |http: Http| async move { http.get("/busy/600").await };
    let (first, second) = (
        tokio::spawn(slow(http.clone())),
        tokio::spawn(slow(http.clone())),
    );
    wait_for_slow(600, 2).await;
    let overloaded = http.get("/busy/1").await;
    assert_eq!(
        overloaded.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        overloaded.text
    );
    assert_eq!(overloaded.error_code(), "overloaded");
    assert_eq!(overloaded.header("retry-after"), "1");
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(second.await.unwrap().status, StatusCode::OK);

    // Deadline: the client's X-Request-Timeout becomes the ask's deadline.
    let started = Instant::now();
    let answer = http
        .send(
            Method::GET,
            "/slow/3000",
            &[("x-request-timeout", "200ms")],
            "",
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.text
    );
    assert_eq!(answer.error_code(), "deadline_exceeded");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered at the deadline, not after the handler: {:?}",
        started.elapsed()
    );

    // A handler panic, and a panic in the route's own closure: 500 without internals.
    for path in ["/boom", "/route-panics"] {
        let answer = http.post(path, "").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(answer.error_code(), "internal", "{path}: {}", answer.text);
        assert!(!answer.text.contains("4711") && !answer.text.contains("4712"));
    }
    // The gateway still serves after both.
    assert_eq!(http.get("/hello/again").await.status, StatusCode::OK);

    gw.shutdown(Duration::from_secs(5)).await;
    cluster.stop().await;
}

#[actix::test]
async fn a_named_actor_whose_node_left_is_503_not_a_hang() {
    let cluster = Cluster::start().await;
    let (gw, http) = serve(routes(Gateway::builder(cluster.a.clone()))).await;
    assert_eq!(http.get("/ledger").await.status, StatusCode::OK);
    // The ledger's node leaves: the cached reference leads nowhere, the name is gone.
    cluster.b.shutdown().await;
    let started = Instant::now();
    let answer = http
        .send(Method::GET, "/ledger", &[("x-request-timeout", "1s")], "")
        .await;
    assert!(
        answer.status == StatusCode::SERVICE_UNAVAILABLE
            || answer.status == StatusCode::GATEWAY_TIMEOUT,
        "{} {}",
        answer.status,
        answer.text
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The group route fails over to the remaining instance.
    let answer = http.get("/hello/after").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body["node"], "gw-c");
    gw.shutdown(Duration::from_secs(5)).await;
    cluster.a.shutdown().await;
    cluster.c.shutdown().await;
}

// ---- authentication -------------------------------------------------------------------------

const SECRET: &[u8] = b"test secret for HS256 tokens";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// An RSA key pair made by the `openssl` command (ring signs RSA but does not make keys).
fn rsa_pair() -> (Vec<u8>, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("gw-rsa-{}-{}", std::process::id(), next()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("running `openssl` failed ({e}): install it (Debian: apt-get install openssl; ./scripts/ensure-deps.sh does)")
            });
        assert!(status.success(), "openssl {args:?} failed");
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        private.to_str().unwrap(),
    ]);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let pair = (
        std::fs::read(&private).unwrap(),
        std::fs::read(&public).unwrap(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

#[actix::test]
async fn bearer_tokens_and_api_keys_401_versus_403() {
    let cluster = Cluster::start().await;
    let (rsa_private, rsa_public) = rsa_pair();
    let auth = Auth::new()
        .jwt_hs256(SECRET)
        .jwt_rs256_pem(&rsa_public)
        .unwrap()
        .audience("tallies-api")
        .api_key("key-with-write", "batch-job", ["tallies:write"])
        .api_key("key-read-only", "dashboard", []);
    let builder = Gateway::builder(cluster.a.clone())
        .auth(auth)
        .route(
            Route::post("/tallies/{id}/add")
                .entity::<Tally>("id")
                .body::<AddBody>()
                .ask(|call| {
                    Ok(Add {
                        amount: call.body.amount,
                    })
                })
                .scopes(["tallies:write"]),
        )
        .route(greet_route("/hello/{name}", "greeters").public());
    let (gw, http) = serve(builder).await;
    let add = |headers: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            http.send(Method::POST, "/tallies/t/add", &all, r#"{"amount": 1}"#)
                .await
        }
    };
    let bearer = |token: String| vec![("authorization", format!("Bearer {token}"))];
    let good = serde_json::json!({
        "sub": "alice", "aud": "tallies-api", "exp": now() + 300, "scope": "tallies:write other"
    });

    // Missing credentials: 401 with a challenge.
    let answer = add(vec![]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert!(answer.header("www-authenticate").starts_with("Bearer"));
    // A public route needs none.
    assert_eq!(http.get("/hello/x").await.status, StatusCode::OK);

    // Valid HS256 and RS256 tokens.
    let answer = add(bearer(hs256(good.clone(), SECRET))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &good,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    )
    .unwrap();
    let answer = add(bearer(rs256.clone())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    // Bad signature (HS256 with another secret; RS256 with a byte of the signature changed).
    let answer = add(bearer(hs256(good.clone(), b"another secret"))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("signature"));
    let mut tampered = rs256.into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let answer = add(bearer(String::from_utf8(tampered).unwrap())).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // Expired; wrong audience; no exp at all; not a JWT.
    let mut expired = good.clone();
    expired["exp"] = serde_json::json!(now() - 60);
    let answer = add(bearer(hs256(expired, SECRET))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body["message"].as_str().unwrap().contains("expired"));
    let mut elsewhere = good.clone();
    elsewhere["aud"] = serde_json::json!("billing-api");
    let answer = add(bearer(hs256(elsewhere, SECRET))).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.body["message"]
        .as_str()
        .unwrap()
        .contains("audience"));
    let answer = add(bearer(hs256(
        serde_json::json!({"sub": "x", "aud": "tallies-api"}),
        SECRET,
    )))
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = add(bearer("not.a.jwt".to_owned())).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let answer = add(vec![("authorization", "Basic YWxpY2U6cHc=".to_owned())]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    // Authenticated without the scope: 403, not 401.
    let mut reader = good.clone();
    reader["scope"] = serde_json::json!("tallies:read");
    let answer = add(bearer(hs256(reader, SECRET))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    assert!(answer
        .header("www-authenticate")
        .contains("insufficient_scope"));

    // API keys: one with the scope, one without, one unknown.
    let answer = add(vec![("x-api-key", "key-with-write".to_owned())]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = add(vec![("x-api-key", "key-read-only".to_owned())]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let answer = add(vec![("x-api-key", "key-made-up".to_owned())]).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    gw.shutdown(Duration::from_secs(5)).await;
    cluster.stop().await;
}

// ---- limits ---------------------------------------------------------------------------------

#[actix::test]
async fn rate_limits_per_client_and_route_body_limit_and_shedding() {
    let cluster = Cluster::start().await;
    let builder = routes(Gateway::builder(cluster.a.clone()))
        .auth(
            Auth::new()
                .api_key("one", "client-one", [])
                .api_key("two", "client-two", []),
        )
        .rate_limit(RateLimit::per_minute(3))
        .max_body_bytes(64)
        .max_in_flight(2);
    // `routes` made every route require credentials now that auth is configured.
    let (gw, http) = serve(builder).await;
    let as_client = |key: &'static str, path: &'static str| {
        let http = http.clone();
        async move {
            http.send(Method::GET, path, &[("x-api-key", key)], "")
                .await
        }
    };
    for _ in 0..3 {
        assert_eq!(as_client("one", "/hello/x").await.status, StatusCode::OK);
    }
    let limited = as_client("one", "/hello/x").await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text
    );
    let wait: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&wait), "retry after {wait} s");
    // Another client, and the same client on another route, have their own budgets.
    assert_eq!(as_client("two", "/hello/x").await.status, StatusCode::OK);
    assert_eq!(as_client("one", "/tallies/z").await.status, StatusCode::OK);

    // Body limit: refused before the target sees it.
    let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(200));
    let answer = http
        .send(
            Method::POST,
            "/tallies/big/add",
            &[("x-api-key", "two"), ("content-type", "application/json")],
            &big,
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text
    );

    // Shedding: two requests in flight fill the gateway; a third is refused at once.
    let slow = |http: Http| async move {
        http.send(Method::GET, "/slow/800", &[("x-api-key", "two")], "")
            .await
    };
    let held = [
        tokio::spawn(slow(http.clone())),
        tokio::spawn(slow(http.clone())),
    ];
    wait_for_slow(800, 2).await;
    assert_eq!(gw.in_flight(), 2);
    let shed = as_client("one", "/tallies/shed").await;
    assert_eq!(
        shed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        shed.text
    );
    assert_eq!(shed.error_code(), "overloaded");
    assert_eq!(shed.header("retry-after"), "1");
    for h in held {
        assert_eq!(h.await.unwrap().status, StatusCode::OK);
    }
    gw.shutdown(Duration::from_secs(5)).await;
    cluster.stop().await;
}

// ---- graceful shutdown ------------------------------------------------------------------------

#[actix::test]
async fn shutdown_finishes_requests_in_flight_and_refuses_new_ones() {
    let cluster = Cluster::start().await;
    let (gw, http) = serve(routes(Gateway::builder(cluster.a.clone()))).await;
    let addr = gw.local_addr();
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let http = http.clone();
            tokio::spawn(async move { http.get("/slow/400").await })
        })
        .collect();
    wait_for_slow(400, 6).await;
    let report = gw.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.in_flight_at_start, 6);
    assert_eq!(report.cut_off, 0);
    for request in in_flight {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    }
    // The listener is closed: new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // A request longer than the drain deadline is cut off, and counted.
    let (gw, http) = serve(routes(Gateway::builder(cluster.a.clone()))).await;
    let long = tokio::spawn(async move { http.get("/slow/3100").await });
    wait_for_slow(3100, 1).await;
    let started = Instant::now();
    let report = gw.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(report.cut_off, 1);
    let cut = long.await.unwrap();
    assert_eq!(cut.status, StatusCode::SERVICE_UNAVAILABLE, "{}", cut.text);
    assert_eq!(cut.error_code(), "shutting_down");
    cluster.stop().await;
}

#[test]
fn invalid_configurations_are_refused_when_built() {
    let sys = actix::System::new();
    sys.block_on(async {
        let node = actormesh::Node::builder()
            .discovery(actormesh::MemoryDiscovery::new())
            .start()
            .await
            .unwrap();
        let get_not_idempotent = Gateway::builder(node.clone())
            .route(
                Route::get("/add/{id}")
                    .entity::<Tally>("id")
                    .ask(|_| Ok(Add { amount: 1 })),
            )
            .build()
            .unwrap_err();
        assert!(get_not_idempotent.to_string().contains("ask_idempotent"));
        let missing_key = Gateway::builder(node.clone())
            .route(
                Route::get("/tallies/{name}")
                    .entity::<Tally>("id")
                    .ask_idempotent(|_| Ok(Read)),
            )
            .build()
            .unwrap_err();
        assert!(missing_key.to_string().contains("{id}"), "{missing_key}");
        let twice = Gateway::builder(node.clone())
            .route(
                Route::get("/t/{id}")
                    .entity::<Tally>("id")
                    .ask_idempotent(|_| Ok(Read)),
            )
            .route(
                Route::get("/t/{id}")
                    .entity::<Tally>("id")
                    .ask_idempotent(|_| Ok(Read)),
            )
            .build()
            .unwrap_err();
        assert!(twice.to_string().contains("twice"));
        let scopes_without_auth = Gateway::builder(node.clone())
            .route(
                Route::get("/t/{id}")
                    .entity::<Tally>("id")
                    .ask_idempotent(|_| Ok(Read))
                    .scopes(["read"]),
            )
            .build()
            .unwrap_err();
        assert!(scopes_without_auth.to_string().contains("authentication"));
        let bad_path = Gateway::builder(node.clone())
            .route(
                Route::get("/t/{id")
                    .entity::<Tally>("id")
                    .ask_idempotent(|_| Ok(Read)),
            )
            .build()
            .unwrap_err();
        assert!(bad_path.to_string().contains("path"), "{bad_path}");
        let _ = Arc::new(());
        node.shutdown().await;
    });
}

#[actix::test]
async fn two_gateways_on_one_node_share_its_metrics() {
    let node = actormesh::Node::builder()
        .admin("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let greeter = node.spawn(Greeter {
        node: node.id().to_string(),
    });
    node.join_group("greeters", &greeter).await.unwrap();
    let (first, http_first) =
        serve(Gateway::builder(node.clone()).route(greet_route("/hello/{name}", "greeters"))).await;
    let (second, http_second) =
        serve(Gateway::builder(node.clone()).route(greet_route("/hello/{name}", "greeters"))).await;
    for http in [&http_first, &http_second, &http_second] {
        assert_eq!(http.get("/hello/ops").await.status, StatusCode::OK);
    }
    let admin = Http::new(node.admin_addr().unwrap());
    let metrics = admin.get("/metrics").await.text;
    assert!(
        metrics.contains(
            r#"actormesh_gateway_requests_total{route="/hello/{name}",method="GET",status="200"} 3"#
        ),
        "{metrics}"
    );
    assert_eq!(
        metrics
            .matches("# TYPE actormesh_gateway_requests_total ")
            .count(),
        1,
        "{metrics}"
    );
    if let Err(e) = actormesh_testkit::promtool_check(&metrics) {
        panic!("{e}\n{metrics}");
    }
    first.shutdown(Duration::from_secs(2)).await;
    second.shutdown(Duration::from_secs(2)).await;
    node.shutdown().await;
}
