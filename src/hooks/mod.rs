//! Outputs: shell hooks and e-mail.
