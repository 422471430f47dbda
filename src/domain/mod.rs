//! The values steerhook reasons about, parsed from the webhook body (SPEC §5)
//! and the document a hook receives (SPEC §6).

mod event;
mod hook_document;
mod route;

pub use event::{EventType, IncomingEvent, PayloadError, ReadEvent, Rejected};
pub use hook_document::{
    DocumentEvent, Enrichment, EnrichmentError, EnrichmentStatus, HookDocument,
};
pub use route::{Match, Mismatch};
