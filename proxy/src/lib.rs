//! Kakunin's egress proxy: the agent speaks plain HTTP to it; it checks each
//! request against the agent's scope policy and sends it on over mutual TLS
//! with the agent's certificate.

pub mod audit;
pub mod batch_signer;
pub mod body;
pub mod ca_serve;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod errors;
pub mod gateway;
pub mod headers;
pub mod identity;
pub mod json_line;
pub mod keyguard;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod resolve;
pub mod returning_body;
pub mod revocation;
pub mod rotation;
pub mod run;
pub mod server;
pub mod signing;
pub mod trail;
pub mod upstream;
