//! Decisions: may this request be filed (and how does it proceed), may this person approve
//! it, may this person review a break-glass use.

use jiff::SignedDuration;

use super::{RequestFacts, Rule, Rules, Verdict};
use crate::error::PolicyError;

impl Rules {
    /// Checks a request (or an extension: same check, `duration` = the time added) and says
    /// how it proceeds.
    ///
    /// The first rule matching (identity, target, role) applies; without one the request is
    /// [`PolicyError::Forbidden`]. Then, in order: reason, ticket and duration
    /// ([`PolicyError::InvalidRequest`] naming what the rule wants), break-glass, and
    /// auto-approval.
    pub fn check_request(&self, req: &RequestFacts<'_>) -> Result<Verdict, PolicyError> {
        if !self.is_empty() {
            if let Some(unknown) = self.unknown_name(req.identity, req.target, req.role) {
                return Err(unknown.into_error(req.identity, req.target, req.role));
            }
        }
        let groups = self.groups_of(req.identity);
        let Some((rule, _)) = self.first_match(req.identity, &groups, req.target, req.role) else {
            let denial = self.denial(req.identity, &groups, req.target, req.role);
            return Err(PolicyError::Forbidden(format!(
                "no rule lets {identity} request role {role} on target {target}: {why}; \
                 see the details with: jitgate policy explain --identity {identity} \
                 --target {target} --role {role}",
                identity = req.identity,
                role = req.role,
                target = req.target,
                why = denial.headline(req.identity, req.target, req.role),
            )));
        };
        check_reason(rule, req.reason)?;
        check_ticket(rule, req.ticket)?;
        check_duration(rule, req.duration)?;
        let mut verdict = Verdict {
            rule: rule.name.clone(),
            approvals_required: rule.approvals,
            auto_approved: None,
            break_glass: false,
            pending_timeout: rule.pending_timeout,
            max_duration: rule.max_duration,
        };
        if req.break_glass {
            let Some(bg) = &rule.break_glass else {
                return Err(PolicyError::Forbidden(format!(
                    "rule {} offers no break-glass access; file a normal request (without \
                     --break-glass) and get it approved",
                    rule.name
                )));
            };
            if req.duration > bg.max_duration {
                return Err(PolicyError::InvalidRequest(format!(
                    "duration {:#} is longer than the {:#} break-glass access rule {} allows; \
                     ask for {:#} or less",
                    req.duration, bg.max_duration, rule.name, bg.max_duration
                )));
            }
            verdict.approvals_required = 0;
            verdict.break_glass = true;
            verdict.max_duration = bg.max_duration;
        } else if let Some(why) = rule.auto_approval(req.identity, &groups, req.at) {
            verdict.approvals_required = 0;
            verdict.auto_approved = Some(why);
        } else if rule.approvals == 0 {
            verdict.auto_approved = Some(format!("no approval required by rule {}", rule.name));
        }
        Ok(verdict)
    }

    /// May `approver` approve (or deny) a request that `requester` made under `rule`?
    ///
    /// [`PolicyError::Forbidden`] says why not: the rule no longer exists, the approver is
    /// not in the rule's `approvals.from` groups, or the rule does not allow self-approval.
    pub fn check_approver(
        &self,
        rule: &str,
        requester: &str,
        approver: &str,
    ) -> Result<(), PolicyError> {
        let r = self.existing(rule)?;
        if approver == requester && !r.self_approval {
            return Err(PolicyError::Forbidden(format!(
                "{approver} cannot approve or deny their own request: rule {rule} does not \
                 allow self-approval; ask one of: {}",
                or_nobody(&self.approvers(rule, requester))
            )));
        }
        if r.approvers_from.is_empty() {
            return Err(PolicyError::Forbidden(format!(
                "rule {rule} names no approvers (it has no approvals.from groups), so nobody \
                 can approve or deny requests under it"
            )));
        }
        let groups = self.groups_of(approver);
        if !r.approvers_from.iter().any(|g| groups.contains(g)) {
            return Err(PolicyError::Forbidden(format!(
                "{approver} may not approve or deny requests under rule {rule}: only members \
                 of group(s) {} may (they are: {})",
                r.approvers_from.join(", "),
                or_nobody(&self.approvers(rule, requester))
            )));
        }
        Ok(())
    }

