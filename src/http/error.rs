use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::domain::PayloadError;
use crate::signature::SignatureError;

/// Seconds a sender is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Every refusal the HTTP layer gives, with its SPEC §4 code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 413
    #[error("the body is larger than server.max_body_bytes ({0} bytes)")]
    PayloadTooLarge(usize),
    /// 401
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// 400
    #[error("{0}")]
    PayloadInvalid(PayloadError),
    /// 408
    #[error("the body was not received within {0} ms")]
    BodyTimeout(u128),
    /// 400: the connection broke while reading.
    #[error("the body could not be read: {0}")]
    BodyUnreadable(String),
    /// 503
    #[error("the event could not be stored; retry later")]
    StorageUnavailable,
    /// 404
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// 405
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
}

impl ApiError {
    /// The SPEC §4 code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PayloadTooLarge(_) => "PAYLOAD_TOO_LARGE",
            Self::Signature(e) => e.code(),
            Self::PayloadInvalid(_) => "PAYLOAD_INVALID",
            Self::BodyTimeout(_) => "REQUEST_TIMEOUT",
            Self::BodyUnreadable(_) => "BODY_UNREADABLE",
            Self::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Self::NotFound(_) => "NOT_FOUND",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadInvalid(_) | Self::BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// `{"error": "...", "code": "..."}` with the right status and headers.
    pub fn response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status());
        if matches!(self, Self::StorageUnavailable) {
            b.insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()));
        }
        if matches!(self, Self::PayloadTooLarge(_) | Self::BodyTimeout(_)) {
            // The rest of the body is not read; the connection cannot be reused.
            b.insert_header(("Connection", "close"));
        }
        b.json(serde_json::json!({"error": self.to_string(), "code": self.code()}))
    }
}
