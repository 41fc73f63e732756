//! The offline front end: feed a capture's frames through the engine.

pub mod capture;
