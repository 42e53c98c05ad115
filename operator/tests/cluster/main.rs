//! The cluster tier of the operator: the real operator binary, webhook and
//! chart against the full local stack (`e2e/stack`), one binary with a
//! module per concern. Tests share the stack and run side by side; those
//! that stop a component (the API server outage, the chaos run) or must see
//! no other test's pods (the malformed corpus) take turns on a second stack
//! beside it ([`heartbeat_e2e::Stack::alone`]).

mod alerts;
mod apiserver;
mod bad_input;
mod chaos;
mod chart;
mod controller;
mod listeners;
mod security;
mod webhook;
