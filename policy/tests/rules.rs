//! Approval rules: YAML → validated rules, field-named validation errors, first-match
//! evaluation, approvers, auto-approval windows (DST, overnight, weekends), break-glass,
//! and `explain`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};

use jitgate_policy::rules::Denial;
use jitgate_policy::{
    Catalog, PolicyError, RequestFacts, Rules, RulesSpec, SignedDuration, Timestamp, Verdict,
};

fn catalog() -> Catalog {
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    Catalog {
        identities: set(&["alice", "bob", "carol", "dave", "erin", "frank", "mallory"]),
        targets: BTreeMap::from([
            ("app".to_string(), set(&["readonly", "readwrite", "admin"])),
            ("reports".to_string(), set(&["readonly"])),
            ("prod".to_string(), set(&["readonly", "admin"])),
            ("archive".to_string(), set(&["readonly", "admin"])),
        ]),
    }
}

/// The policy most tests run against. bob is in two approving groups on purpose.
const POLICY: &str = r#"
groups:
  dbas: [alice, bob]
  oncall: [carol]
  security: [bob, dave, frank]
rules:
  - name: app-read
    requesters: { identities: [erin], groups: [dbas, oncall] }
    targets: [app]
    roles: [readonly]
    max_duration: 8h
    reason: required
    ticket: '^(INC|CHG)-\d+$'
    approvals: { count: 1, from: [dbas, security] }
    self_approval: false
    pending_timeout: 30m
    auto_approve:
      groups: [oncall]
      identities: []
      windows:
        - { days: [mon-fri], from: "09:00", to: "18:00", time_zone: "Europe/Berlin" }
    break_glass:
      max_duration: 1h
      review_by: [security]
  - name: app-write
    requesters: { groups: [dbas] }
    targets: [app]
    roles: [readwrite]
    max_duration: 2h
    approvals: { count: 2, from: [dbas, security] }
  - name: erin-anywhere
    requesters: { identities: [erin] }
    targets: ["*"]
    roles: [readonly]
    max_duration: 1d
    reason: optional
  - name: night-ops
    requesters: { groups: [oncall] }
    targets: [prod]
    roles: [readonly]
    max_duration: 1h
    reason: optional
    approvals: { count: 1, from: [dbas] }
    auto_approve:
      groups: [oncall]
      windows:
        - { days: [mon], from: "22:00", to: "06:00" }
        - { days: [sun], from: "02:30", to: "03:30", time_zone: Europe/Berlin }
  - name: self-serve
    requesters: { groups: [security] }
    targets: [prod]
    roles: ["*"]
    max_duration: 4h
    approvals: { count: 1, from: [security] }
    self_approval: true
"#;

fn spec(yaml: &str) -> RulesSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn rules() -> Rules {
    Rules::from_spec(&spec(POLICY), &catalog()).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

/// Saturday 2026-03-28 10:00 UTC: outside every auto-approval window of [`POLICY`].
const SATURDAY: &str = "2026-03-28T10:00:00Z";

/// A request with a reason and a valid ticket, for one hour, on a Saturday.
fn facts<'a>(identity: &'a str, target: &'a str, role: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        identity,
        target,
        role,
        duration: hours(1),
        reason: Some("investigating slow queries"),
        ticket: Some("INC-1234"),
        break_glass: false,
        at: ts(SATURDAY),
    }
}

fn check(f: &RequestFacts<'_>) -> Verdict {
    rules().check_request(f).unwrap()
}

