//! SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) on the server side, and the
//! PLAIN mechanism (RFC 4616) checked against the same stored credentials. The primitives
//! (PBKDF2, HMAC, SHA-2, constant-time comparison, randomness) are `ring`'s.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use icestream_storage::meta::ScramCredential;
use ring::rand::SecureRandom;
use ring::{digest, hmac, pbkdf2};

/// Kafka's default and minimum iteration count.
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Kafka's bounds on the iteration count of a stored credential.
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's ScramMechanism code (DescribeUserScramCredentials and friends).
    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Mechanism::Sha256 => hmac::HMAC_SHA256,
            Mechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Mechanism::Sha256 => &digest::SHA256,
            Mechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Mechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Mechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

fn sign(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(mechanism.hmac(), key), data)
        .as_ref()
        .to_vec()
}

fn random(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    // The system generator only fails when the OS has no randomness to give.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        out.iter_mut().for_each(|b| *b = rand::random::<u8>());
    }
    out
}

fn salted_password(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; mechanism.len()];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(mechanism.pbkdf2(), iterations, salt, password, &mut out);
    out
}

/// The credential stored for a salted password (what AlterUserScramCredentials carries).
pub fn credential_from_salted(
    mechanism: Mechanism,
    salted: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = sign(mechanism, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: digest::digest(mechanism.digest(), &client_key)
            .as_ref()
            .to_vec(),
        server_key: sign(mechanism, salted, b"Server Key"),
    }
}

/// A new credential for `password`, with a random salt.
pub fn credential(mechanism: Mechanism, password: &str, iterations: u32) -> ScramCredential {
    let salt = random(32);
    let salted = salted_password(mechanism, password.as_bytes(), &salt, iterations);
    credential_from_salted(mechanism, &salted, &salt, iterations)
}

/// Whether `password` is the one `stored` was made from (SASL/PLAIN and HTTP basic).
pub fn verify_password(mechanism: Mechanism, stored: &ScramCredential, password: &str) -> bool {
    let salted = salted_password(
        mechanism,
        password.as_bytes(),
        &stored.salt,
        stored.iterations,
    );
    let derived = credential_from_salted(mechanism, &salted, &stored.salt, stored.iterations);
    equal(&derived.stored_key, &stored.stored_key)
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    ring::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM extensions are not supported")]
    Extensions,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("nonce mismatch")]
    Nonce,
    #[error("authentication failed")]
    Failed,
}

/// The parsed client-first message.
#[derive(Debug, Clone)]
pub struct ClientFirst {
    pub user: String,
    gs2_header: String,
    bare: String,
    nonce: String,
}

/// Parses `n,,n=user,r=nonce` (an authzid, if given, must be the user).
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let cbind = parts.next().ok_or(ScramError::Malformed("empty"))?;
    let authzid = parts
        .next()
        .ok_or(ScramError::Malformed("no authzid field"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no user"))?;
    match cbind {
        "n" | "y" => {}
        _ => return Err(ScramError::ChannelBinding),
    }
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        match attr.split_once('=') {
            Some(("n", v)) => user = Some(unescape_name(v)?),
            Some(("r", v)) => nonce = Some(v.to_string()),
            Some(("m", _)) => return Err(ScramError::Extensions),
            // Kafka's `tokenauth` extension (delegation tokens) is not served.
            Some(("tokenauth", _)) => return Err(ScramError::Extensions),
            _ => {}
        }
    }
    let user = user.ok_or(ScramError::Malformed("no user"))?;
    let nonce = nonce
        .filter(|n| !n.is_empty())
        .ok_or(ScramError::Malformed("no nonce"))?;
    if let Some(a) = authzid.strip_prefix("a=") {
        if unescape_name(a)? != user {
            return Err(ScramError::Failed);
        }
    }
    Ok(ClientFirst {
        user,
        gs2_header: format!("{cbind},{authzid},"),
        bare: bare.to_string(),
        nonce,
    })
}

