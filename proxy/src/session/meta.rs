//! Who a session is: the context stamped on every audit event it writes.

use jitgate_audit::{Event, EventBody};
use uuid::Uuid;

/// Identity, target, role and grant of an admitted session.
#[derive(Clone, Debug)]
pub struct SessionMeta {
    pub session_id: Uuid,
    pub identity: String,
    pub target: String,
    pub role: String,
    pub grant_id: Uuid,
}

impl SessionMeta {
    /// An audit event of this session.
    pub fn event(&self, body: EventBody) -> Event {
        let mut e = Event::new(body);
        e.session_id = Some(self.session_id);
        e.identity = Some(self.identity.clone());
        e.target = Some(self.target.clone());
        e.role = Some(self.role.clone());
        e.grant_id = Some(self.grant_id);
        e
    }
}
