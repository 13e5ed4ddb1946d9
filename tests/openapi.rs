//! `docs/openapi.yaml` against the code: it must be OpenAPI 3.x, every `$ref` must point
//! at a schema it defines, and it must document exactly the (method, path) pairs the
//! router serves (`jitgate::api::routes()`, the table the router is built from), each
//! with the security scheme its guard demands. That the guards themselves hold is
//! tested by calling every route (`tests/api.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jitgate::api::Access;
use serde_yaml::{Mapping, Value};

/// The HTTP methods a path item may hold (OpenAPI 3.0 names, lower case).
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn spec() -> Value {
    serde_yaml::from_str(&repo_file("docs/openapi.yaml"))
        .expect("docs/openapi.yaml is not valid YAML")
}

fn mapping<'a>(value: &'a Value, what: &str) -> &'a Mapping {
    value
        .as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping"))
}

/// (METHOD, path) → who may call it, for every route the router serves.
fn router_routes() -> BTreeMap<(String, String), Access> {
    let mut routes = BTreeMap::new();
    for route in jitgate::api::routes() {
        let key = (route.method.as_str().to_owned(), route.path.to_owned());
        assert!(
            routes.insert(key, route.access).is_none(),
            "{} {} is routed twice",
            route.method.as_str(),
            route.path
        );
    }
    routes
}

/// (METHOD, path) → operation object, for every operation in the document.
fn documented_operations(spec: &Value) -> BTreeMap<(String, String), &Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in mapping(&spec["paths"], "paths") {
        let path = path.as_str().expect("path keys are strings");
        for (key, op) in mapping(item, path) {
            let key = key.as_str().expect("path item keys are strings");
            if METHODS.contains(&key) {
                ops.insert((key.to_ascii_uppercase(), path.to_owned()), op);
            }
        }
    }
    ops
}

fn collect_refs<'a>(value: &'a Value, at: &str, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                let key = key.as_str().unwrap_or("?");
                if key == "$ref" {
                    let target = child
                        .as_str()
                        .unwrap_or_else(|| panic!("$ref at {at} is not a string"));
                    out.push((at.to_owned(), target));
                } else {
                    collect_refs(child, &format!("{at}/{key}"), out);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_refs(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn is_openapi_3_with_both_bearer_schemes() {
    let spec = spec();
    let version = spec["openapi"].as_str().expect("`openapi` version string");
    assert!(version.starts_with("3."), "openapi: {version} is not 3.x");
    assert!(
        spec["info"]["title"].as_str().is_some(),
        "info.title missing"
    );
    assert!(
        spec["info"]["version"].as_str().is_some(),
        "info.version missing"
    );
    let description = spec["info"]["description"]
        .as_str()
        .expect("info.description");
    for step in [
        "/v1/login",
        "/v1/requests",
        "/approve",
        "/extend",
        "/revoke",
        "curl",
    ] {
        assert!(
            description.contains(step),
            "info.description's walkthrough does not mention {step}"
        );
    }
    for scheme in ["adminToken", "loginToken"] {
        let s = &spec["components"]["securitySchemes"][scheme];
        assert_eq!(s["type"].as_str(), Some("http"), "{scheme}.type");
        assert_eq!(s["scheme"].as_str(), Some("bearer"), "{scheme}.scheme");
    }
}

#[test]
fn every_ref_resolves_to_a_schema() {
    let spec = spec();
    let schemas = mapping(&spec["components"]["schemas"], "components.schemas");
    let mut refs = Vec::new();
    collect_refs(&spec, "#", &mut refs);
    assert!(!refs.is_empty(), "the document has no $ref at all");
    for (at, target) in refs {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| {
                panic!("$ref {target:?} at {at} is not #/components/schemas/<name>")
            });
        assert!(
            schemas.contains_key(name),
            "$ref {target:?} at {at}: no schema {name:?} in components.schemas"
        );
    }
}

#[test]
fn documents_exactly_the_routes_the_router_serves() {
    let spec = spec();
    let served = router_routes();
    let documented = documented_operations(&spec);
    let served_keys: BTreeSet<_> = served.keys().cloned().collect();
    let documented_keys: BTreeSet<_> = documented.keys().cloned().collect();
    let missing: Vec<_> = served_keys.difference(&documented_keys).collect();
    let extra: Vec<_> = documented_keys.difference(&served_keys).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/openapi.yaml and the router disagree.\n  served but not documented: \
         {missing:?}\n  documented but not served: {extra:?}"
    );
}

