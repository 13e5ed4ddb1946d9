//! The grant state machine: activity window boundaries, effective state, remaining time.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::{at_min, grant};
use jitgate_policy::{GrantState, SignedDuration};

#[test]
fn active_window_is_not_before_inclusive_and_expires_at_exclusive() {
    let g = grant("alice", "prod", "ro", at_min(10), at_min(40));
    let ns = SignedDuration::from_nanos(1);
    assert!(!g.is_active(at_min(10).checked_sub(ns).unwrap()));
    assert!(g.is_active(at_min(10)));
    assert!(g.is_active(at_min(25)));
    assert!(g.is_active(at_min(40).checked_sub(ns).unwrap()));
    assert!(!g.is_active(at_min(40)));
    assert!(!g.is_active(at_min(41)));
}

#[test]
fn only_approved_grants_are_active() {
    for state in GrantState::ALL {
        let mut g = grant("alice", "prod", "ro", at_min(0), at_min(30));
        g.state = state;
        assert_eq!(
            g.is_active(at_min(5)),
            state == GrantState::Approved,
            "{state}"
        );
        assert_eq!(
            g.remaining(at_min(5)).is_some(),
            state == GrantState::Approved
        );
    }
}

#[test]
fn effective_state_reports_expiry_of_approved_grants_only() {
    let mut g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    assert_eq!(
        g.effective_state(at_min(-5)),
        GrantState::Approved,
        "not started yet"
    );
    assert_eq!(g.effective_state(at_min(29)), GrantState::Approved);
    assert_eq!(g.effective_state(at_min(30)), GrantState::Expired);
    assert_eq!(g.effective_state(at_min(300)), GrantState::Expired);
    for state in [
        GrantState::Pending,
        GrantState::Denied,
        GrantState::Revoked,
        GrantState::Expired,
    ] {
        g.state = state;
        assert_eq!(g.effective_state(at_min(300)), state);
        assert_eq!(g.effective_state(at_min(5)), state);
    }
}

#[test]
fn remaining_counts_to_absolute_expiry_and_is_none_outside_window() {
    let g = grant("alice", "prod", "ro", at_min(0), at_min(30));
    assert_eq!(g.remaining(at_min(0)), Some(SignedDuration::from_mins(30)));
    assert_eq!(g.remaining(at_min(20)), Some(SignedDuration::from_mins(10)));
    assert_eq!(g.remaining(at_min(30)), None);
    assert_eq!(g.remaining(at_min(-1)), None);
}

#[test]
fn state_names_round_trip_through_serde_display_and_parse() {
    for state in GrantState::ALL {
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, format!("\"{}\"", state.as_str()));
        assert_eq!(serde_json::from_str::<GrantState>(&json).unwrap(), state);
        assert_eq!(state.to_string().parse::<GrantState>().unwrap(), state);
    }
    assert!("Approved".parse::<GrantState>().is_err());
}
