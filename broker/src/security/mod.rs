//! Security: listeners and their protocols (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
//! SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) against credentials in the
//! metadata store, re-authentication (KIP-368), and the ACL authorizer.

pub mod acl;
pub mod scram;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use icestream_storage::MetaStore;

use crate::settings::Settings;

/// The principal of connections that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's security protocols; a listener's name is its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAINTEXT" => Some(Protocol::Plaintext),
            "SSL" => Some(Protocol::Ssl),
            "SASL_PLAINTEXT" => Some(Protocol::SaslPlaintext),
            "SASL_SSL" => Some(Protocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// One Kafka listener: where it binds and what it tells clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub protocol: Protocol,
    pub bind: String,
    /// `host:port` for Metadata responses (default: the bound address).
    pub advertised: Option<String>,
}

fn parse_list(list: &str, what: &str) -> Result<Vec<(Protocol, String)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, addr) = item
                .split_once("://")
                .ok_or_else(|| format!("{what}: {item:?} is not NAME://host:port"))?;
            let protocol = Protocol::parse(name).ok_or_else(|| {
                format!(
                    "{what}: unknown listener {name:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or \
                     SASL_SSL)"
                )
            })?;
            if !addr.contains(':') {
                return Err(format!("{what}: {item:?} has no port"));
            }
            Ok((protocol, addr.to_string()))
        })
        .collect()
}

/// The listeners of `settings`: `listeners` (with `advertised_listeners`), or else one
/// PLAINTEXT listener on `listen` (with `advertised_listener`).
pub fn listeners(settings: &Settings) -> Result<Vec<ListenerConfig>, String> {
    if settings.listeners.trim().is_empty() {
        return Ok(vec![ListenerConfig {
            protocol: Protocol::Plaintext,
            bind: settings.listen.clone(),
            advertised: settings.advertised_listener.clone(),
        }]);
    }
    let bound = parse_list(&settings.listeners, "listeners")?;
    let advertised = parse_list(&settings.advertised_listeners, "advertised_listeners")?;
    let mut out: Vec<ListenerConfig> = Vec::new();
    for (protocol, bind) in bound {
        if out.iter().any(|l| l.protocol == protocol) {
            return Err(format!("listeners: {} is listed twice", protocol.name()));
        }
        out.push(ListenerConfig {
            protocol,
            bind,
            advertised: advertised
                .iter()
                .find(|(p, _)| *p == protocol)
                .map(|(_, a)| a.clone()),
        });
    }
    if let Some((p, _)) = advertised
        .iter()
        .find(|(p, _)| !out.iter().any(|l| l.protocol == *p))
    {
        return Err(format!(
            "advertised_listeners: {} is not in listeners",
            p.name()
        ));
    }
    Ok(out)
}

/// The SASL mechanisms a broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(scram::Mechanism),
}