    /// May `reviewer` mark a break-glass use by `requester` under `rule` reviewed? Only
    /// members of the rule's `break_glass.review_by` groups, and never the requester.
    pub fn check_reviewer(
        &self,
        rule: &str,
        requester: &str,
        reviewer: &str,
    ) -> Result<(), PolicyError> {
        let r = self.existing(rule)?;
        let Some(bg) = &r.break_glass else {
            return Err(PolicyError::Forbidden(format!(
                "rule {rule} no longer has a break_glass section, so nobody is named to review \
                 break-glass use under it; ask an administrator"
            )));
        };
        if reviewer == requester {
            return Err(PolicyError::Forbidden(format!(
                "{reviewer} cannot review their own break-glass use; ask one of: {}",
                or_nobody(&self.reviewers(rule, requester))
            )));
        }
        let groups = self.groups_of(reviewer);
        if !bg.review_by.iter().any(|g| groups.contains(g)) {
            return Err(PolicyError::Forbidden(format!(
                "{reviewer} may not review break-glass use under rule {rule}: only members of \
                 group(s) {} may (they are: {})",
                bg.review_by.join(", "),
                or_nobody(&self.reviewers(rule, requester))
            )));
        }
        Ok(())
    }

    fn existing(&self, rule: &str) -> Result<&Rule, PolicyError> {
        self.rule(rule).ok_or_else(|| {
            PolicyError::Forbidden(format!(
                "rule {rule:?} no longer exists in the policy (the config was changed); \
                 nobody can approve or review under it, so the requester should ask again \
                 under the current rules"
            ))
        })
    }
}

fn check_reason(rule: &Rule, reason: Option<&str>) -> Result<(), PolicyError> {
    if rule.reason_required && reason.map(str::trim).filter(|r| !r.is_empty()).is_none() {
        return Err(PolicyError::InvalidRequest(format!(
            "rule {} requires a reason: say why you need access (--reason \"<why>\")",
            rule.name
        )));
    }
    Ok(())
}

fn check_ticket(rule: &Rule, ticket: Option<&str>) -> Result<(), PolicyError> {
    let Some(pattern) = &rule.ticket else {
        return Ok(());
    };
    match ticket.map(str::trim).filter(|t| !t.is_empty()) {
        None => Err(PolicyError::InvalidRequest(format!(
            "rule {} requires a ticket matching {} (--ticket <ticket>)",
            rule.name, pattern.pattern
        ))),
        Some(t) if !pattern.regex.is_match(t) => Err(PolicyError::InvalidRequest(format!(
            "ticket {t:?} does not match the pattern {} that rule {} requires; give the \
             ticket id exactly, e.g. as your ticket system shows it",
            pattern.pattern, rule.name
        ))),
        Some(_) => Ok(()),
    }
}

fn check_duration(rule: &Rule, duration: SignedDuration) -> Result<(), PolicyError> {
    if duration <= SignedDuration::ZERO {
        return Err(PolicyError::InvalidRequest(format!(
            "duration must be longer than zero (rule {} allows up to {:#})",
            rule.name, rule.max_duration
        )));
    }
    if duration > rule.max_duration {
        return Err(PolicyError::InvalidRequest(format!(
            "duration {duration:#} is longer than the {:#} rule {} allows; ask for {:#} or \
             less (and extend later if needed)",
            rule.max_duration, rule.name, rule.max_duration
        )));
    }
    Ok(())
}

/// `a, b` or `nobody`.
pub(crate) fn or_nobody(names: &[String]) -> String {
    if names.is_empty() {
        "nobody".to_owned()
    } else {
        names.join(", ")
    }
}
