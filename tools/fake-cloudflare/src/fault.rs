//! Failures the fake can be told to produce on the generate endpoints.

use serde::{Deserialize, Serialize};

/// A way for the generate endpoints to misbehave.
///
/// JSON form (body of `PUT /_fake/fault`, plus an optional `"times"`):
/// `{"mode":"none"}`, `{"mode":"unauthorized"}`, `{"mode":"forbidden"}`,
/// `{"mode":"bot_block"}`, `{"mode":"not_found"}`,
/// `{"mode":"rate_limited","retryAfter":7}`, `{"mode":"server_error","status":503}`,
/// `{"mode":"slow","delayMs":2000}`, `{"mode":"malformed"}`,
/// `{"mode":"missing_credentials"}`, `{"mode":"legacy_shape"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// 401, as for a wrong token.
    Unauthorized,
    /// 403 with a JSON error envelope.
    Forbidden,
    /// 403 with the plain-text `error code: 1010` of Cloudflare's edge bot
    /// block, which a client must not mistake for a refused key.
    BotBlock,
    /// 404, as for an unknown key id.
    NotFound,
    /// 429, with a `Retry-After` header (seconds) when `retry_after` is set.
    RateLimited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// A 5xx answer (`status`, 500 unless given).
    ServerError {
        #[serde(default = "internal_server_error")]
        status: u16,
    },
    /// Wait `delay_ms` milliseconds, then answer normally.
    Slow { delay_ms: u64 },
    /// 201 with a body that is not valid JSON.
    Malformed,
    /// 201 with `iceServers` that carry no `username` or `credential`.
    MissingCredentials,
    /// `generate-ice-servers` answers with the legacy single-object shape.
    LegacyShape,
}

fn internal_server_error() -> u16 {
    500
}

/// The fault in force and how many more requests it applies to.
#[derive(Clone, Debug, Default)]
pub(crate) struct ActiveFault {
    fault: Fault,
    /// `None`: until changed.
    remaining: Option<u32>,
}

impl ActiveFault {
    pub(crate) fn new(fault: Fault, times: Option<u32>) -> ActiveFault {
        ActiveFault {
            fault,
            remaining: times,
        }
    }

    /// The fault for the request being handled; uses up one of `times`.
    pub(crate) fn take(&mut self) -> Fault {
        match &mut self.remaining {
            None => self.fault.clone(),
            Some(0) => Fault::None,
            Some(remaining) => {
                *remaining -= 1;
                let fault = self.fault.clone();
                if *remaining == 0 {
                    *self = ActiveFault::default();
                }
                fault
            }
        }
    }
}

/// Body of `PUT /_fake/fault`: a [`Fault`] plus an optional `times`.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultRequest {
    #[serde(flatten)]
    pub(crate) fault: Fault,
    pub(crate) times: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_with_times_applies_that_many_times_then_reverts_to_none() {
        let mut active = ActiveFault::new(Fault::Unauthorized, Some(2));
        assert_eq!(active.take(), Fault::Unauthorized);
        assert_eq!(active.take(), Fault::Unauthorized);
        assert_eq!(active.take(), Fault::None);
    }

    #[test]
    fn a_fault_without_times_stays_until_changed() {
        let mut active = ActiveFault::new(Fault::Malformed, None);
        for _ in 0..5 {
            assert_eq!(active.take(), Fault::Malformed);
        }
    }

    #[test]
    fn the_fault_json_form_uses_snake_case_modes_and_camel_case_fields() {
        let request: FaultRequest =
            serde_json::from_str(r#"{"mode":"rate_limited","retryAfter":7,"times":3}"#).unwrap();
        assert_eq!(request.fault, Fault::RateLimited { retry_after: Some(7) });
        assert_eq!(request.times, Some(3));

        let request: FaultRequest = serde_json::from_str(r#"{"mode":"server_error"}"#).unwrap();
        assert_eq!(request.fault, Fault::ServerError { status: 500 });
        assert_eq!(request.times, None);

        let slow = serde_json::to_value(Fault::Slow { delay_ms: 250 }).unwrap();
        assert_eq!(slow, serde_json::json!({"mode": "slow", "delayMs": 250}));
    }
}
