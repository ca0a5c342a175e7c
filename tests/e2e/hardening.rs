//! Attacks on a running server and its clients, one module per area of the security review
//! (issue #13): each test performs the attack on loopback against real servers and clients,
//! asserts the bounded behaviour, and checks that a bystander client keeps working meanwhile.
#![allow(clippy::unwrap_used)]

mod admission;
mod logs;
mod public;
mod routes;
mod vhost;
