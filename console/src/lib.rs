//! The Console: enrolls Defenders, holds their gRPC streams, stores what they report in SQLite,
//! and shows it in a web UI and REST API.

pub mod admin;
pub mod bundle;
pub mod cli;
pub mod clock;
pub mod fargate;
pub mod grpc;
pub mod image_resolve;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod pki;
pub mod policy_feed;
pub mod prompt;
pub mod ratelimit;
pub mod secrets;
pub mod server;
pub mod status;
pub mod store;
pub mod vulndb;
pub mod web;
pub mod webhook;
