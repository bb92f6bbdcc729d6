//! SaslHandshake and SaslAuthenticate: PLAIN and SCRAM-SHA-256/512 against the users in
//! the metadata store, and re-authentication (KIP-368). They change the connection's
//! session, so they are handled before the next request is read. A failed
//! authentication is answered SASL_AUTHENTICATION_FAILED and the connection closed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::security::{scram, SaslMechanism, SaslState, Session};

pub fn handshake(
    broker: &Broker,
    session: &mut Session,
    version: i16,
    req: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let offered = &broker.security.mechanisms;
    let response = SaslHandshakeResponse::default().with_mechanisms(
        offered
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect(),
    );
    if !session.listener.sasl() {
        session.close = true;
        return response.with_error_code(ResponseError::IllegalSaslState.code());
    }
    let chosen = SaslMechanism::parse(req.mechanism.as_str()).filter(|m| offered.contains(m));
    match chosen {
        Some(m) if matches!(session.sasl, SaslState::Start | SaslState::Done) => {
            session.sasl = SaslState::Chosen(m);
            session.raw_tokens = version == 0;
            response
        }
        Some(_) => {
            session.close = true;
            response.with_error_code(ResponseError::IllegalSaslState.code())
        }
        None => {
            tracing::info!(peer = %session.peer, mechanism = %req.mechanism.as_str(), "unsupported SASL mechanism");
            session.close = true;
            response.with_error_code(ResponseError::UnsupportedSaslMechanism.code())
        }
    }
}

fn failed(
    session: &mut Session,
    mechanism: &str,
    user: &str,
    why: &str,
) -> SaslAuthenticateResponse {
    crate::metrics::inc(&crate::metrics::AUTHENTICATION_FAILURES);
    // The user name is logged, never what the client sent as proof.
    tracing::info!(peer = %session.peer, mechanism, user, reason = why, "authentication failed");
    session.close = true;
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::SaslAuthenticationFailed.code())
        .with_error_message(Some(StrBytes::from_string(format!(
            "Authentication failed during authentication due to invalid credentials with SASL \
             mechanism {mechanism}"
        ))))
}

fn done(
    broker: &Broker,
    session: &mut Session,
    mechanism: &str,
    user: &str,
    auth_bytes: Bytes,
) -> SaslAuthenticateResponse {
    let principal = format!("User:{user}");
    if session.authenticated && *session.principal != *principal {
        return failed(
            session,
            mechanism,
            user,
            "re-authentication may not change the principal",
        );
    }
    tracing::debug!(peer = %session.peer, mechanism, user, "authenticated");
    session.principal = principal.into();
    session.authenticated = true;
    session.sasl = SaslState::Done;
    let reauth_ms = broker.security.reauth_ms;
    session.expires = (reauth_ms > 0).then(|| Instant::now() + Duration::from_millis(reauth_ms));
    SaslAuthenticateResponse::default()
        .with_auth_bytes(auth_bytes)
        .with_session_lifetime_ms(reauth_ms as i64)
}

/// A bare SASL token after SaslHandshake v0: the answer is the bare server token (none
/// after a failure: the connection is closed, as Kafka does).
pub async fn raw_token(broker: &Broker, session: &mut Session, token: Bytes) -> Option<Bytes> {
    let response = authenticate(
        broker,
        session,
        SaslAuthenticateRequest::default().with_auth_bytes(token),
    )
    .await;
    if !matches!(session.sasl, SaslState::Scram(_)) {
        session.raw_tokens = false;
    }
    if response.error_code != 0 {
        session.close = true;
        return None;
    }
    let mut out = Vec::with_capacity(4 + response.auth_bytes.len());
    out.extend_from_slice(&(response.auth_bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(&response.auth_bytes);
    Some(Bytes::from(out))
}

pub async fn authenticate(
    broker: &Broker,
    session: &mut Session,
    req: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    match std::mem::replace(&mut session.sasl, SaslState::Start) {
        SaslState::Chosen(SaslMechanism::Plain) => {
            let (user, password) = match scram::parse_plain(&req.auth_bytes) {
                Ok(p) => p,
                Err(e) => return failed(session, "PLAIN", "", &e.to_string()),
            };
            if broker.security.check_password(&user, &password).await {
                done(broker, session, "PLAIN", &user, Bytes::new())
            } else {
                failed(session, "PLAIN", &user, "invalid user or password")
            }
        }
        SaslState::Chosen(SaslMechanism::Scram(m)) => {
            let first = match scram::parse_client_first(&req.auth_bytes) {
                Ok(f) => f,
                Err(e) => return failed(session, m.name(), "", &e.to_string()),
            };
            let credential = broker.security.credential(&first.user, m).await;
            let exchange = scram::Exchange::start(m, first, credential);
            let out = Bytes::from(exchange.server_first().as_bytes().to_vec());
            session.sasl = SaslState::Scram(Box::new(exchange));
            SaslAuthenticateResponse::default().with_auth_bytes(out)
        }
        SaslState::Scram(exchange) => {
            let m = exchange.mechanism();
            match exchange.finish(&req.auth_bytes) {
                Ok(last) => done(
                    broker,
                    session,
                    m.name(),
                    exchange.user(),
                    Bytes::from(last),
                ),
                Err(e) => failed(session, m.name(), exchange.user(), &e.to_string()),
            }
        }
        state @ (SaslState::Start | SaslState::Done) => {
            session.sasl = state;
            session.close = true;
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate before SaslHandshake",
                )))
        }
    }
}