#[test]
fn security_matches_each_routes_guard() {
    let spec = spec();
    let documented = documented_operations(&spec);
    for ((method, path), guard) in router_routes() {
        let Some(op) = documented.get(&(method.clone(), path.clone())) else {
            continue; // reported by documents_exactly_the_routes_the_router_serves
        };
        let security = op["security"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{method} {path}: no operation-level `security` list"));
        let mut schemes = BTreeSet::new();
        for requirement in security {
            let requirement = mapping(requirement, "security requirement");
            assert!(
                requirement.len() == 1,
                "{method} {path}: each security alternative should name one token"
            );
            for name in requirement.keys() {
                schemes.insert(name.as_str().expect("scheme name").to_owned());
            }
        }
        let expected: BTreeSet<String> = match guard {
            Access::Public => BTreeSet::new(),
            Access::Admin => BTreeSet::from(["adminToken".to_owned()]),
            Access::Caller => BTreeSet::from(["adminToken".to_owned(), "loginToken".to_owned()]),
        };
        assert_eq!(schemes, expected, "{method} {path} is guarded as {guard:?}");
    }
}

#[test]
fn operations_are_complete() {
    let spec = spec();
    let mut operation_ids = BTreeSet::new();
    for ((method, path), op) in documented_operations(&spec) {
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(
            operation_ids.insert(id.to_owned()),
            "operationId {id} used twice"
        );
        assert!(
            op["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty()),
            "{method} {path}: no description"
        );

        // Every `{param}` in the path is declared (on the path item or the operation).
        let item = &spec["paths"][path.as_str()];
        let declared: BTreeSet<&str> = [&item["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_sequence)
            .flatten()
            .filter(|p| p["in"].as_str() == Some("path"))
            .filter_map(|p| p["name"].as_str())
            .collect();
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    declared.contains(name),
                    "{method} {path}: path parameter {name} not declared"
                );
            }
        }

        // At least one success answer; error answers carry ErrorBody.
        let responses = mapping(&op["responses"], "responses");
        assert!(
            responses
                .keys()
                .any(|code| code.as_str().is_some_and(|c| c.starts_with('2'))),
            "{method} {path}: no 2xx response"
        );
        for (code, response) in responses {
            let code = code.as_str().expect("response codes are quoted strings");
            if code.starts_with('4') || code.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"].as_str(),
                    Some("#/components/schemas/ErrorBody"),
                    "{method} {path}: the {code} answer should be an ErrorBody"
                );
            }
        }
    }
}

#[test]
fn idempotency_key_and_metrics_are_documented() {
    let spec = spec();
    for path in ["/v1/requests", "/v1/grants/{id}/extend"] {
        let op = &spec["paths"][path]["post"];
        let header = op["parameters"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| {
                p["in"].as_str() == Some("header") && p["name"].as_str() == Some("Idempotency-Key")
            });
        assert!(
            header,
            "POST {path} does not document the Idempotency-Key header"
        );
        for code in ["200", "201"] {
            assert!(
                op["responses"][code].is_mapping(),
                "POST {path}: no {code} answer (201 new, 200 idempotent repeat)"
            );
        }
    }
    assert!(
        spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"].is_mapping(),
        "GET /metrics should answer text/plain (Prometheus text format)"
    );
}
