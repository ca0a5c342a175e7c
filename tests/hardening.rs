//! Attacks on a running server and its clients, one module per area of the security review
//! (issue #13): each test performs the attack on loopback against real servers and clients,
//! asserts the bounded behaviour, and checks that a bystander client keeps working meanwhile.
#![allow(clippy::unwrap_used)]

#[path = "hardening/admission.rs"]
mod admission;
mod common;
#[path = "hardening/logs.rs"]
mod logs;
#[path = "hardening/public.rs"]
mod public;
#[path = "hardening/routes.rs"]
mod routes;
#[path = "hardening/vhost.rs"]
mod vhost;
