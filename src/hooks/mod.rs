//! Outputs: shell hooks and e-mail.

pub mod email;
