//! [`AdminClient`]: the CLI's typed client for the admin API.
//!
//! Errors the server explains (`{"error": "…"}`) surface with that explanation as
//! [`Error::Admin`]; a server that cannot be reached is [`Error::AdminUnreachable`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use jitgate_proxy::settings::Secret;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::types::{
    DecisionBody, ErrorBody, ExplainQuery, ExplainView, ExtendBody, GrantList, GrantView, Health,
    IssueBody, ListQuery, LoginBody, LoginView, OutcomeView, RequestBody, RequestList,
    RequestsQuery, RevokeBody, RevokeView, SessionList, SessionView, WhoAmI,
};
use crate::config::AdminSettings;
use crate::error::Error;

/// Upper bound on one admin request; the server answers in milliseconds unless its store or
/// audit log hangs, and then the CLI should say so rather than wait forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A decision on a request or grant, for [`AdminClient::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
    Cancel,
    Review,
}

/// A client of one jitgate server's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Secret,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for `http://<base>` (e.g. `http://127.0.0.1:6433`) using `token`.
    pub fn new(base: impl Into<String>, token: Secret) -> Result<Self, Error> {
        let base = base.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|source| Error::AdminUnreachable {
                url: base.clone(),
                source,
            })?;
        Ok(AdminClient { base, token, http })
    }

    /// A client for the server configured by `admin:`. A wildcard listen address
    /// (`0.0.0.0`, `[::]`) is reached over loopback.
    pub fn from_settings(settings: &AdminSettings) -> Result<Self, Error> {
        let mut addr = settings.listen;
        if addr.ip().is_unspecified() {
            let loopback = match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            addr = SocketAddr::new(loopback, addr.port());
        }
        Self::new(format!("http://{addr}"), settings.token.clone())
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /v1/grants`.
    pub async fn issue(&self, body: &IssueBody) -> Result<GrantView, Error> {
        self.send(self.request(Method::POST, "/v1/grants").json(body))
            .await
    }

    /// `GET /v1/grants` with `query`'s filters.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<GrantView>, Error> {
        let list: GrantList = self
            .send(self.request(Method::GET, "/v1/grants").query(query))
            .await?;
        Ok(list.grants)
    }

    /// `GET /v1/grants/{id}`.
    pub async fn get(&self, id: Uuid) -> Result<GrantView, Error> {
        self.send(self.request(Method::GET, &format!("/v1/grants/{id}")))
            .await
    }

    /// `POST /v1/grants/{id}/revoke`.
    pub async fn revoke(&self, id: Uuid, body: &RevokeBody) -> Result<RevokeView, Error> {
        self.send(
            self.request(Method::POST, &format!("/v1/grants/{id}/revoke"))
                .json(body),
        )
        .await
    }

    /// `GET /v1/sessions`.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, Error> {
        let list: SessionList = self.send(self.request(Method::GET, "/v1/sessions")).await?;
        Ok(list.sessions)
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, Error> {
        self.send(self.request(Method::GET, "/v1/health")).await
    }

    /// `POST /v1/login` (needs no token).
    pub async fn login(&self, body: &LoginBody) -> Result<LoginView, Error> {
        self.send(self.http.post(format!("{}/v1/login", self.base)).json(body))
            .await
    }

    /// `GET /v1/whoami`.
    pub async fn whoami(&self) -> Result<WhoAmI, Error> {
        self.send(self.request(Method::GET, "/v1/whoami")).await
    }

    /// `POST /v1/requests`, with an optional `Idempotency-Key`.
    pub async fn request_access(
        &self,
        body: &RequestBody,
        idempotency_key: Option<&str>,
    ) -> Result<OutcomeView, Error> {
        let mut request = self.request(Method::POST, "/v1/requests").json(body);
        if let Some(key) = idempotency_key {
            request = request.header(super::IDEMPOTENCY_KEY, key);
        }
        self.send(request).await
    }

    /// `GET /v1/requests`.
    pub async fn requests(&self, query: &RequestsQuery) -> Result<Vec<GrantView>, Error> {
        let list: RequestList = self
            .send(self.request(Method::GET, "/v1/requests").query(query))
            .await?;
        Ok(list.requests)
    }

    /// `GET /v1/requests/{id}`.
    pub async fn get_request(&self, id: Uuid) -> Result<GrantView, Error> {
        self.send(self.request(Method::GET, &format!("/v1/requests/{id}")))
            .await
    }

    /// `POST /v1/requests/{id}/{approve|deny|cancel}` or `/v1/grants/{id}/review`.
    pub async fn decide(
        &self,
        id: Uuid,
        decision: Decision,
        body: &DecisionBody,
    ) -> Result<OutcomeView, Error> {
        let path = match decision {
            Decision::Approve => format!("/v1/requests/{id}/approve"),
            Decision::Deny => format!("/v1/requests/{id}/deny"),
            Decision::Cancel => format!("/v1/requests/{id}/cancel"),
            Decision::Review => format!("/v1/grants/{id}/review"),
        };
        self.send(self.request(Method::POST, &path).json(body))
            .await
    }

    /// `POST /v1/grants/{id}/extend`, with an optional `Idempotency-Key`.
    pub async fn extend(
        &self,
        id: Uuid,
        body: &ExtendBody,
        idempotency_key: Option<&str>,
    ) -> Result<OutcomeView, Error> {
        let mut request = self
            .request(Method::POST, &format!("/v1/grants/{id}/extend"))
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header(super::IDEMPOTENCY_KEY, key);
        }
        self.send(request).await
    }

    /// `GET /v1/policy/explain`.
    pub async fn explain(&self, query: &ExplainQuery) -> Result<ExplainView, Error> {
        self.send(self.request(Method::GET, "/v1/policy/explain").query(query))
            .await
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let response = request
            .send()
            .await
            .map_err(|source| Error::AdminUnreachable {
                url: self.base.clone(),
                source,
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| Error::AdminUnreachable {
                url: self.base.clone(),
                source,
            })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| Error::AdminProtocol {
                status: status.as_u16(),
                detail: e.to_string(),
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Error::Admin {
                status: status.as_u16(),
                message: err.error,
            },
            Err(_) => Error::AdminProtocol {
                status: status.as_u16(),
                detail: describe_status(status),
            },
        })
    }
}

fn describe_status(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("no JSON error body")
        .to_owned()
}
