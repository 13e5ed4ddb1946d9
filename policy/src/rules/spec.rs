//! The `policy:` section of `jitgate.yaml` exactly as written: serde types, no checks.
//!
//! Every struct denies unknown fields, so a misspelt key (`aprovals:`) is an error at load
//! time instead of a silently ignored setting. [`Rules::from_spec`](super::Rules::from_spec)
//! turns these into validated [`Rules`](super::Rules).
//!
//! ```yaml
//! policy:
//!   groups:
//!     dbas: [alice, bob]
//!   rules:
//!     - name: app-read
//!       requesters: { groups: [dbas] }
//!       targets: [app]
//!       roles: [readonly]
//!       max_duration: 8h
//!       approvals: { count: 1, from: [dbas] }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// `policy:` — groups of identities and the ordered approval rules.
///
/// The default (no groups, no rules) lets nobody request access; administrators still
/// issue grants directly.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesSpec {
    /// `policy.groups`: group name → member identities.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `policy.rules`: evaluated in order; the first rule matching (requester, target,
    /// role) applies.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// `policy.rules[i]`: who may request what, for how long, and who must approve.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name; requests record it, approvers see it.
    pub name: String,
    /// Who may request under this rule.
    pub requesters: RequestersSpec,
    /// Target names, or `["*"]` for every target.
    pub targets: Vec<String>,
    /// Role names, or `["*"]` for every role of the targets.
    pub roles: Vec<String>,
    /// Longest access one request (or one extension) may ask for, e.g. `8h`.
    pub max_duration: String,
    /// Whether a reason must be given; default `required`.
    #[serde(default)]
    pub reason: ReasonSpec,
    /// A regex the whole ticket must match; when set, a ticket is required.
    #[serde(default)]
    pub ticket: Option<String>,
    /// How many approvals, from which groups; omitted = approved at once.
    #[serde(default)]
    pub approvals: Option<ApprovalsSpec>,
    /// Whether the requester may count as one of their own approvers; default `false`.
    #[serde(default)]
    pub self_approval: bool,
    /// How long a request may wait for approvals before it lapses; default `1h`.
    #[serde(default)]
    pub pending_timeout: Option<String>,
    /// Requesters approved without approvers (optionally only inside time windows).
    #[serde(default)]
    pub auto_approve: Option<AutoApproveSpec>,
    /// Emergency access without approval, flagged and reviewed afterwards.
    #[serde(default)]
    pub break_glass: Option<BreakGlassSpec>,
}

/// `rules[i].requesters`: identities and groups allowed to request under the rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestersSpec {
    /// Identities named one by one.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Groups from `policy.groups`; all their members may request.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `rules[i].reason`: whether a request must say why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasonSpec {
    /// A non-blank reason is required (the default).
    #[default]
    Required,
    /// A reason may be given.
    Optional,
}

/// `rules[i].approvals`: `count` approvals from members of the `from` groups.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSpec {
    /// How many distinct approvers; 0 = approved at once.
    pub count: u32,
    /// Groups whose members may approve (and deny).
    #[serde(default)]
    pub from: Vec<String>,
}

/// `rules[i].auto_approve`: requesters approved without approvers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveSpec {
    /// Groups whose members are auto-approved.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Identities that are auto-approved.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Only inside one of these windows; omitted or empty = any time.
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
}

/// `auto_approve.windows[j]`: e.g. `{ days: [mon-fri], from: "09:00", to: "18:00" }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Days the window starts on: `mon`…`sun` (or full names) and ranges like `mon-fri`;
    /// omitted = every day.
    #[serde(default)]
    pub days: Option<Vec<String>>,
    /// Local start time, `HH:MM`.
    pub from: String,
    /// Local end time, `HH:MM` (`24:00` = midnight); earlier than `from` = overnight.
    pub to: String,
    /// IANA time zone name, e.g. `Europe/Berlin`; default `UTC`.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// `rules[i].break_glass`: immediate access without approval, reviewed afterwards.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassSpec {
    /// Longest break-glass access, e.g. `1h`.
    pub max_duration: String,
    /// Groups whose members may mark a break-glass use reviewed.
    pub review_by: Vec<String>,
}