impl SaslMechanism {
    pub fn parse(name: &str) -> Option<Self> {
        if name == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        scram::Mechanism::from_name(name).map(SaslMechanism::Scram)
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// What every connection's authentication needs.
pub struct Security {
    pub authorizer: Arc<acl::Authorizer>,
    pub mechanisms: Vec<SaslMechanism>,
    /// KIP-368: sessions last this long, then clients re-authenticate (0: forever).
    pub reauth_ms: u64,
    /// Connections on SASL listeners that have not authenticated by then are closed.
    pub auth_timeout: Duration,
    /// The admin and registry HTTP endpoints ask for HTTP basic credentials.
    pub http_auth: bool,
    meta: MetaStore,
    /// Recently verified HTTP credentials (a digest of user and password) and when:
    /// spares PBKDF2 on every request of a client.
    verified: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Instant>>,
}

/// How long a verified HTTP credential is trusted without checking it again.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// The outcome of checking an HTTP request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// Authentication is off, or the credentials hold: the principal.
    Allowed(String),
    /// No or wrong credentials: answer 401.
    Denied,
}

impl Security {
    pub fn new(settings: &Settings, any_sasl: bool, meta: MetaStore) -> Result<Self, String> {
        let mechanisms = settings
            .sasl_enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|m| {
                SaslMechanism::parse(m).ok_or_else(|| {
                    format!(
                        "sasl_enabled_mechanisms: unknown mechanism {m:?} (PLAIN, \
                         SCRAM-SHA-256, SCRAM-SHA-512)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let enabled = match settings.authorizer.as_str() {
            "" => any_sasl,
            "acl" => true,
            "none" => false,
            other => return Err(format!("authorizer: {other:?} is neither acl nor none")),
        };
        Ok(Self {
            authorizer: Arc::new(acl::Authorizer::new(
                enabled,
                &settings.super_users,
                settings.allow_everyone_if_no_acl_found,
                meta.clone(),
            )),
            mechanisms,
            reauth_ms: settings.connections_max_reauth_ms,
            auth_timeout: Duration::from_millis(settings.sasl_authentication_timeout_ms.max(100)),
            http_auth: match settings.http_authentication.as_str() {
                "basic" => true,
                "none" => false,
                _ => any_sasl,
            },
            meta,
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Checks a user's password against the stored SCRAM credentials (the strongest
    /// first), off the async workers: PBKDF2 is slow on purpose.
    pub async fn check_password(&self, user: &str, password: &str) -> bool {
        for m in [scram::Mechanism::Sha512, scram::Mechanism::Sha256] {
            match self.meta.scram_credential(user, m.name()).await {
                Ok(Some(c)) => {
                    let password = password.to_string();
                    return tokio::task::spawn_blocking(move || {
                        scram::verify_password(m, &c, &password)
                    })
                    .await
                    .unwrap_or(false);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading credentials failed");
                    return false;
                }
            }
        }
        // An unknown user costs the same time as a wrong password.
        let password = password.to_string();
        let _ = tokio::task::spawn_blocking(move || {
            let m = scram::Mechanism::Sha512;
            scram::verify_password(
                m,
                &scram::credential(m, "", scram::DEFAULT_ITERATIONS),
                &password,
            )
        })
        .await;
        false
    }

    /// Checks an HTTP `Authorization` header (`Basic base64(user:password)`) against the
    /// users; failures are counted and logged without the secret.
    pub async fn http(&self, authorization: Option<&str>) -> HttpAuth {
        use base64::Engine;
        if !self.http_auth {
            return HttpAuth::Allowed(ANONYMOUS.into());
        }
        let decoded = authorization
            .and_then(|h| {
                h.strip_prefix("Basic ")
                    .or_else(|| h.strip_prefix("basic "))
            })
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
            return HttpAuth::Denied;
        };
        let key = ring::digest::digest(
            &ring::digest::SHA256,
            decoded.as_deref().unwrap_or("").as_bytes(),
        )
        .as_ref()
        .to_vec();
        let fresh = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&key).copied())
            .is_some_and(|at| at.elapsed() < VERIFIED_TTL);
        if fresh || self.check_password(user, password).await {
            if let Ok(mut m) = self.verified.lock() {
                if m.len() > 10_000 {
                    m.retain(|_, at| at.elapsed() < VERIFIED_TTL);
                }
                m.insert(key, Instant::now());
            }
            return HttpAuth::Allowed(format!("User:{user}"));
        }
        crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
        tracing::info!(user, "HTTP authentication failed");
        HttpAuth::Denied
    }

    pub async fn credential(
        &self,
        user: &str,
        mechanism: scram::Mechanism,
    ) -> Option<icestream_storage::meta::ScramCredential> {
        match self.meta.scram_credential(user, mechanism.name()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading credentials failed");
                None
            }
        }
    }
}

/// Where a SASL exchange stands.
#[derive(Debug, Clone)]
pub enum SaslState {
    /// Waiting for SaslHandshake.
    Start,
    /// The mechanism is chosen; waiting for the first SaslAuthenticate.
    Chosen(SaslMechanism),
    /// SCRAM: the server-first message went out.
    Scram(Box<scram::Exchange>),
    /// Authenticated.
    Done,
}

/// One connection's security state.
#[derive(Debug, Clone)]
pub struct Session {
    pub listener: Protocol,
    pub peer: std::net::SocketAddr,
    pub host: Arc<str>,
    pub principal: Arc<str>,
    pub sasl: SaslState,
    /// When a SASL session ends (KIP-368).
    pub expires: Option<Instant>,
    /// Whether the connection ever authenticated (re-authentication keeps the principal).
    pub authenticated: bool,
    /// Close the connection after the response to this request.
    pub close: bool,
    /// After SaslHandshake v0 the SASL tokens come as bare frames, without a request
    /// header, until authentication ends.
    pub raw_tokens: bool,
}

impl Session {
    pub fn new(listener: Protocol, peer: std::net::SocketAddr, principal: Option<String>) -> Self {
        Self {
            listener,
            peer,
            host: Arc::from(peer.ip().to_string()),
            principal: Arc::from(principal.unwrap_or_else(|| ANONYMOUS.to_string())),
            sasl: SaslState::Start,
            expires: None,
            authenticated: false,
            close: false,
            raw_tokens: false,
        }
    }

    /// Whether requests other than the SASL ones may be served.
    pub fn may_serve(&self) -> bool {
        if !self.listener.sasl() {
            return true;
        }
        self.authenticated && self.expires.is_none_or(|e| Instant::now() < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, crate::settings::SettingsError> {
        let overrides: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(None, vec![], &overrides)
    }

    #[test]
    fn listeners_parse_and_check() {
        let s = with(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093",
            ),
            ("advertised_listeners", "SASL_SSL://kafka.example.com:9093"),
            ("ssl_certificate_file", "c.pem"),
            ("ssl_key_file", "k.pem"),
        ])
        .expect("valid");
        let l = listeners(&s).expect("listeners");
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].protocol, Protocol::Plaintext);
        assert_eq!(l[0].advertised, None);
        assert_eq!(l[1].advertised.as_deref(), Some("kafka.example.com:9093"));
        // Defaults: one PLAINTEXT listener on `listen`.
        let d = listeners(&Settings::default()).expect("default");
        assert_eq!(d[0].protocol, Protocol::Plaintext);
        assert_eq!(d[0].bind, "127.0.0.1:9092");

        for bad in [
            vec![("listeners", "SSL://127.0.0.1:1")],
            vec![("listeners", "TLS://127.0.0.1:1")],
            vec![("listeners", "PLAINTEXT://127.0.0.1")],
            vec![("listeners", "PLAINTEXT://a:1,PLAINTEXT://b:2")],
            vec![
                ("listeners", "PLAINTEXT://a:1"),
                ("advertised_listeners", "SASL_SSL://b:2"),
            ],
            vec![("ssl_client_auth", "sometimes")],
        ] {
            assert!(with(&bad).is_err(), "{bad:?}");
        }
    }
}