fn invalid_request(f: &RequestFacts<'_>) -> String {
    match rules().check_request(f) {
        Err(PolicyError::InvalidRequest(m)) => m,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

fn forbidden(result: Result<impl std::fmt::Debug, PolicyError>) -> String {
    match result {
        Err(PolicyError::Forbidden(m)) => m,
        other => panic!("expected Forbidden, got {other:?}"),
    }
}

// ---------------------------------------------------------------- parsing and accessors

#[test]
fn good_policy_parses_and_validates() {
    let rules = rules();
    assert!(!rules.is_empty());
    assert_eq!(rules.len(), 5);
    assert_eq!(
        rules.names(),
        [
            "app-read",
            "app-write",
            "erin-anywhere",
            "night-ops",
            "self-serve"
        ]
    );
    let r = rules.rule("app-read").unwrap();
    assert_eq!(r.name(), "app-read");
    assert_eq!(r.max_duration(), hours(8));
    assert_eq!(r.approvals_required(), 1);
    assert_eq!(r.pending_timeout(), SignedDuration::from_mins(30));
    assert!(r.reason_required());
    assert_eq!(r.ticket_pattern(), Some(r"^(INC|CHG)-\d+$"));
    assert_eq!(r.break_glass_max(), Some(hours(1)));
    assert!(!r.self_approval());

    let e = rules.rule("erin-anywhere").unwrap();
    assert!(!e.reason_required());
    assert_eq!(e.approvals_required(), 0);
    assert_eq!(
        e.pending_timeout(),
        hours(1),
        "default pending_timeout is 1h"
    );
    assert_eq!(e.ticket_pattern(), None);
    assert_eq!(e.break_glass_max(), None);
    assert_eq!(e.max_duration(), hours(24));
    assert!(rules.rule("self-serve").unwrap().self_approval());
    assert!(rules.rule("nope").is_none());
}

#[test]
fn groups_of_is_sorted_and_complete() {
    let rules = rules();
    assert_eq!(rules.groups_of("bob"), ["dbas", "security"]);
    assert_eq!(rules.groups_of("carol"), ["oncall"]);
    assert!(rules.groups_of("mallory").is_empty());
}

#[test]
fn empty_policy_lets_nobody_request() {
    for rules in [
        Rules::default(),
        Rules::from_spec(&RulesSpec::default(), &catalog()).unwrap(),
        Rules::from_spec(&spec("groups: { dbas: [alice] }"), &catalog()).unwrap(),
    ] {
        assert!(rules.is_empty());
        let m = forbidden(rules.check_request(&facts("alice", "app", "readonly")));
        assert!(m.contains("no approval rules"), "{m}");
    }
}

#[test]
fn window_times_may_be_unquoted_in_yaml() {
    let yaml = "
groups: { oncall: [carol] }
rules:
  - name: r
    requesters: { groups: [oncall] }
    targets: [prod]
    roles: [readonly]
    max_duration: 1h
    auto_approve: { groups: [oncall], windows: [{ days: [sat, sun], from: 09:00, to: 17:30 }] }
";
    let rules = Rules::from_spec(&spec(yaml), &catalog()).unwrap();
    let mut f = facts("carol", "prod", "readonly");
    f.at = ts(SATURDAY);
    assert_eq!(check_with(&rules, &f).approvals_required, 0);
}

fn check_with(rules: &Rules, f: &RequestFacts<'_>) -> Verdict {
    rules.check_request(f).unwrap()
}

#[test]
fn unknown_yaml_fields_are_rejected() {
    let yaml = POLICY.replace("    self_approval: false\n", "    self_aproval: false\n");
    let err = serde_yaml::from_str::<RulesSpec>(&yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("self_aproval"), "{err}");
    let err = serde_yaml::from_str::<RulesSpec>(
        "rules: [{ name: r, requesters: {groups: [x]}, targets: [a], roles: [b], \
         max_duration: 1h, reason: maybe }]",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("maybe") && err.contains("required"), "{err}");
    let err = serde_yaml::from_str::<RulesSpec>("rulez: []")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rulez"), "{err}");
}

// ---------------------------------------------------------------- validation errors

/// One minimal valid rule with `changes` applied (replace a key or add one; flow YAML).
fn one_rule(changes: &[(&str, &str)]) -> String {
    let mut fields: Vec<(&str, &str)> = vec![
        ("name", "r"),
        ("requesters", "{ groups: [dbas] }"),
        ("targets", "[app]"),
        ("roles", "[readonly]"),
        ("max_duration", "1h"),
    ];
    for (k, v) in changes {
        match fields.iter_mut().find(|f| f.0 == *k) {
            Some(f) => f.1 = v,
            None => fields.push((k, v)),
        }
    }
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        out.push_str(if i == 0 { "  - " } else { "    " });
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

const GROUPS: &str =
    "groups:\n  dbas: [alice, bob]\n  oncall: [carol]\n  security: [bob, dave, frank]\n";

fn policy_of(rules_yaml: &str) -> String {
    format!("{GROUPS}rules:\n{rules_yaml}")
}

/// The (field, message) of the validation error for this policy.
fn invalid(yaml: &str) -> (String, String) {
    match Rules::from_spec(&spec(yaml), &catalog()) {
        Err(PolicyError::InvalidPolicy { field, message }) => (field, message),
        other => panic!("expected InvalidPolicy for\n{yaml}\ngot {other:?}"),
    }
}

fn invalid_rule(changes: &[(&str, &str)]) -> (String, String) {
    invalid(&policy_of(&one_rule(changes)))
}

#[track_caller]
fn assert_field(got: (String, String), field: &str, phrase: &str) {
    assert_eq!(got.0, field, "message: {}", got.1);
    assert!(got.1.contains(phrase), "{:?} lacks {phrase:?}", got.1);
}

#[test]
fn minimal_rule_is_valid() {
    Rules::from_spec(&spec(&policy_of(&one_rule(&[]))), &catalog()).unwrap();
}

#[test]
fn invalid_policy_error_names_field_and_sqlstate() {
    let err = Rules::from_spec(
        &spec(&policy_of(&one_rule(&[("ticket", "'(INC'")]))),
        &catalog(),
    )
    .unwrap_err();
    assert_eq!(err.sqlstate(), "F0000");
    assert!(
        err.to_string().starts_with("policy.rules[0].ticket: "),
        "{err}"
    );
}

#[test]
fn groups_are_validated() {
    assert_field(
        invalid("groups: { dbas: [alice, zed] }"),
        "groups.dbas[1]",
        "unknown identity \"zed\"",
    );
    assert_field(
        invalid("groups: { dbas: [alice, alice] }"),
        "groups.dbas[1]",
        "listed twice",
    );
    assert_field(
        invalid("groups: { 'db as': [alice] }"),
        "groups.db as",
        "not valid",
    );
}

#[test]
fn rule_names_are_unique_and_valid() {
    let two = format!("{}{}", one_rule(&[]), one_rule(&[("roles", "[readwrite]")]));
    assert_field(
        invalid(&policy_of(&two)),
        "rules[1].name",
        "already used by rules[0]",
    );
    assert_field(
        invalid_rule(&[("name", "''")]),
        "rules[0].name",
        "not valid",
    );
    assert_field(
        invalid_rule(&[("name", "'app read'")]),
        "rules[0].name",
        "not valid",
    );
}

#[test]
fn requesters_are_validated() {
    assert_field(
        invalid_rule(&[("requesters", "{ groups: [dbas, dba] }")]),
        "rules[0].requesters.groups[1]",
        "unknown group \"dba\"",
    );
    assert_field(
        invalid_rule(&[("requesters", "{ identities: [erin, zed] }")]),
        "rules[0].requesters.identities[1]",
        "unknown identity \"zed\"",
    );
    assert_field(
        invalid_rule(&[("requesters", "{}")]),
        "rules[0].requesters",
        "names nobody",
    );
}

#[test]
fn targets_and_roles_must_exist() {
    assert_field(
        invalid_rule(&[("targets", "[app, prd]")]),
        "rules[0].targets[1]",
        "unknown target \"prd\"",
    );
    assert_field(
        invalid_rule(&[("targets", "[]")]),
        "rules[0].targets",
        "is empty",
    );
    assert_field(
        invalid_rule(&[("targets", "['*', app]")]),
        "rules[0].targets",
        "already means every target",
    );
    // readwrite exists on app but not on reports.
    assert_field(
        invalid_rule(&[
            ("targets", "[app, reports]"),
            ("roles", "[readonly, readwrite]"),
        ]),
        "rules[0].roles[1]",
        "not configured for target \"reports\"",
    );
    assert_field(
        invalid_rule(&[("targets", "['*']"), ("roles", "[superuser]")]),
        "rules[0].roles[0]",
        "not configured for any target",
    );
}

#[test]
fn durations_are_validated() {
    assert_field(
        invalid_rule(&[("max_duration", "eight hours")]),
        "rules[0].max_duration",
        "invalid duration",
    );
    assert_field(
        invalid_rule(&[("max_duration", "0s")]),
        "rules[0].max_duration",
        "longer than zero",
    );
    assert_field(
        invalid_rule(&[("max_duration", "8d")]),
        "rules[0].max_duration",
        "longer than the 168h jitgate allows for any grant",
    );
    assert_field(
        invalid_rule(&[("pending_timeout", "soon")]),
        "rules[0].pending_timeout",
        "invalid duration",
    );
}

#[test]
fn ticket_pattern_must_compile() {
    assert_field(
        invalid_rule(&[("ticket", "'^(INC-\\d+$'")]),
        "rules[0].ticket",
        "not a valid regular expression (unclosed group)",
    );
    assert_field(
        invalid_rule(&[("ticket", "''")]),
        "rules[0].ticket",
        "is empty",
    );
}

#[test]
fn approvals_are_validated() {
    assert_field(
        invalid_rule(&[("approvals", "{ count: 1, from: [dbas, securty] }")]),
        "rules[0].approvals.from[1]",
        "unknown group \"securty\"",
    );
    assert_field(
        invalid_rule(&[("approvals", "{ count: 1, from: [dave] }")]),
        "rules[0].approvals.from[0]",
        "is an identity, not a group",
    );
    assert_field(
        invalid_rule(&[("approvals", "{ count: 1 }")]),
        "rules[0].approvals.from",
        "is empty",
    );
    // security has 3 members: 4 approvals can never be reached.
    assert_field(
        invalid_rule(&[("approvals", "{ count: 4, from: [security] }")]),
        "rules[0].approvals.count",
        "only 3 member(s)",
    );
}

#[test]
fn approvals_must_be_reachable_without_the_requester() {
    // dbas = alice, bob: alice's request could only be approved by bob.
    let (field, message) = invalid_rule(&[("approvals", "{ count: 2, from: [dbas] }")]);
    assert_eq!(field, "rules[0].approvals.count");
    assert!(
        message.contains("a request by alice could get at most 1"),
        "{message}"
    );
    assert!(message.contains("self_approval: true"), "{message}");
    // Allowed when the requester may approve themself.
    let yaml = policy_of(&one_rule(&[
        ("approvals", "{ count: 2, from: [dbas] }"),
        ("self_approval", "true"),
    ]));
    Rules::from_spec(&spec(&yaml), &catalog()).unwrap();
    // And when those requesters never wait for approvers (auto-approved at any time).
    let yaml = policy_of(&one_rule(&[
        ("approvals", "{ count: 2, from: [dbas] }"),
        ("auto_approve", "{ groups: [dbas] }"),
    ]));
    Rules::from_spec(&spec(&yaml), &catalog()).unwrap();
}

#[test]
fn auto_approve_is_validated() {
    assert_field(
        invalid_rule(&[("auto_approve", "{ windows: [] }")]),
        "rules[0].auto_approve",
        "names nobody",
    );
    assert_field(
        invalid_rule(&[("auto_approve", "{ groups: [oncal] }")]),
        "rules[0].auto_approve.groups[0]",
        "unknown group",
    );
    assert_field(
        invalid_rule(&[("auto_approve", "{ identities: [carol, zed] }")]),
        "rules[0].auto_approve.identities[1]",
        "unknown identity",
    );
    // Auto-approving someone who cannot request under the rule is a mistake.
    assert_field(
        invalid_rule(&[("auto_approve", "{ identities: [alice, erin] }")]),
        "rules[0].auto_approve.identities[1]",
        "erin is not among this rule's requesters",
    );
    assert_field(
        invalid_rule(&[("auto_approve", "{ groups: [dbas, oncall] }")]),
        "rules[0].auto_approve.groups[1]",
        "no member of group oncall is among this rule's requesters",
    );
    // A group is fine when its members request by name.
    let yaml = policy_of(&one_rule(&[
        ("requesters", "{ identities: [carol] }"),
        ("auto_approve", "{ groups: [oncall] }"),
    ]));
    Rules::from_spec(&spec(&yaml), &catalog()).unwrap();
}

#[test]
fn windows_are_validated() {
    let window = |w: &str| {
        let value =
            format!("{{ groups: [dbas], windows: [{{ from: '09:00', to: '17:00' }}, {w}] }}");
        invalid(&policy_of(&one_rule(&[("auto_approve", &value)])))
    };
    assert_field(
        window("{ days: [mon, fir], from: '09:00', to: '17:00' }"),
        "rules[0].auto_approve.windows[1].days[1]",
        "\"fir\" is not a day",
    );
    assert_field(
        window("{ days: [mon-fry], from: '09:00', to: '17:00' }"),
        "rules[0].auto_approve.windows[1].days[0]",
        "not a day",
    );
    assert_field(
        window("{ days: [], from: '09:00', to: '17:00' }"),
        "rules[0].auto_approve.windows[1].days",
        "matches no day",
    );
    assert_field(
        window("{ from: '9am', to: '17:00' }"),
        "rules[0].auto_approve.windows[1].from",
        "not a time of day",
    );
    assert_field(
        window("{ from: '09:00', to: '25:00' }"),
        "rules[0].auto_approve.windows[1].to",
        "not a time of day",
    );
    assert_field(
        window("{ from: '24:00', to: '06:00' }"),
        "rules[0].auto_approve.windows[1].from",
        "not a time of day",
    );
    assert_field(
        window("{ from: '09:00', to: '09:00' }"),
        "rules[0].auto_approve.windows[1].to",
        "empty window",
    );
    assert_field(
        window("{ from: '09:00', to: '17:00', time_zone: Europe/Berln }"),
        "rules[0].auto_approve.windows[1].time_zone",
        "unknown time zone \"Europe/Berln\"",
    );
}

#[test]
fn break_glass_is_validated() {
    assert_field(
        invalid_rule(&[("break_glass", "{ max_duration: 1h, review_by: [] }")]),
        "rules[0].break_glass.review_by",
        "is empty",
    );
    assert_field(
        invalid_rule(&[(
            "break_glass",
            "{ max_duration: 1h, review_by: [security, audit] }",
        )]),
        "rules[0].break_glass.review_by[1]",
        "unknown group \"audit\"",
    );
    assert_field(
        invalid_rule(&[("break_glass", "{ max_duration: 2h, review_by: [security] }")]),
        "rules[0].break_glass.max_duration",
        "longer than the rule's max_duration (1h)",
    );
    assert_field(
        invalid_rule(&[("break_glass", "{ max_duration: 1x, review_by: [security] }")]),
        "rules[0].break_glass.max_duration",
        "invalid duration",
    );
    // carol would be the only reviewer of her own break-glass use.
    assert_field(
        invalid_rule(&[
            ("requesters", "{ groups: [oncall] }"),
            ("break_glass", "{ max_duration: 1h, review_by: [oncall] }"),
        ]),
        "rules[0].break_glass.review_by",
        "nobody but the requester could review break-glass use by carol",
    );
    let missing = serde_yaml::from_str::<RulesSpec>(&policy_of(&one_rule(&[(
        "break_glass",
        "{ max_duration: 1h }",
    )])))
    .unwrap_err()
    .to_string();
    assert!(missing.contains("review_by"), "{missing}");
}

// ---------------------------------------------------------------- matching

#[test]
fn first_matching_rule_applies() {
    // erin is named by app-read (first) and erin-anywhere (any target): app-read wins.
    let v = check(&facts("erin", "app", "readonly"));
    assert_eq!(v.rule, "app-read");
    assert_eq!(v.approvals_required, 1);
    // On reports only erin-anywhere matches; it needs no approval.
    let v = check(&facts("erin", "reports", "readonly"));
    assert_eq!(v.rule, "erin-anywhere");
    assert_eq!(v.approvals_required, 0);
    assert_eq!(
        v.auto_approved.as_deref(),
        Some("no approval required by rule erin-anywhere")
    );
    assert_eq!(v.max_duration, hours(24));
    // app-read would demand a ticket; erin-anywhere does not, but is never reached for app.
    let mut f = facts("erin", "app", "readonly");
    f.ticket = None;
    assert!(invalid_request(&f).contains("rule app-read requires a ticket"));
}

#[test]
fn requester_via_group_or_identity() {
    assert_eq!(check(&facts("alice", "app", "readonly")).rule, "app-read"); // group dbas
    assert_eq!(check(&facts("carol", "app", "readonly")).rule, "app-read"); // group oncall
    assert_eq!(check(&facts("erin", "app", "readonly")).rule, "app-read"); // by name
    let m = forbidden(rules().check_request(&facts("mallory", "app", "readonly")));
    assert!(
        m.contains("no rule lets mallory request role readonly on target app"),
        "{m}"
    );
    assert!(
        m.contains("jitgate policy explain --identity mallory --target app --role readonly"),
        "{m}"
    );
}

#[test]
fn target_and_role_wildcards() {
    // erin-anywhere: targets ["*"], roles [readonly].
    assert_eq!(
        check(&facts("erin", "archive", "readonly")).rule,
        "erin-anywhere"
    );
    assert_eq!(
        check(&facts("erin", "prod", "readonly")).rule,
        "erin-anywhere"
    );
    forbidden(rules().check_request(&facts("erin", "archive", "admin")));
    // self-serve: targets [prod], roles ["*"].
    assert_eq!(check(&facts("dave", "prod", "admin")).rule, "self-serve");
    assert_eq!(check(&facts("dave", "prod", "readonly")).rule, "self-serve");
    forbidden(rules().check_request(&facts("dave", "archive", "admin")));
}

#[test]
fn unknown_names_are_reported_as_such() {
    let rules = rules();
    assert_eq!(
        rules.check_request(&facts("zed", "app", "readonly")),
        Err(PolicyError::UnknownIdentity("zed".into()))
    );
    // A wildcard rule must not make an unconfigured target requestable.
    assert_eq!(
        rules.check_request(&facts("erin", "nowhere", "readonly")),
        Err(PolicyError::UnknownTarget("nowhere".into()))
    );
    assert_eq!(
        rules.check_request(&facts("dave", "prod", "readwrite")),
        Err(PolicyError::UnknownRole {
            target: "prod".into(),
            role: "readwrite".into()
        })
    );
}

#[test]
fn verdict_carries_rule_settings() {
    let v = check(&facts("alice", "app", "readwrite"));
    assert_eq!(
        v,
        Verdict {
            rule: "app-write".into(),
            approvals_required: 2,
            auto_approved: None,
            break_glass: false,
            pending_timeout: hours(1),
            max_duration: hours(2),
        }
    );
    assert_eq!(
        check(&facts("alice", "app", "readonly")).pending_timeout,
        SignedDuration::from_mins(30)
    );
}

// ---------------------------------------------------------------- approvers

#[test]
fn approvers_are_distinct_sorted_and_exclude_the_requester() {
    let rules = rules();
    // dbas ∪ security = alice, bob, dave, frank (bob is in both, listed once).
    assert_eq!(
        rules.approvers("app-read", "erin"),
        ["alice", "bob", "dave", "frank"]
    );
    assert_eq!(
        rules.approvers("app-read", "alice"),
        ["bob", "dave", "frank"]
    );
    assert_eq!(
        rules.approvers("app-read", "bob"),
        ["alice", "dave", "frank"]
    );
    // self-serve allows self-approval: dave stays in his own list.
    assert_eq!(
        rules.approvers("self-serve", "dave"),
        ["bob", "dave", "frank"]
    );
    assert!(rules.approvers("erin-anywhere", "erin").is_empty());
    assert!(rules.approvers("no-such-rule", "erin").is_empty());
}

#[test]
fn n_of_m_approvals() {
    let v = check(&facts("bob", "app", "readwrite"));
    assert_eq!(v.approvals_required, 2);
    let rules = rules();
    let approvers = rules.approvers("app-write", "bob");
    assert_eq!(approvers, ["alice", "dave", "frank"]);
    for a in &approvers {
        rules.check_approver("app-write", "bob", a).unwrap();
    }
}

#[test]
fn approver_checks() {
    let rules = rules();
    rules.check_approver("app-read", "erin", "alice").unwrap();
    rules.check_approver("app-read", "erin", "dave").unwrap();
    let m = forbidden(rules.check_approver("app-read", "erin", "carol"));
    assert!(m.contains("carol may not approve"), "{m}");
    assert!(m.contains("only members of group(s) dbas, security"), "{m}");
    // Self-approval is forbidden by default, even for a member of an approving group.
    let m = forbidden(rules.check_approver("app-read", "alice", "alice"));
    assert!(m.contains("does not allow self-approval"), "{m}");
    assert!(m.contains("bob, dave, frank"), "{m}");
    // … and allowed where the rule says so.
    rules.check_approver("self-serve", "dave", "dave").unwrap();
    // Self-approval still needs membership of an approving group.
    let m = forbidden(rules.check_approver("self-serve", "erin", "carol"));
    assert!(m.contains("only members of group(s) security"), "{m}");
    let m = forbidden(rules.check_approver("gone", "erin", "alice"));
    assert!(m.contains("no longer exists"), "{m}");
    let m = forbidden(rules.check_approver("erin-anywhere", "erin", "alice"));
    assert!(m.contains("names no approvers"), "{m}");
}

// ---------------------------------------------------------------- request requirements

#[test]
fn reason_required_or_optional() {
    let mut f = facts("alice", "app", "readonly");
    f.reason = None;
    assert!(invalid_request(&f).contains("rule app-read requires a reason"));
    f.reason = Some("   ");
    assert!(invalid_request(&f).contains("requires a reason"));
    let mut f = facts("erin", "reports", "readonly");
    f.reason = None;
    assert_eq!(check(&f).rule, "erin-anywhere");
}

#[test]
fn ticket_must_match_the_whole_pattern() {
    let mut f = facts("alice", "app", "readonly");
    for ok in ["INC-1", "CHG-987654", " INC-42 "] {
        f.ticket = Some(ok);
        assert_eq!(check(&f).rule, "app-read", "{ok}");
    }
    f.ticket = None;
    let m = invalid_request(&f);
    assert!(
        m.contains(r"requires a ticket matching ^(INC|CHG)-\d+$"),
        "{m}"
    );
    for bad in ["inc-1", "INC-", "xINC-1", "INC-1 and more", "PRB-1"] {
        f.ticket = Some(bad);
        let m = invalid_request(&f);
        assert!(m.contains("does not match the pattern"), "{bad}: {m}");
        assert!(m.contains(r"^(INC|CHG)-\d+$"), "{m}");
    }
    // Unanchored patterns still have to match the whole ticket.
    let yaml = policy_of(&one_rule(&[("ticket", "'INC-\\d+'")]));
    let rules = Rules::from_spec(&spec(&yaml), &catalog()).unwrap();
    let mut f = facts("alice", "app", "readonly");
    f.ticket = Some("xINC-1");
    assert!(matches!(
        rules.check_request(&f),
        Err(PolicyError::InvalidRequest(_))
    ));
    f.ticket = Some("INC-1");
    rules.check_request(&f).unwrap();
}

#[test]
fn duration_limits() {
    let mut f = facts("alice", "app", "readonly");
    f.duration = hours(8);
    check(&f);
    f.duration = hours(8) + SignedDuration::from_secs(1);
    let m = invalid_request(&f);
    assert!(m.contains("longer than the 8h rule app-read allows"), "{m}");
    f.duration = SignedDuration::ZERO;
    assert!(invalid_request(&f).contains("longer than zero"));
    f.duration = -hours(1);
    assert!(invalid_request(&f).contains("longer than zero"));
}

// ---------------------------------------------------------------- auto-approval windows

/// carol (oncall) asking for app/readonly at `at` (window: mon-fri 09:00-18:00 Berlin).
fn carol_app_at(at: &str) -> Verdict {
    let mut f = facts("carol", "app", "readonly");
    f.at = ts(at);
    check(&f)
}

#[test]
fn auto_approval_inside_business_hours_in_berlin() {
    // Monday 2026-03-30 07:30 UTC = 09:30 CEST (summer time since the day before).
    let v = carol_app_at("2026-03-30T07:30:00Z");
    assert_eq!(v.approvals_required, 0);
    assert_eq!(
        v.auto_approved.as_deref(),
        Some(
            "auto-approved by rule app-read: carol is in group oncall, inside window \
             mon-fri 09:00-18:00 Europe/Berlin"
        )
    );
    // Friday 2026-03-27 07:30 UTC = 08:30 CET (winter time): not yet open.
    let v = carol_app_at("2026-03-27T07:30:00Z");
    assert_eq!((v.approvals_required, v.auto_approved), (1, None));
    // Friday 16:30 UTC = 17:30 CET: open. Monday 16:30 UTC = 18:30 CEST: closed.
    assert_eq!(carol_app_at("2026-03-27T16:30:00Z").approvals_required, 0);
    assert_eq!(carol_app_at("2026-03-30T16:30:00Z").approvals_required, 1);
    // Exactly 18:00 local is outside ([from, to)); 09:00 is inside.
    assert_eq!(carol_app_at("2026-03-30T16:00:00Z").approvals_required, 1);
    assert_eq!(carol_app_at("2026-03-30T07:00:00Z").approvals_required, 0);
}

#[test]
fn auto_approval_excludes_weekends_in_local_time() {
    assert_eq!(carol_app_at(SATURDAY).approvals_required, 1);
    assert_eq!(carol_app_at("2026-03-29T10:00:00Z").approvals_required, 1); // Sunday
                                                                            // The weekday is the one in the window's zone, not in UTC: a weekend-only window
                                                                            // in Auckland (UTC+13 in March) opens while it is still Friday in UTC.
    let yaml = policy_of(&one_rule(&[
        ("requesters", "{ groups: [oncall] }"),
        ("approvals", "{ count: 1, from: [dbas] }"),
        (
            "auto_approve",
            "{ groups: [oncall], windows: [{ days: [sat-sun], from: '00:00', to: '24:00', \
             time_zone: Pacific/Auckland }] }",
        ),
    ]));
    let rules = Rules::from_spec(&spec(&yaml), &catalog()).unwrap();
    let at = |t: &str| {
        let mut f = facts("carol", "app", "readonly");
        f.at = ts(t);
        check_with(&rules, &f).approvals_required
    };
    assert_eq!(at("2026-03-27T10:59:00Z"), 1, "Friday 23:59 in Auckland");
    assert_eq!(
        at("2026-03-27T11:00:00Z"),
        0,
        "Saturday 00:00 in Auckland, Friday in UTC"
    );
    assert_eq!(at("2026-03-29T10:59:00Z"), 0, "Sunday 23:59 in Auckland");
    assert_eq!(
        at("2026-03-29T11:00:00Z"),
        1,
        "Monday in Auckland, Sunday in UTC"
    );
}

#[test]
fn auto_approval_applies_only_to_listed_requesters() {
    // alice (dbas) is not auto-approved even inside the window.
    let mut f = facts("alice", "app", "readonly");
    f.at = ts("2026-03-30T07:30:00Z");
    let v = check(&f);
    assert_eq!((v.approvals_required, v.auto_approved), (1, None));
}

/// carol asking for prod/readonly (night-ops) at `at`.
fn carol_prod_at(at: &str) -> u32 {
    let mut f = facts("carol", "prod", "readonly");
    f.at = ts(at);
    check(&f).approvals_required
}

#[test]
fn overnight_window_belongs_to_the_day_it_starts() {
    // mon 22:00-06:00 UTC; 2026-03-30 is a Monday.
    assert_eq!(
        carol_prod_at("2026-03-30T21:59:00Z"),
        1,
        "Monday before 22:00"
    );
    assert_eq!(carol_prod_at("2026-03-30T22:00:00Z"), 0, "Monday 22:00");
    assert_eq!(carol_prod_at("2026-03-30T23:30:00Z"), 0, "Monday night");
    assert_eq!(
        carol_prod_at("2026-03-31T05:59:00Z"),
        0,
        "Tuesday early morning"
    );
    assert_eq!(carol_prod_at("2026-03-31T06:00:00Z"), 1, "Tuesday 06:00");
    assert_eq!(
        carol_prod_at("2026-03-30T05:00:00Z"),
        1,
        "Monday morning is Sunday's night"
    );
    assert_eq!(
        carol_prod_at("2026-03-31T22:30:00Z"),
        1,
        "Tuesday night is not listed"
    );
}

#[test]
fn window_across_the_dst_change_in_berlin() {
    // sun 02:30-03:30 Europe/Berlin. On 2026-03-29 clocks jump from 02:00 CET to 03:00
    // CEST (01:00 UTC): 02:30-03:00 local does not exist, 03:00-03:30 CEST is
    // 01:00-01:30 UTC.
    assert_eq!(carol_prod_at("2026-03-29T00:45:00Z"), 1, "01:45 CET");
    assert_eq!(carol_prod_at("2026-03-29T01:00:00Z"), 0, "03:00 CEST");
    assert_eq!(carol_prod_at("2026-03-29T01:15:00Z"), 0, "03:15 CEST");
    assert_eq!(carol_prod_at("2026-03-29T01:30:00Z"), 1, "03:30 CEST");
    // A week earlier (CET, UTC+1) the same window is 01:30-02:30 UTC.
    assert_eq!(carol_prod_at("2026-03-22T01:15:00Z"), 1, "02:15 CET");
    assert_eq!(carol_prod_at("2026-03-22T01:45:00Z"), 0, "02:45 CET");
    assert_eq!(carol_prod_at("2026-03-22T02:30:00Z"), 1, "03:30 CET");
    // Autumn: 2026-10-25 03:00 CEST → 02:00 CET; 02:30-03:30 CET is 01:30-02:30 UTC and
    // 02:30 CEST (00:30 UTC) also counts.
    assert_eq!(carol_prod_at("2026-10-25T00:30:00Z"), 0, "02:30 CEST");
    assert_eq!(carol_prod_at("2026-10-25T02:15:00Z"), 0, "03:15 CET");
    assert_eq!(carol_prod_at("2026-10-25T02:30:00Z"), 1, "03:30 CET");
}

// ---------------------------------------------------------------- break-glass

#[test]
fn break_glass_allowed_and_capped() {
    let mut f = facts("alice", "app", "readonly");
    f.break_glass = true;
    let v = check(&f);
    assert_eq!(
        v,
        Verdict {
            rule: "app-read".into(),
            approvals_required: 0,
            auto_approved: None,
            break_glass: true,
            pending_timeout: SignedDuration::from_mins(30),
            max_duration: hours(1),
        }
    );
    // Even inside an auto-approval window, break-glass stays flagged.
    let mut f = facts("carol", "app", "readonly");
    f.break_glass = true;
    f.at = ts("2026-03-30T07:30:00Z");
    let v = check(&f);
    assert!(v.break_glass && v.auto_approved.is_none());
    // Within the rule's 8h but over break-glass' 1h.
    f.duration = hours(2);
    let m = invalid_request(&f);
    assert!(
        m.contains("1h break-glass access rule app-read allows"),
        "{m}"
    );
    // The rule's other requirements still hold.
    f.duration = hours(1);
    f.ticket = None;
    assert!(invalid_request(&f).contains("requires a ticket"));
}

#[test]
fn break_glass_only_where_the_rule_offers_it() {
    let mut f = facts("alice", "app", "readwrite");
    f.break_glass = true;
    let m = forbidden(rules().check_request(&f));
    assert!(
        m.contains("rule app-write offers no break-glass access"),
        "{m}"
    );
}

#[test]
fn break_glass_review() {
    let rules = rules();
    rules.check_reviewer("app-read", "alice", "dave").unwrap();
    rules.check_reviewer("app-read", "alice", "bob").unwrap(); // bob is also in security
    let m = forbidden(rules.check_reviewer("app-read", "alice", "carol"));
    assert!(m.contains("only members of group(s) security"), "{m}");
    let m = forbidden(rules.check_reviewer("app-read", "bob", "bob"));
    assert!(m.contains("cannot review their own break-glass use"), "{m}");
    assert!(m.contains("dave, frank"), "{m}");
    let m = forbidden(rules.check_reviewer("app-write", "alice", "dave"));
    assert!(m.contains("no longer has a break_glass section"), "{m}");
    let m = forbidden(rules.check_reviewer("gone", "alice", "dave"));
    assert!(m.contains("no longer exists"), "{m}");
    assert_eq!(rules.reviewers("app-read", "bob"), ["dave", "frank"]);
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_allowed_request() {
    let e = rules().explain("alice", "app", "readonly", ts(SATURDAY));
    assert!(e.allowed);
    assert!(e.denial.is_none());
    let text = e.to_string();
    for phrase in [
        "alice may request role readonly on target app under rule app-read",
        "alice is in group(s): dbas",
        "rule #1 in order",
        "alice is in group dbas",
        "max duration:    8h",
        "reason:          required",
        r"the whole ticket must match ^(INC|CHG)-\d+$",
        "1 from group(s) dbas, security; the requester cannot approve their own request",
        "approvers:       bob, dave, frank",
        "pending timeout: 30m",
        "for group oncall, inside mon-fri 09:00-18:00 Europe/Berlin; does not apply to alice",
        "break-glass:     available, up to 1h; reviewed afterwards by group(s) security (bob, dave, frank)",
        "jitgate request --target app --role readonly --for 8h --reason \"<why>\" --ticket <ticket>",
    ] {
        assert!(text.contains(phrase), "missing {phrase:?} in\n{text}");
    }
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["allowed"], true);
    assert_eq!(json["rule"]["name"], "app-read");
    assert_eq!(json["rule"]["approvals_required"], 1);
    assert_eq!(
        json["rule"]["approvers"],
        serde_json::json!(["bob", "dave", "frank"])
    );
    assert_eq!(
        json["rule"]["approver_groups"],
        serde_json::json!(["dbas", "security"])
    );
    assert_eq!(
        json["rule"]["break_glass"]["review_by"],
        serde_json::json!(["security"])
    );
    assert_eq!(json["rule"]["auto_approve"]["applies_to_identity"], false);
    assert!(json["denial"].is_null());
}

#[test]
fn explain_auto_approval_now_or_not() {
    let rules = rules();
    let inside = rules.explain("carol", "app", "readonly", ts("2026-03-30T07:30:00Z"));
    let auto = inside.rule.as_ref().unwrap().auto_approve.as_ref().unwrap();
    assert!(auto.applies_to_identity && auto.applies_now);
    assert!(
        inside.to_string().contains("applies to carol now"),
        "{inside}"
    );
    let outside = rules.explain("carol", "app", "readonly", ts(SATURDAY));
    let auto = outside
        .rule
        .as_ref()
        .unwrap()
        .auto_approve
        .as_ref()
        .unwrap();
    assert!(auto.applies_to_identity && !auto.applies_now);
    assert!(
        outside
            .to_string()
            .contains("applies to carol but not now (2026-03-28T10:00:00Z is outside the windows)"),
        "{outside}"
    );
    // No approvals block: approved at once; no break-glass.
    let text = rules
        .explain("erin", "reports", "readonly", ts(SATURDAY))
        .to_string();
    assert!(
        text.contains("approvals:       none needed; approved at once"),
        "{text}"
    );
    assert!(text.contains("break-glass:     not available"), "{text}");
    assert!(text.contains("reason:          optional"), "{text}");
    assert!(text.contains("erin is named in the rule"), "{text}");
}

fn denial(identity: &str, target: &str, role: &str) -> (Denial, String) {
    let e = rules().explain(identity, target, role, ts(SATURDAY));
    assert!(!e.allowed && e.rule.is_none());
    (e.denial.clone().unwrap(), e.to_string())
}

#[test]
fn explain_unknown_names() {
    let (d, text) = denial("zed", "app", "readonly");
    assert_eq!(d, Denial::UnknownIdentity);
    assert!(
        text.contains("identity zed is not in the jitgate configuration"),
        "{text}"
    );
    let (d, text) = denial("erin", "nowhere", "readonly");
    assert!(matches!(d, Denial::UnknownTarget { .. }));
    assert!(
        text.contains("target nowhere is not in the jitgate configuration (configured targets: app, archive, prod, reports)"),
        "{text}"
    );
    let (d, text) = denial("dave", "prod", "readwrite");
    assert!(matches!(d, Denial::UnknownRole { .. }));
    assert!(
        text.contains("target prod has no role readwrite (its roles: admin, readonly)"),
        "{text}"
    );
}

#[test]
fn explain_no_rule_names_the_identity() {
    let (d, text) = denial("mallory", "app", "readonly");
    assert!(matches!(d, Denial::NoRuleForIdentity { .. }));
    assert!(
        text.contains("no rule names mallory or any group mallory is in"),
        "{text}"
    );
    assert!(text.contains("mallory is in group(s): none"), "{text}");
    assert!(
        text.contains("rules covering role readonly on target app:"),
        "{text}"
    );
    assert!(
        text.contains("app-read: requesters group dbas, group oncall, identity erin"),
        "{text}"
    );
    let json =
        serde_json::to_value(rules().explain("mallory", "app", "readonly", ts(SATURDAY))).unwrap();
    assert_eq!(json["denial"]["kind"], "no_rule_for_identity");
    assert_eq!(json["allowed"], false);
}

#[test]
fn explain_rules_for_other_requesters() {
    // carol has rules (oncall), but app/readwrite is only for dbas.
    let (d, text) = denial("carol", "app", "readwrite");
    match &d {
        Denial::NotARequester { rules } => {
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].name, "app-write");
            assert_eq!(rules[0].requesters, ["group dbas"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("(app-write) are for other requesters"),
        "{text}"
    );
}

#[test]
fn explain_rules_exist_but_not_for_this_target() {
    // alice's rules (app-read, app-write) are for app; nobody's rule covers archive/admin.
    let (d, text) = denial("alice", "archive", "admin");
    match &d {
        Denial::NoRuleForTarget { rules } => {
            let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(names, ["app-read", "app-write"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(text.contains("do not cover target archive"), "{text}");
    assert!(text.contains("app-read: requesters"), "{text}");
}

#[test]
fn explain_rules_exist_for_the_target_but_not_this_role() {
    let (d, text) = denial("alice", "app", "admin");
    match &d {
        Denial::NoRuleForRole { rules } => {
            let got: Vec<(&str, &[String])> = rules
                .iter()
                .map(|r| (r.name.as_str(), r.roles.as_slice()))
                .collect();
            assert_eq!(
                got,
                [
                    ("app-read", &["readonly".to_string()][..]),
                    ("app-write", &["readwrite".to_string()][..])
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains(
            "the rules for alice on target app (app-read, app-write) do not cover role admin"
        ),
        "{text}"
    );
    assert!(text.contains("roles readonly"), "{text}");
    assert!(text.contains("roles readwrite"), "{text}");
    // The same reason reaches the requester as a Forbidden error.
    let m = forbidden(rules().check_request(&facts("alice", "app", "admin")));
    assert!(m.contains("do not cover role admin"), "{m}");
}

#[test]
fn explain_without_rules() {
    let e = Rules::default().explain("alice", "app", "readonly", ts(SATURDAY));
    assert_eq!(e.denial, Some(Denial::NoRules));
    assert!(
        e.to_string().contains("the policy has no approval rules"),
        "{e}"
    );
}
