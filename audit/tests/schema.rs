//! The JSON line format: every kind round-trips, and the wire shape is what AUDIT.md says.
#![allow(clippy::unwrap_used)]

mod common;

use jitgate_audit::*;
use serde_json::Value;

#[test]
fn every_kind_round_trips_with_its_kind_tag() {
    let kinds = [
        "session_start",
        "query",
        "query_result",
        "query",
        "query_result",
        "query",
        "copy",
        "query_result",
        "query",
        "session_end",
        "auth_failure",
        "access_denied",
        "grant_issued",
        "grant_revoked",
    ];
    let events = common::every_kind();
    assert_eq!(events.len(), kinds.len());
    for (event, kind) in events.iter().zip(kinds) {
        let line = serde_json::to_string(event).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains(&format!("\"kind\":\"{kind}\"")), "{line}");
        assert_eq!(event.kind(), kind);
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, event, "{line}");
    }
}

#[test]
fn the_writers_line_encoding_equals_serde_for_every_kind() {
    for (i, mut event) in common::every_kind().into_iter().enumerate() {
        event.seq = i as u64 + 1;
        event.prev = Some(LineHash::of_line(format!("line {i}").as_bytes()));
        let mut line = Vec::new();
        line::encode(&event, &mut line).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
    }
}

#[test]
fn timestamps_have_exactly_six_fraction_digits_in_utc() {
    let events = common::every_kind();
    let start = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(start["ts"], "2026-11-27T23:38:17.123456Z");
    assert_eq!(start["deadline"], "2026-11-28T00:38:17.000000Z");
    let copy = serde_json::to_value(&events[6]).unwrap();
    assert_eq!(copy["ts"], "2026-11-27T23:38:20.500000Z");
    let grant = serde_json::to_value(&events[12]).unwrap();
    assert_eq!(grant["not_before"], "2026-11-27T23:30:00.000000Z");
    assert_eq!(grant["expires_at"], "2026-11-28T00:38:17.000000Z");

    // A fresh event's ts has the same shape and survives a round trip unchanged.
    let now = Event::new(EventBody::GrantRevoked {
        revoked_by: "x".into(),
        reason: None,
        from: None,
        rule: None,
    });
    let v = serde_json::to_value(&now).unwrap();
    let s = v["ts"].as_str().unwrap();
    assert_eq!(s.len(), "2026-11-27T23:38:17.123456Z".len(), "{s}");
    assert!(s.ends_with('Z') && s.as_bytes()[19] == b'.', "{s}");
    assert_eq!(serde_json::from_value::<Event>(v).unwrap(), now);
}

#[test]
fn exact_line_of_a_query() {
    let events = common::every_kind();
    let line = serde_json::to_string(&events[3]).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"v":1,"seq":0,"ts":"2026-11-27T23:38:19.000000Z","#,
            r#""session_id":"0193a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b","identity":"alice","#,
            r#""target":"prod","role":"readonly","grant_id":"0193a2b4-0000-7000-8000-000000000001","#,
            r#""kind":"query","query_id":2,"protocol":"extended","#,
            r#""sql":"SELECT * FROM t WHERE id = $1 AND name = $2 AND blob = $3","#,
            r#""statement":"s1","portal":"","params":["#,
            r#"{"format":"text","type_oid":23,"value":"42"},"#,
            r#"{"format":"text","type_oid":25,"value":null},"#,
            r#"{"format":"binary","type_oid":17,"value":"AAEC/w=="}]}"#
        )
    );
}

#[test]
fn none_options_are_omitted_and_both_null_and_missing_are_accepted() {
    let revoked = &common::every_kind()[13];
    let v = serde_json::to_value(revoked).unwrap();
    let obj = v.as_object().unwrap();
    for absent in ["session_id", "identity", "target", "role", "reason"] {
        assert!(!obj.contains_key(absent), "{absent} in {v}");
    }

    let with_nulls = r#"{"v":1,"seq":9,"ts":"2026-11-27T23:38:17Z","session_id":null,"identity":null,
        "target":null,"role":null,"grant_id":null,"kind":"session_end","reason":"client_quit",
        "detail":null,"late_ms":null,"queries":0,"duration_ms":5}"#;
    let missing = r#"{"v":1,"seq":9,"ts":"2026-11-27T23:38:17.000000Z","kind":"session_end",
        "reason":"client_quit","queries":0,"duration_ms":5}"#;
    let a: Event = serde_json::from_str(with_nulls).unwrap();
    let b: Event = serde_json::from_str(missing).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.body,
        EventBody::SessionEnd {
            reason: EndReason::ClientQuit,
            detail: None,
            late_ms: None,
            queries: 0,
            duration_ms: 5,
            upstream_parked: false,
            stopped: None,
        }
    );
}

#[test]
fn unknown_fields_are_ignored_but_unknown_kinds_and_bad_values_are_not() {
    let extra = r#"{"v":1,"seq":1,"ts":"2026-11-27T23:38:17Z","kind":"grant_revoked","revoked_by":"c","future_field":[1,2]}"#;
    assert!(serde_json::from_str::<Event>(extra).is_ok());
    for bad in [
        r#"{"v":1,"seq":1,"ts":"2026-11-27T23:38:17Z","kind":"teleport"}"#,
        r#"{"v":1,"seq":1,"ts":"yesterday","kind":"grant_revoked","revoked_by":"c"}"#,
        r#"{"v":1,"ts":"2026-11-27T23:38:17Z","kind":"grant_revoked","revoked_by":"c"}"#,
        r#"{"v":1,"seq":1,"ts":"2026-11-27T23:38:17Z","kind":"session_end","reason":"bored","queries":0,"duration_ms":0}"#,
    ] {
        assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
    }
}

#[test]
fn enums_use_snake_case_names() {
    let names = |v: Value| v.as_str().unwrap().to_owned();
    assert_eq!(
        names(serde_json::to_value(Protocol::FunctionCall).unwrap()),
        "function_call"
    );
    assert_eq!(
        names(serde_json::to_value(CopyDirection::Out).unwrap()),
        "out"
    );
    assert_eq!(
        names(serde_json::to_value(EndReason::UpstreamClosed).unwrap()),
        "upstream_closed"
    );
    assert_eq!(
        names(serde_json::to_value(EndReason::ProtocolError).unwrap()),
        "protocol_error"
    );
    assert_eq!(
        names(serde_json::to_value(Durability::Fsync).unwrap()),
        "fsync"
    );
    assert_eq!(Durability::default(), Durability::Write);
}

#[test]
fn invalid_utf8_parameter_survives_json() {
    let p = Param::from_wire(ParamFormat::Text, Some(25), Some(b"caf\xe9\x00!"));
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        json,
        r#"{"format":"text","type_oid":25,"value":"caf\u0000e9\u000000!"}"#
    );
    let back: Param = serde_json::from_str(&json).unwrap();
    assert_eq!(back.wire_bytes().unwrap().unwrap(), b"caf\xe9\x00!");
}
