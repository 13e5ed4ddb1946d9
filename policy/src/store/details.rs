//! The `details` JSON column both stores keep: the parts of a grant no query filters on
//! (decisions, the break-glass flag, notifications sent). One definition, so a grant
//! written by one store reads the same from the other.

use serde::{Deserialize, Serialize};

use crate::grant::{Decision, Grant};

/// The `details` column's JSON object.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Details {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Decision>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Decision>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<String>,
}

impl Details {
    /// What `grant` keeps in the column.
    pub fn of(grant: &Grant) -> Details {
        Details {
            denial: grant.denial.clone(),
            cancellation: grant.cancellation.clone(),
            break_glass: grant.break_glass,
            review: grant.review.clone(),
            notified: grant.notified.clone(),
        }
    }
}
