//! The agent's host-side integration tests (no root, no kernel), as one test binary: each
//! module was a binary of its own, and every release binary links the whole agent, which
//! `make test` paid for eleven times.

mod architecture;
mod dashboard;
mod deploy;
mod export;
mod lsmctl;
mod metrics;
mod startup;
