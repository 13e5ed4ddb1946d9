//! Per-grant upstream roles (`provisioning: ephemeral`): before a grant's first session
//! jitgate creates a login role for that person and grant, member of the granted role,
//! with a password only jitgate knows and `VALID UNTIL` the grant's end; sessions log in
//! as it; when the grant ends the role is retired ([`sweep`]). So no password, setting
//! or object a grantee gives the role outlives the grant, and `pg_stat_activity`,
//! pgaudit and the server log name the person and the grant.
//!
//! - [`names`]: role name, marker comment, derived password (shared by replicas without
//!   being stored: see there), quoting;
//! - [`admin`]: the statements on the target's admin connection;
//! - [`preflight`]: whether the admin credential can provision (check-config, serve
//!   startup);
//! - [`sweep`]: retiring roles of ended grants, moving `VALID UNTIL` on extension, and
//!   removing leftovers after a crash — once per target across replicas.
//!
//! On the login path the cost is one round trip on a kept admin connection, once per
//! grant and replica (a replica that finds the role made by another gets 42710 and goes
//! on); later sessions of the grant log in as the role directly.

pub mod admin;
mod authcheck;
pub mod names;
pub mod preflight;
pub mod sweep;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use jitgate_policy::Grant;
use tokio_postgres::Client;
use uuid::Uuid;

use rand::RngCore;

use crate::auth::client::ScramKeys;
use crate::auth::{ScramKeyCache, ScramVerifier};
use crate::session::error::UpstreamError;
use crate::session::upstream::{self, Upstream};
use crate::settings::{EphemeralSettings, Provisioning, RoleCredentials, TargetSettings};

/// Per-grant roles of this process: which grants' roles it knows to exist, its admin
/// connections for logins, and the wake-up of the sweeper.
#[derive(Default)]
pub struct Provisioner {
    /// Grants whose role this process created or found existing.
    ensured: Mutex<HashSet<Uuid>>,
    /// Target name → admin connection used on the login path (opened on first use,
    /// reopened when it closed).
    admins: tokio::sync::Mutex<HashMap<String, Arc<Client>>>,
    /// Woken when a grant changed (revoked, extended, ended): the sweeper looks at once.
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner").finish_non_exhaustive()
    }
}

