//! [`AdminClient`]: the CLI's typed client for the admin API.
//!
//! Errors the server explains (`{"error": "…"}`) surface with that explanation as
//! [`Error::Admin`]; a server that cannot be reached is [`Error::AdminUnreachable`].
//!
//! An `https://` API is verified against a CA file when one is given (only its
//! certificates are trusted), else the web PKI roots, and is never left for plain HTTP
//! (redirects included). A password is never sent over plain HTTP to a host that is not
//! loopback ([`check_password_transport`]).

use std::path::Path;
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

/// Whether a password may be sent to `url`: over HTTPS always, over plain HTTP only to a
/// loopback host (`localhost`, 127.0.0.0/8, `::1`), where it never crosses a network.
/// Decided from the URL alone, before anything is sent.
pub fn check_password_transport(url: &str) -> Result<(), Error> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::AdminUrl {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            // An IPv6 host comes bracketed ("[::1]").
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(Error::PlainHttpLogin {
                    url: url.to_owned(),
                })
            }
        }
        other => Err(Error::AdminUrl {
            url: url.to_owned(),
            detail: format!("scheme {other:?}; use https:// (or http:// on loopback)"),
        }),
    }
}

impl AdminClient {
    /// A client for `base` (e.g. `http://127.0.0.1:6433`) using `token`; an https API is
    /// verified against the web PKI roots.
    pub fn new(base: impl Into<String>, token: Secret) -> Result<Self, Error> {
        Self::with_ca(base, token, None)
    }

    /// A client for `base` using `token`; an https API is verified against the
    /// certificates in `ca_file` (PEM) when given, else the web PKI roots.
    pub fn with_ca(
        base: impl Into<String>,
        token: Secret,
        ca_file: Option<&Path>,
    ) -> Result<Self, Error> {
        let base = base.into().trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .https_only(base.starts_with("https:"));
        if let Some(path) = ca_file {
            let problem = |detail: String| Error::AdminCaFile {
                path: path.to_path_buf(),
                detail,
            };
            let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| problem(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(problem(
                    "no certificate found in it (expected PEM)".to_owned(),
                ));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|source| Error::AdminUnreachable {
            url: base.clone(),
            source,
        })?;
        Ok(AdminClient { base, token, http })
    }

    /// A plain-HTTP client for the server at `admin.listen` (a wildcard listen address
    /// is reached over loopback).
    pub fn from_settings(settings: &AdminSettings) -> Result<Self, Error> {
        let mut addr = settings.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Self::new(format!("http://{addr}"), settings.token.clone())
    }

    /// A client for the server the config file describes (`https` with `admin.tls`,
    /// verified against `admin.tls.ca_file`), as the administrator.
    pub fn from_config(config_path: &Path) -> Result<Self, Error> {
        let (settings, endpoint) = crate::config::load_admin_client(config_path)?;
        Self::with_ca(endpoint.url, settings.token, endpoint.ca_file.as_deref())
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

    /// `POST /v1/login` (needs no token). Refused without sending anything when the
    /// password would travel over plain HTTP to a host that is not loopback.
    pub async fn login(&self, body: &LoginBody) -> Result<LoginView, Error> {
        check_password_transport(&self.base)?;
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

#[cfg(test)]
mod tests {
    use super::check_password_transport;
    use crate::error::Error;

    #[test]
    fn passwords_travel_over_https_or_loopback_only() {
        for ok in [
            "https://jitgate.example.com:6433",
            "https://192.0.2.1:6433",
            "http://127.0.0.1:6433",
            "http://127.8.9.10",
            "http://localhost:6433/",
            "http://LOCALHOST:6433",
            "http://[::1]:6433",
        ] {
            assert!(check_password_transport(ok).is_ok(), "{ok}");
        }
        for plain in [
            "http://192.0.2.1:6433",
            "http://jitgate.example.com",
            "http://[2001:db8::1]:6433",
            "http://0.0.0.0:6433",
            "http://localhost.example.com",
        ] {
            match check_password_transport(plain) {
                Err(Error::PlainHttpLogin { url }) => assert_eq!(url, plain),
                other => panic!("{plain}: {other:?}"),
            }
        }
        assert!(matches!(
            check_password_transport("ftp://127.0.0.1"),
            Err(Error::AdminUrl { .. })
        ));
        assert!(matches!(
            check_password_transport("not a url"),
            Err(Error::AdminUrl { .. })
        ));
        let message = check_password_transport("http://192.0.2.1:6433")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("plain HTTP") && message.contains("https://"),
            "{message}"
        );
    }
}
