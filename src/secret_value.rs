//! A secret read from a Kubernetes Secret: an API token or a shared secret.

use std::fmt;

/// Bytes that must never be printed. `Debug` and `Display` are redacted, so a stray `{:?}` in
/// a log line or error cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// `Bearer <token>`, marked sensitive so HTTP tooling does not record it; None when the
    /// token holds bytes an HTTP header cannot carry. (White space around a value is dropped
    /// when it is read from its Secret, in `keys`.)
    pub fn bearer_header(&self) -> Option<reqwest::header::HeaderValue> {
        let mut value =
            reqwest::header::HeaderValue::from_bytes(&[b"Bearer ", self.0.as_slice()].concat()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let value = SecretValue::new(b"tok-123".to_vec());
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
    }

    #[test]
    fn bearer_header_carries_the_token_and_is_sensitive() {
        let header = SecretValue::new(b"tok-123".to_vec()).bearer_header().unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer tok-123");
        assert!(header.is_sensitive());
    }

    #[test]
    fn a_token_that_cannot_be_a_header_gives_no_header() {
        assert!(SecretValue::new(b"tok\n123".to_vec()).bearer_header().is_none());
    }
}
