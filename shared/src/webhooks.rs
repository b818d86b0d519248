//! Standard Webhooks signatures: `whsec_` secrets, and `webhook-signature` values of the form
//! `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, space-separated when several secrets
//! sign one message (during a rotation).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret.
const SECRET_BYTES: usize = 32;
/// Bounds of the key inside a secret a caller supplies.
const SECRET_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_` followed by base64")]
    Format,
    #[error("a webhook secret holds 24 to 64 bytes, this one holds {0}")]
    Length(usize),
}

/// A signing secret. Its `Debug` form does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source is available");
        Self { key }
    }

    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Format)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::Format)?;
        if !SECRET_KEY_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self { key })
    }

    /// The `whsec_…` form, to show once and to store.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let mut context = hmac::Context::with_key(&key);
        context.update(message_id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }

    /// Whether any `v1` signature of a `webhook-signature` header value is this secret's, compared in
    /// constant time.
    pub fn verify(&self, message_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let signed = format!("{message_id}.{timestamp}.");
        header
            .split(' ')
            .filter_map(|signature| signature.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|tag| {
                let mut message = signed.as_bytes().to_vec();
                message.extend_from_slice(body);
                hmac::verify(&key, &message, &tag).is_ok()
            })
    }
}

/// The `webhook-signature` value of a message signed by every one of `secrets`.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|secret| secret.sign(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_the_reference_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body, &signature));
        assert!(!secret.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_331, body, &signature));
    }

    #[test]
    fn a_rotation_signs_with_both_and_either_verifies() {
        let (old, new) = (Secret::generate(), Secret::generate());
        let header = signature_header([&new, &old], "msg_1", 7, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(old.verify("msg_1", 7, b"{}", &header) && new.verify("msg_1", 7, b"{}", &header));
        assert!(!Secret::generate().verify("msg_1", 7, b"{}", &header));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = Secret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse(&secret.expose()).unwrap(), secret);
        assert_eq!(Secret::parse("abc"), Err(SecretError::Format));
        assert_eq!(Secret::parse("whsec_!!"), Err(SecretError::Format));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::Length(3)));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
    }
}