impl Provisioner {
    /// The credentials a session of `grant` on `target` logs in with: the granted role's
    /// own (`shared`), or its per-grant role's (`ephemeral`; computed, no I/O).
    pub fn credentials<'a>(
        &self,
        grant: &Grant,
        target: &TargetSettings,
        granted: &'a RoleCredentials,
    ) -> Cow<'a, RoleCredentials> {
        match &target.provisioning {
            Provisioning::Shared => Cow::Borrowed(granted),
            Provisioning::Ephemeral(eph) => Cow::Owned(RoleCredentials {
                user: names::role_name(&grant.identity, grant.id),
                password: names::password(&eph.admin.password, &target.name, grant.id),
            }),
        }
    }

    /// Opens the upstream session of `grant` as `creds` (from [`Self::credentials`]),
    /// creating the per-grant role first when this process has not seen it yet. When
    /// the server refuses the per-grant role's login (its password was changed, or the
    /// role removed, behind jitgate's back) the role is set up again once and the login
    /// retried.
    pub async fn open(
        &self,
        grant: &Grant,
        target: &TargetSettings,
        granted: &RoleCredentials,
        creds: &RoleCredentials,
        params: &[(String, String)],
        keys: &ScramKeyCache,
    ) -> Result<Upstream, UpstreamError> {
        let Provisioning::Ephemeral(eph) = &target.provisioning else {
            return upstream::connect(target, creds, params, keys).await;
        };
        if !self.is_ensured(grant.id) {
            self.ensure(grant, target, eph, granted, creds, keys, false)
                .await?;
        }
        match upstream::connect(target, creds, params, keys).await {
            Err(UpstreamError::Refused { code, message }) if code == "28P01" || code == "28000" => {
                tracing::warn!(grant_id = %grant.id, role = %creds.user, %code, %message,
                    "the per-grant role refused jitgate's login; setting it up again");
                self.forget(grant.id);
                self.ensure(grant, target, eph, granted, creds, keys, true)
                    .await?;
                upstream::connect(target, creds, params, keys).await
            }
            other => other,
        }
    }

    fn is_ensured(&self, grant_id: Uuid) -> bool {
        self.lock().contains(&grant_id)
    }

    /// Forgets that the role of `grant_id` exists (it was retired).
    pub fn forget(&self, grant_id: Uuid) {
        self.lock().remove(&grant_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.ensured
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the sweeper that `grant_id` changed.
    pub fn grant_changed(&self, grant_id: Uuid) {
        tracing::debug!(%grant_id, "grant changed; checking per-grant roles");
        self.changed.notify_one();
    }

    /// Creates the role (see [`admin::create`]) on the kept admin connection. The SCRAM
    /// keys derived for its verifier go into `keys`, so the login that follows runs no
    /// PBKDF2 of its own.
    #[allow(clippy::too_many_arguments)]
    async fn ensure(
        &self,
        grant: &Grant,
        target: &TargetSettings,
        eph: &EphemeralSettings,
        granted: &RoleCredentials,
        creds: &RoleCredentials,
        keys: &ScramKeyCache,
        reset: bool,
    ) -> Result<(), UpstreamError> {
        // A fresh salt for every verifier. One PBKDF2 round (see
        // `names::VERIFIER_ITERATIONS`): cheap enough for the session's thread.
        let mut salt = [0u8; ScramVerifier::DEFAULT_SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        let iterations = names::VERIFIER_ITERATIONS;
        let password = creds.password.expose().as_bytes();
        let derived = ScramKeys::derive(password, &salt, iterations);
        keys.insert(password, &salt, iterations, derived);
        let verifier = derived.verifier(&salt, iterations).to_string();
        let role = admin::NewRole {
            name: &creds.user,
            granted: &granted.user,
            admin: &eph.admin.user,
            identity: &grant.identity,
            grant_id: grant.id,
            verifier: &verifier,
            valid_until: grant.expires_at,
        };
        let client = self.admin(target, eph).await?;
        let started = std::time::Instant::now();
        let created = admin::create(&client, &role, reset).await;
        if let Err(UpstreamError::Provision { code: None, .. }) = &created {
            // The connection failed, not the statement: drop it, so the next login opens
            // a new one.
            self.admins.lock().await.remove(&target.name);
        }
        created?;
        tracing::info!(grant_id = %grant.id, role = %creds.user, granted = %granted.user,
            valid_until = %grant.expires_at, create_ms = started.elapsed().as_secs_f64() * 1000.0,
            "per-grant role ready");
        self.lock().insert(grant.id);
        Ok(())
    }

    /// The kept admin connection of `target`, opened when there is none or it closed.
    async fn admin(
        &self,
        target: &TargetSettings,
        eph: &EphemeralSettings,
    ) -> Result<Arc<Client>, UpstreamError> {
        let mut admins = self.admins.lock().await;
        if let Some(client) = admins.get(&target.name) {
            if !client.is_closed() {
                return Ok(Arc::clone(client));
            }
        }
        let client = Arc::new(admin::connect(target, &eph.admin, "jitgate: provisioning").await?);
        admins.insert(target.name.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// Opens the admin connection of every ephemeral target ahead of the first login, so
    /// that login pays one round trip, not a connection (failures are logged; the login
    /// path retries).
    pub async fn warm_up(&self, targets: &HashMap<String, TargetSettings>) {
        for target in targets.values() {
            if let Provisioning::Ephemeral(eph) = &target.provisioning {
                if let Err(e) = self.admin(target, eph).await {
                    tracing::warn!(target = %target.name, error = %e,
                        "cannot open the admin connection of an ephemeral target yet");
                }
            }
        }
    }
}
