//! [`Rules::from_spec`](super::Rules::from_spec): checks every field of the `policy:` section
//! and reports the first mistake with its path (`rules[0].approvals.from[1]`).
//!
//! Beyond syntax it checks that the rules can work: every identity, group, target and role
//! named exists; durations fit jitgate's limits; ticket patterns compile; the required
//! number of approvals can be reached by people other than the requester; every
//! break-glass use has someone else to review it.
//!
//! `lists` checks names (identities, groups, targets, roles); `workflow` checks what a
//! rule demands (ticket, approvals, auto-approval, break-glass).

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;

use super::rule::Rule;
use super::spec::{ReasonSpec, RuleSpec, RulesSpec};
use super::Rules;
use crate::catalog::{Catalog, MAX_GRANT_DURATION};
use crate::error::PolicyError;

mod lists;
mod workflow;

/// Pending requests lapse after this unless `pending_timeout` says otherwise.
const DEFAULT_PENDING_TIMEOUT: SignedDuration = SignedDuration::from_hours(1);

type Groups = BTreeMap<String, BTreeSet<String>>;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::InvalidPolicy {
        field: field.into(),
        message: message.into(),
    }
}

impl Rules {
    /// Validates `spec` against what the config defines; see the [module docs](super).
    pub fn from_spec(spec: &RulesSpec, catalog: &Catalog) -> Result<Rules, PolicyError> {
        build(spec, catalog)
    }
}

/// Builds validated rules from the spec.
fn build(spec: &RulesSpec, catalog: &Catalog) -> Result<Rules, PolicyError> {
    let groups = groups(spec, catalog)?;
    let mut rules: Vec<Rule> = Vec::with_capacity(spec.rules.len());
    for (i, raw) in spec.rules.iter().enumerate() {
        let cx = Cx {
            at: format!("rules[{i}]"),
            catalog,
            groups: &groups,
        };
        let rule = cx.rule(raw)?;
        if let Some(j) = rules.iter().position(|r| r.name == rule.name) {
            return Err(invalid(
                format!("rules[{i}].name"),
                format!(
                    "rule name {:?} is already used by rules[{j}]; give each rule its own name",
                    rule.name
                ),
            ));
        }
        rules.push(rule);
    }
    Ok(Rules {
        rules,
        groups,
        catalog: catalog.clone(),
    })
}

/// `policy.groups`: valid names, known identities, no duplicates.
fn groups(spec: &RulesSpec, catalog: &Catalog) -> Result<Groups, PolicyError> {
    let mut out = Groups::new();
    for (name, members) in &spec.groups {
        let at = format!("groups.{name}");
        check_name(&at, "group", name)?;
        let mut set = BTreeSet::new();
        for (k, member) in members.iter().enumerate() {
            let field = format!("{at}[{k}]");
            check_identity(&field, catalog, member)?;
            if !set.insert(member.clone()) {
                return Err(invalid(
                    field,
                    format!("{member} is listed twice in group {name}; remove one"),
                ));
            }
        }
        out.insert(name.clone(), set);
    }
    Ok(out)
}

/// Names of rules and groups: short, no spaces, safe in CLI arguments and messages.
fn check_name(field: &str, what: &str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{what} name {name:?} is not valid; use 1 to 64 letters, digits, '-', '_' or \
                 '.', e.g. app-read"
            ),
        ))
    }
}

fn check_identity(field: &str, catalog: &Catalog, identity: &str) -> Result<(), PolicyError> {
    if catalog.identities.contains(identity) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "unknown identity {identity:?}: it is not defined under identities:; check the \
                 spelling or add the identity"
            ),
        ))
    }
}

/// A duration (see [`crate::duration`]) no longer than [`MAX_GRANT_DURATION`].
fn duration(field: &str, text: &str) -> Result<SignedDuration, PolicyError> {
    let d = crate::duration::parse_duration(text).map_err(|why| invalid(field, why))?;
    if d > MAX_GRANT_DURATION {
        return Err(invalid(
            field,
            format!(
                "{d:#} is longer than the {MAX_GRANT_DURATION:#} jitgate allows for any grant; \
                 use {MAX_GRANT_DURATION:#} or less"
            ),
        ));
    }
    Ok(d)
}

/// Validation context for one rule.
struct Cx<'a> {
    /// `rules[i]`.
    at: String,
    catalog: &'a Catalog,
    groups: &'a Groups,
}

impl Cx<'_> {
    fn field(&self, rest: &str) -> String {
        format!("{}.{rest}", self.at)
    }

    fn rule(&self, raw: &RuleSpec) -> Result<Rule, PolicyError> {
        check_name(&self.field("name"), "rule", &raw.name)?;
        let requesters = self.requesters(&raw.requesters)?;
        let targets = self.targets(&raw.targets)?;
        let roles = self.roles(&raw.roles, &targets)?;
        let max_duration = duration(&self.field("max_duration"), &raw.max_duration)?;
        let ticket = raw.ticket.as_deref().map(|p| self.ticket(p)).transpose()?;
        let pending_timeout = match &raw.pending_timeout {
            Some(t) => duration(&self.field("pending_timeout"), t)?,
            None => DEFAULT_PENDING_TIMEOUT,
        };
        let auto_approve = raw
            .auto_approve
            .as_ref()
            .map(|a| self.auto_approve(a, &requesters))
            .transpose()?;
        let (approvals, approvers_from) = match &raw.approvals {
            Some(a) => self.approvals(a, raw.self_approval, &requesters, auto_approve.as_ref())?,
            None => (0, Vec::new()),
        };
        let break_glass = raw
            .break_glass
            .as_ref()
            .map(|b| self.break_glass(b, max_duration, &requesters))
            .transpose()?;
        Ok(Rule {
            name: raw.name.clone(),
            requesters,
            targets,
            roles,
            max_duration,
            reason_required: raw.reason == ReasonSpec::Required,
            ticket,
            approvals,
            approvers_from,
            self_approval: raw.self_approval,
            pending_timeout,
            auto_approve,
            break_glass,
        })
    }
}