fn unescape_name(v: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A SCRAM exchange after the server-first message.
#[derive(Debug, Clone)]
pub struct Exchange {
    mechanism: Mechanism,
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// `None` for an unknown user: the exchange runs to the end and fails there, so that
    /// which users exist is not given away.
    credential: Option<ScramCredential>,
}

impl Exchange {
    /// Starts an exchange; the server-first message is [`Exchange::server_first`].
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        credential: Option<ScramCredential>,
    ) -> Self {
        let nonce = format!("{}{}", first.nonce, B64.encode(random(18)));
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (random(32), DEFAULT_ITERATIONS),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        Self {
            mechanism,
            first,
            server_first,
            nonce,
            credential,
        }
    }

    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Checks the client-final message; the server-final message when the proof holds.
    pub fn finish(&self, message: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        let binding = binding.ok_or(ScramError::Malformed("no channel binding"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.first.gs2_header.as_bytes()) {
            return Err(ScramError::ChannelBinding);
        }
        // As Kafka, the nonce must end with the server's: librdkafka before 2.1 sends the
        // client nonce in front of it once more (the proof covers what was sent either way).
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return Err(ScramError::Nonce);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let credential = self.credential.as_ref().ok_or(ScramError::Failed)?;
        let auth_message = format!(
            "{},{},{}",
            self.first.bare, self.server_first, without_proof
        );
        let signature = sign(
            self.mechanism,
            &credential.stored_key,
            auth_message.as_bytes(),
        );
        if proof.len() != signature.len() {
            return Err(ScramError::Failed);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = digest::digest(self.mechanism.digest(), &client_key);
        if !equal(stored.as_ref(), &credential.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = sign(
            self.mechanism,
            &credential.server_key,
            auth_message.as_bytes(),
        );
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// SASL/PLAIN: `authzid NUL user NUL password`; (user, password).
pub fn parse_plain(message: &[u8]) -> Result<(String, String), ScramError> {
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ScramError::Malformed(
            "PLAIN needs authzid, user and password",
        ));
    };
    if user.is_empty() || password.is_empty() {
        return Err(ScramError::Malformed("empty user or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(ScramError::Failed);
    }
    Ok((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, end to end.
    #[test]
    fn rfc7677_example() {
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let salted = salted_password(m, b"pencil", &salt, 4096);
        let credential = credential_from_salted(m, &salted, &salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("first");
        let mut exchange = Exchange::start(m, first, Some(credential));
        // The RFC's server nonce, for its proof to hold.
        exchange.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        exchange.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", exchange.nonce);
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                     p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.finish(last).expect("proof"),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut bad = last.to_vec();
        let n = bad.len();
        bad[n - 3] = b'A';
        assert_eq!(exchange.finish(&bad), Err(ScramError::Failed));
    }

    #[test]
    fn unknown_users_fail_at_the_end() {
        let first = parse_client_first(b"n,,n=nobody,r=abc").expect("first");
        let exchange = Exchange::start(Mechanism::Sha512, first, None);
        assert!(exchange.server_first().starts_with("r=abc"));
        let last = format!("c=biws,r={},p=AAAA", exchange.nonce);
        assert_eq!(exchange.finish(last.as_bytes()), Err(ScramError::Failed));
    }

    #[test]
    fn plain_passwords_check_against_scram_credentials() {
        let c = credential(Mechanism::Sha512, "secret", 4096);
        assert!(verify_password(Mechanism::Sha512, &c, "secret"));
        assert!(!verify_password(Mechanism::Sha512, &c, "Secret"));
        assert_eq!(
            parse_plain(b"\0alice\0pw").expect("plain"),
            ("alice".to_string(), "pw".to_string())
        );
        assert!(parse_plain(b"alice\0pw").is_err());
        assert_eq!(parse_plain(b"bob\0alice\0pw"), Err(ScramError::Failed));
        assert_eq!(
            parse_client_first(b"n,,n=a=2Cb=3Dc,r=x")
                .expect("escaped")
                .user,
            "a,b=c"
        );
    }
}
