//! gRPC status codes: the one table of their numbers and names (as Istio's `grpcStatus`
//! fields and retry conditions name them), and Envoy's mapping from an HTTP status to the
//! code a gRPC caller is answered with.

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $n:literal, $text:literal, $retry_on:literal;)*) => {
        /// A gRPC status code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Code {
            $($(#[$doc])* $name = $n,)*
        }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];

            /// The code's name as the gRPC spec and Istio's `grpcStatus` write it (`UNAVAILABLE`).
            pub const fn name(self) -> &'static str {
                match self { $(Code::$name => $text,)* }
            }

            /// The code's name as Envoy's `retryOn` writes it (`unavailable`, `deadline-exceeded`).
            pub const fn retry_on_name(self) -> &'static str {
                match self { $(Code::$name => $retry_on,)* }
            }
        }
    };
}

codes! {
    /// 0: success.
    Ok = 0, "OK", "ok";
    /// 1.
    Cancelled = 1, "CANCELLED", "cancelled";
    /// 2.
    Unknown = 2, "UNKNOWN", "unknown";
    /// 3.
    InvalidArgument = 3, "INVALID_ARGUMENT", "invalid-argument";
    /// 4.
    DeadlineExceeded = 4, "DEADLINE_EXCEEDED", "deadline-exceeded";
    /// 5.
    NotFound = 5, "NOT_FOUND", "not-found";
    /// 6.
    AlreadyExists = 6, "ALREADY_EXISTS", "already-exists";
    /// 7.
    PermissionDenied = 7, "PERMISSION_DENIED", "permission-denied";
    /// 8.
    ResourceExhausted = 8, "RESOURCE_EXHAUSTED", "resource-exhausted";
    /// 9.
    FailedPrecondition = 9, "FAILED_PRECONDITION", "failed-precondition";
    /// 10.
    Aborted = 10, "ABORTED", "aborted";
    /// 11.
    OutOfRange = 11, "OUT_OF_RANGE", "out-of-range";
    /// 12.
    Unimplemented = 12, "UNIMPLEMENTED", "unimplemented";
    /// 13.
    Internal = 13, "INTERNAL", "internal";
    /// 14.
    Unavailable = 14, "UNAVAILABLE", "unavailable";
    /// 15.
    DataLoss = 15, "DATA_LOSS", "data-loss";
    /// 16.
    Unauthenticated = 16, "UNAUTHENTICATED", "unauthenticated";
}

impl Code {
    /// The code numbered `n`.
    pub fn from_u16(n: u16) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }

    /// The code's number.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The code named `name` (`UNAVAILABLE`), as `grpcStatus` fields write it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The code of a `grpc-status` header or trailer value.
    pub fn from_header(value: &http::HeaderValue) -> Option<Self> {
        value.to_str().ok()?.parse().ok().and_then(Self::from_u16)
    }

    /// The code a gRPC caller gets for a local reply of HTTP `status`: Envoy's
    /// `Grpc::Utility::httpToGrpcStatus`, plus 413 as `RESOURCE_EXHAUSTED` (a request over the
    /// body limit, which Envoy would answer `UNKNOWN`).
    pub fn from_http(status: http::StatusCode) -> Self {
        match status.as_u16() {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            413 => Code::ResourceExhausted,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// A `grpc-message` value: the text percent-encoded as the gRPC spec asks (every byte
/// outside printable ASCII, and `%` itself).
pub fn encode_message(text: &[u8]) -> http::HeaderValue {
    if text.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'%')
        && let Ok(v) = http::HeaderValue::from_bytes(text)
    {
        return v;
    }
    let mut out = String::with_capacity(text.len() * 3);
    for b in text {
        if (0x20..0x7f).contains(b) && *b != b'%' {
            out.push(char::from(*b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    http::HeaderValue::from_str(&out).expect("printable ASCII")
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_agree() {
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.as_u16()), i);
            assert_eq!(Code::from_u16(c.as_u16()), Some(*c));
            assert_eq!(Code::from_name(c.name()), Some(*c));
            assert_eq!(c.retry_on_name(), c.name().to_ascii_lowercase().replace('_', "-"));
        }
        assert_eq!(Code::from_u16(17), None);
        assert_eq!(Code::from_name("unavailable"), None, "grpcStatus names are upper case");
        assert_eq!(Code::from_header(&http::HeaderValue::from_static("14")), Some(Code::Unavailable));
        assert_eq!(Code::from_header(&http::HeaderValue::from_static("x")), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message(b"no healthy upstream"), "no healthy upstream");
        assert_eq!(encode_message("100% sûr\n".as_bytes()), "100%25 s%C3%BBr%0A");
    }

    #[test]
    fn http_status_maps_as_envoy_maps_it() {
        use http::StatusCode as S;
        assert_eq!(Code::from_http(S::NOT_FOUND), Code::Unimplemented);
        assert_eq!(Code::from_http(S::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(Code::from_http(S::GATEWAY_TIMEOUT), Code::Unavailable);
        assert_eq!(Code::from_http(S::FORBIDDEN), Code::PermissionDenied);
        assert_eq!(Code::from_http(S::UNAUTHORIZED), Code::Unauthenticated);
        assert_eq!(Code::from_http(S::BAD_REQUEST), Code::Internal);
        assert_eq!(Code::from_http(S::PAYLOAD_TOO_LARGE), Code::ResourceExhausted);
        assert_eq!(Code::from_http(S::IM_A_TEAPOT), Code::Unknown);
    }
}
