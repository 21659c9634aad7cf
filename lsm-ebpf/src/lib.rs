#![no_std]
// Empty on purpose: lets lsm-agent name this crate as a build-dependency, so cargo rebuilds the
// agent (and the embedded BPF object) when the probe sources change.
