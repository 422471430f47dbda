//! `POST {webhook_path}`: the checks of SPEC §4, in order.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::{ApiError, AppState};
use crate::clock::to_unix_ms;
use crate::domain::{ReadEvent, Rejected};
use crate::signature::SIGNATURE_HEADER;
use crate::store::{InsertOutcome, NewEvent, QuarantinedBody};

/// Receives one webhook. The body stays raw bytes until the signature is
/// verified; only a `VerifiedBody` can be read as an event.
///
/// No span per request: its creation, field records and an enter/exit on
/// every poll cost more than the one line, which carries the same fields.
pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let client = state.client_addr(&req);
    let client_field = client.as_deref().unwrap_or("-");
    let mut ids = Ids::default();
    let (response, code) = match handle(&req, payload, &state, client.clone(), &mut ids).await {
        Ok((resp, code)) => (resp, code),
        Err(e) => {
            if matches!(e, ApiError::StorageUnavailable) {
                tracing::error!(
                    client = client_field,
                    event_id = ids.event_id.as_deref(),
                    run_id = ids.run_id.as_deref(),
                    code = e.code(),
                    "webhook refused: {e}"
                );
            }
            (e.response(), e.code())
        }
    };
    let latency = started.elapsed();
    state.metrics.observe_webhook(code, latency);
    tracing::info!(
        client = client_field,
        event_id = ids.event_id.as_deref(),
        run_id = ids.run_id.as_deref(),
        status = response.status().as_u16(),
        code,
        latency_us = latency.as_micros() as u64,
        "webhook"
    );
    response
}

/// The ids of the event being received, once the body has been read as one.
#[derive(Default)]
struct Ids {
    event_id: Option<String>,
    run_id: Option<String>,
}

async fn handle(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    client: Option<String>,
    ids: &mut Ids,
) -> Result<(HttpResponse, &'static str), ApiError> {
    let body = read_body(req, payload, state).await?;
    // The raw bytes: a header value may hold octets from 0x80 up (obs-text),
    // and in an unknown part they must not make the header malformed.
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .map(actix_web::http::header::HeaderValue::as_bytes);
    let now = state.clock.now();
    let verified = state.verifier.verify(header, body, now)?;
    let received_at = to_unix_ms(now);
    let event = match ReadEvent::parse(verified) {
        Ok(ReadEvent::Run(event)) => event,
        Ok(ReadEvent::Other { event_type }) => {
            tracing::info!(client = client.as_deref(), event_type, "ignored event type");
            return Ok((
                HttpResponse::Ok().json(serde_json::json!({"status": "ignored"})),
                "IGNORED",
            ));
        }
        Err(Rejected { error, body }) => {
            let q_client = client.clone();
            let q = QuarantinedBody {
                received_at,
                client_addr: client,
                signed_at: body.timestamp(),
                reason: error.to_string(),
                body: body.into_bytes(),
            };
            // If even the quarantine cannot be written, say so: the sender
            // retries and the body is not lost.
            state
                .store
                .quarantine(q)
                .await
                .map_err(|e| {
                    tracing::error!(client = q_client.as_deref(), error = %e, "cannot quarantine an invalid payload");
                    ApiError::StorageUnavailable
                })?;
            tracing::warn!(client = q_client.as_deref(), reason = %error, "invalid payload quarantined");
            return Err(ApiError::PayloadInvalid(error));
        }
    };
    ids.event_id = Some(event.id.clone());
    ids.run_id = Some(event.run_id.clone());
    let outcome = state
        .store
        .insert_event(NewEvent {
            event,
            received_at,
            client_addr: client,
        })
        .await
        .map_err(|e| {
            tracing::error!(
                event_id = ids.event_id.as_deref(),
                error = %e,
                "event not stored"
            );
            ApiError::StorageUnavailable
        })?;
    Ok(match outcome {
        InsertOutcome::Accepted { id } => {
            state.wake_worker.notify_one();
            (
                HttpResponse::Accepted().json(serde_json::json!({"status": "accepted", "id": id})),
                "ACCEPTED",
            )
        }
        InsertOutcome::Duplicate { id } => (
            HttpResponse::Ok().json(serde_json::json!({"status": "duplicate", "id": id})),
            "DUPLICATE",
        ),
    })
}

/// Reads the body, refusing as soon as it passes `max_body_bytes` (before
/// reading more) and when it does not arrive within the body timeout.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<Vec<u8>, ApiError> {
    let max = state.max_body_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::PayloadTooLarge(max));
    }
    let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::BodyUnreadable(e.to_string()))?;
            if body.len() + chunk.len() > max {
                return Err(ApiError::PayloadTooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(())) => Ok(body),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::BodyTimeout(state.body_timeout.as_millis())),
    }
}
