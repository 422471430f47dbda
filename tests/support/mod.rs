//! Helpers shared by the black-box tests.
#![allow(dead_code)] // each test binary uses a different part

pub mod app;
pub mod instance;
pub mod poll;
pub mod process;
pub mod smtp;
pub mod tools;
