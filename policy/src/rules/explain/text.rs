//! The human-readable side of `explain`: one-clause reasons and the multi-line text.

use std::fmt;

use super::{AutoApproveExplanation, Denial, Explanation, RuleExplanation, RuleSummary};
use crate::rules::check::or_nobody;

impl Denial {
    /// The reason in one clause, for the summary line and `Forbidden` errors.
    pub fn headline(&self, identity: &str, target: &str, role: &str) -> String {
        match self {
            Denial::NoRules => "the policy has no approval rules, so nobody can request \
                 access; an administrator can issue a grant directly"
                .to_owned(),
            Denial::UnknownIdentity => {
                format!("identity {identity} is not in the jitgate configuration")
            }
            Denial::UnknownTarget { known_targets } => format!(
                "target {target} is not in the jitgate configuration (configured targets: {})",
                or_none(known_targets)
            ),
            Denial::UnknownRole { known_roles } => format!(
                "target {target} has no role {role} (its roles: {})",
                or_none(known_roles)
            ),
            Denial::NoRuleForIdentity { .. } => {
                format!("no rule names {identity} or any group {identity} is in")
            }
            Denial::NotARequester { rules } => format!(
                "the rules for role {role} on target {target} ({}) are for other requesters",
                names(rules)
            ),
            Denial::NoRuleForTarget { rules } => format!(
                "the rules {identity} may request under ({}) do not cover target {target}",
                names(rules)
            ),
            Denial::NoRuleForRole { rules } => format!(
                "the rules for {identity} on target {target} ({}) do not cover role {role}",
                names(rules)
            ),
        }
    }
}

impl fmt::Display for Explanation {
    /// A summary line, then indented details; ends with a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary)?;
        writeln!(
            f,
            "  {} is in group(s): {}",
            self.identity,
            or_none(&self.groups)
        )?;
        if let Some(rule) = &self.rule {
            write_rule(f, self, rule)?;
        }
        if let Some(denial) = &self.denial {
            write_denial(f, self, denial)?;
        }
        Ok(())
    }
}

fn write_rule(f: &mut fmt::Formatter<'_>, e: &Explanation, r: &RuleExplanation) -> fmt::Result {
    writeln!(
        f,
        "  rule:            {} (rule #{} in order; the first matching rule applies: {})",
        r.name, r.position, r.matched_because
    )?;
    writeln!(
        f,
        "  max duration:    {:#} per request or extension",
        r.max_duration
    )?;
    let reason = if r.reason_required {
        "required"
    } else {
        "optional"
    };
    writeln!(f, "  reason:          {reason}")?;
    match &r.ticket_pattern {
        Some(p) => writeln!(
            f,
            "  ticket:          required; the whole ticket must match {p}"
        )?,
        None => writeln!(f, "  ticket:          not required")?,
    }
    write_approvals(f, r)?;
    match &r.auto_approve {
        None => writeln!(f, "  auto-approval:   none")?,
        Some(a) => writeln!(f, "  auto-approval:   {}", auto_approval(e, a))?,
    }
    match &r.break_glass {
        None => writeln!(f, "  break-glass:     not available")?,
        Some(b) => writeln!(
            f,
            "  break-glass:     available, up to {:#}; reviewed afterwards by group(s) {} ({})",
            b.max_duration,
            b.review_by.join(", "),
            or_nobody(&b.reviewers)
        )?,
    }
    writeln!(f, "  request with:    {}", request_command(e, r))
}

/// How many approvals the rule needs, from whom, and how long a request waits for them.
fn write_approvals(f: &mut fmt::Formatter<'_>, r: &RuleExplanation) -> fmt::Result {
    if r.approvals_required == 0 {
        return writeln!(f, "  approvals:       none needed; approved at once");
    }
    let own = if r.self_approval {
        "the requester may approve their own request"
    } else {
        "the requester cannot approve their own request"
    };
    writeln!(
        f,
        "  approvals:       {} from group(s) {}; {own}",
        r.approvals_required,
        r.approver_groups.join(", ")
    )?;
    writeln!(f, "  approvers:       {}", or_nobody(&r.approvers))?;
    writeln!(
        f,
        "  pending timeout: {:#} (a request not approved by then lapses)",
        r.pending_timeout
    )
}

