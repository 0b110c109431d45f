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

    /// `Bearer <token>`, with surrounding white space (a trailing newline from `echo`) removed
    /// and marked sensitive so HTTP tooling does not record it.
    pub fn bearer_header(&self) -> reqwest::header::HeaderValue {
        let token = String::from_utf8_lossy(&self.0);
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Bearer invalid-token-characters"));
        value.set_sensitive(true);
        value
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
    fn bearer_header_trims_a_trailing_newline() {
        let value = SecretValue::new(b"tok-123\n".to_vec());
        assert_eq!(value.bearer_header().to_str().unwrap(), "Bearer tok-123");
        assert!(value.bearer_header().is_sensitive());
    }
}
