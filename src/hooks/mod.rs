//! Outputs: shell hooks and e-mail.

pub mod email;
pub mod shell;