/// Who is auto-approved and when, and whether that applies to the identity now.
fn auto_approval(e: &Explanation, a: &AutoApproveExplanation) -> String {
    let who = a
        .groups
        .iter()
        .map(|g| format!("group {g}"))
        .chain(a.identities.iter().map(|i| format!("identity {i}")))
        .collect::<Vec<_>>()
        .join(", ");
    let when = if a.windows.is_empty() {
        "at any time".to_owned()
    } else {
        format!("inside {}", a.windows.join("; "))
    };
    let now = match (a.applies_to_identity, a.applies_now) {
        (false, _) => format!("does not apply to {}", e.identity),
        (true, true) => format!("applies to {} now ({})", e.identity, e.at),
        (true, false) => format!(
            "applies to {} but not now ({} is outside the windows)",
            e.identity, e.at
        ),
    };
    format!("for {who}, {when}; {now}")
}

/// The `jitgate request` command line that the rule would accept.
fn request_command(e: &Explanation, r: &RuleExplanation) -> String {
    let mut cmd = format!(
        "jitgate request --target {} --role {} --for {:#}",
        e.target, e.role, r.max_duration
    );
    if r.reason_required {
        cmd.push_str(" --reason \"<why>\"");
    }
    if r.ticket_pattern.is_some() {
        cmd.push_str(" --ticket <ticket>");
    }
    cmd
}

fn write_denial(f: &mut fmt::Formatter<'_>, e: &Explanation, d: &Denial) -> fmt::Result {
    let rules_line = |f: &mut fmt::Formatter<'_>, r: &RuleSummary| {
        writeln!(
            f,
            "    {}: requesters {}; targets {}; roles {}",
            r.name,
            or_none(&r.requesters),
            r.targets.join(", "),
            r.roles.join(", ")
        )
    };
    let hint = match d {
        Denial::NoRules => "add rules under policy.rules in jitgate.yaml, or ask an \
             administrator for a grant"
            .to_owned(),
        Denial::UnknownIdentity => {
            "check the name, or ask an administrator to add the identity".to_owned()
        }
        Denial::UnknownTarget { .. } | Denial::UnknownRole { .. } => {
            "check the name against the configured ones".to_owned()
        }
        Denial::NoRuleForIdentity { rules_for_access } => {
            if rules_for_access.is_empty() {
                writeln!(
                    f,
                    "  no rule covers role {} on target {} for anyone",
                    e.role, e.target
                )?;
            } else {
                writeln!(
                    f,
                    "  rules covering role {} on target {}:",
                    e.role, e.target
                )?;
                for r in rules_for_access {
                    rules_line(f, r)?;
                }
            }
            format!(
                "ask to be added to a requesting group, or ask an administrator to change the \
                 policy or issue a grant to {} directly",
                e.identity
            )
        }
        Denial::NotARequester { rules } => {
            writeln!(
                f,
                "  rules covering role {} on target {}:",
                e.role, e.target
            )?;
            for r in rules {
                rules_line(f, r)?;
            }
            "ask to be added to one of their requesting groups, or ask an administrator for \
             a grant"
                .to_owned()
        }
        Denial::NoRuleForTarget { rules } => {
            writeln!(f, "  rules {} may request under:", e.identity)?;
            for r in rules {
                rules_line(f, r)?;
            }
            "request one of those targets, or ask an administrator to change the policy".to_owned()
        }
        Denial::NoRuleForRole { rules } => {
            writeln!(f, "  rules for {} on target {}:", e.identity, e.target)?;
            for r in rules {
                rules_line(f, r)?;
            }
            "request one of those roles, or ask an administrator to change the policy".to_owned()
        }
    };
    writeln!(f, "  next step:       {hint}")
}

/// Rule names, comma-separated.
fn names(rules: &[RuleSummary]) -> String {
    rules
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `a, b` or `none`.
fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
