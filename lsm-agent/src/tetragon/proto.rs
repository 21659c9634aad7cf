//! Generated code for the Tetragon-compatible API (see `proto/tetragon/*.proto`), and the
//! type of a wire event.

use tetragon::{EventType, GetEventsResponse, get_events_response::Event};

/// Package `tetragon`: messages, `fine_guidance_sensors_server` and `fine_guidance_sensors_client`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod tetragon {
    tonic::include_proto!("tetragon");
}

/// The oneof field number, which is what `EventType` values mean.
pub fn event_type(ev: &GetEventsResponse) -> EventType {
    match &ev.event {
        Some(Event::ProcessExec(_)) => EventType::ProcessExec,
        Some(Event::ProcessExit(_)) => EventType::ProcessExit,
        Some(Event::ProcessKprobe(_)) => EventType::ProcessKprobe,
        Some(Event::ProcessTracepoint(_)) => EventType::ProcessTracepoint,
        Some(Event::ProcessUprobe(_)) => EventType::ProcessUprobe,
        Some(Event::ProcessThrottle(_)) => EventType::ProcessThrottle,
        Some(Event::ProcessLsm(_)) => EventType::ProcessLsm,
        Some(Event::ProcessUsdt(_)) => EventType::ProcessUsdt,
        Some(Event::Test(_)) => EventType::Test,
        Some(Event::RateLimitInfo(_)) => EventType::RateLimitInfo,
        None => EventType::Undef,
    }
}

/// An argument without a label, as tests write event args.
#[cfg(test)]
impl From<tetragon::kprobe_argument::Arg> for tetragon::KprobeArgument {
    fn from(arg: tetragon::kprobe_argument::Arg) -> Self {
        tetragon::KprobeArgument {
            arg: Some(arg),
            label: String::new(),
        }
    }
}
