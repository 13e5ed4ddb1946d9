//! One validated approval rule and the parts it is made of.

use jiff::{SignedDuration, Timestamp};
use regex::Regex;

use super::matcher::{Members, Names};
use super::window::Window;

/// A validated rule from `policy.rules`: who may request which targets and roles, for how
/// long, with what justification, and who must approve.
#[derive(Clone, Debug)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) requesters: Members,
    pub(crate) targets: Names,
    pub(crate) roles: Names,
    pub(crate) max_duration: SignedDuration,
    pub(crate) reason_required: bool,
    pub(crate) ticket: Option<Ticket>,
    /// Approvals needed; 0 when the rule has no (or a zero-count) approvals block.
    pub(crate) approvals: u32,
    /// Groups whose members may approve and deny; sorted.
    pub(crate) approvers_from: Vec<String>,
    pub(crate) self_approval: bool,
    pub(crate) pending_timeout: SignedDuration,
    pub(crate) auto_approve: Option<AutoApprove>,
    pub(crate) break_glass: Option<BreakGlass>,
}

/// A ticket pattern: shown as written, matched against the whole ticket.
#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    /// As written in the config.
    pub(crate) pattern: String,
    /// `^(?:pattern)$`, so a ticket cannot pass by merely containing a match.
    pub(crate) regex: Regex,
}

/// Who is approved without approvers, and when.
#[derive(Clone, Debug)]
pub(crate) struct AutoApprove {
    /// The requesters it applies to.
    pub(crate) who: Members,
    /// Empty = any time.
    pub(crate) windows: Vec<Window>,
}

/// Whether auto-approval's time condition holds at some instant.
pub(crate) enum WindowState<'a> {
    /// The rule has no windows: any time.
    Always,
    /// Inside this window.
    Inside(&'a Window),
    /// Outside every window.
    Outside,
}

impl AutoApprove {
    /// Where `at` stands with respect to the windows.
    pub(crate) fn window_at(&self, at: Timestamp) -> WindowState<'_> {
        if self.windows.is_empty() {
            return WindowState::Always;
        }
        self.windows
            .iter()
            .find(|w| w.contains(at))
            .map_or(WindowState::Outside, WindowState::Inside)
    }

    /// The windows as text, e.g. `["mon-fri 09:00-18:00 Europe/Berlin"]`.
    pub(crate) fn windows_text(&self) -> Vec<String> {
        self.windows.iter().map(ToString::to_string).collect()
    }
}

/// Emergency access without approval.
#[derive(Clone, Debug)]
pub(crate) struct BreakGlass {
    /// Longest break-glass access (≤ the rule's `max_duration`).
    pub(crate) max_duration: SignedDuration,
    /// Groups whose members may mark a use reviewed; sorted.
    pub(crate) review_by: Vec<String>,
}

impl Rule {
    /// The rule's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Longest access one request (or one extension) may ask for.
    pub fn max_duration(&self) -> SignedDuration {
        self.max_duration
    }

    /// How many distinct approvers a request needs (0 = none).
    pub fn approvals_required(&self) -> u32 {
        self.approvals
    }

    /// Groups whose members may approve or deny requests under this rule (sorted).
    pub fn approval_groups(&self) -> &[String] {
        &self.approvers_from
    }

    /// How long a request may stay pending before it lapses.
    pub fn pending_timeout(&self) -> SignedDuration {
        self.pending_timeout
    }

    /// Whether a request must give a non-blank reason.
    pub fn reason_required(&self) -> bool {
        self.reason_required
    }

    /// The ticket pattern as configured; when set, a ticket is required and the whole
    /// ticket must match it.
    pub fn ticket_pattern(&self) -> Option<&str> {
        self.ticket.as_ref().map(|t| t.pattern.as_str())
    }

    /// Longest break-glass access, or `None` when the rule offers no break-glass.
    pub fn break_glass_max(&self) -> Option<SignedDuration> {
        self.break_glass.as_ref().map(|b| b.max_duration)
    }

    /// Groups whose members may review break-glass use under this rule (empty without
    /// break-glass).
    pub fn review_groups(&self) -> &[String] {
        self.break_glass
            .as_ref()
            .map_or(&[][..], |b| b.review_by.as_slice())
    }

    /// Whether the requester may count as one of their own approvers.
    pub fn self_approval(&self) -> bool {
        self.self_approval
    }

    /// Whether the rule covers `target` and `role` (whoever asks).
    pub(crate) fn covers(&self, target: &str, role: &str) -> bool {
        self.targets.contains(target) && self.roles.contains(role)
    }

    /// Why the request is auto-approved at `at`, or `None` when it is not.
    pub(crate) fn auto_approval(
        &self,
        identity: &str,
        groups: &[String],
        at: Timestamp,
    ) -> Option<String> {
        let auto = self.auto_approve.as_ref()?;
        let member = auto.who.includes(identity, groups)?;
        match auto.window_at(at) {
            WindowState::Always => Some(format!("auto-approved by rule {}: {member}", self.name)),
            WindowState::Inside(w) => Some(format!(
                "auto-approved by rule {}: {member}, inside window {w}",
                self.name
            )),
            WindowState::Outside => None,
        }
    }
}
