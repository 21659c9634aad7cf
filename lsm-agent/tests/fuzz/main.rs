//! Fuzzing of what the agent reads from others, bounded so that `make test` runs it: the
//! policy parser and compiler (YAML from users and the API server), the ring-buffer decoder
//! and the event conversion behind it (bytes from the kernel), and the `GetEvents` filters
//! (requests from any local client). Each target must never panic, and must answer bad input
//! with an error.
//!
//! The inputs are mutations of a corpus checked in with the repository (every policy file of
//! `testdata/policies`, `policies`, `integration/broken-policies` and `tests/fuzz/corpus`,
//! and the quickstart policies) and records built from the ABI types. A failing case is
//! shrunk and saved by proptest in `tests/proptest-regressions/main.txt`; check it in: it is
//! replayed first from then on (the first entry is the slot-index overflow this test found).
//! `PROPTEST_CASES` changes the number of cases (default here: 1024 per target, a few
//! seconds in all).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use lsm_agent::{
    events::{decode::decode, enrich::ProcessCache},
    policy::{compile::MapImage, parse::parse_policy},
    tetragon::{
        compact::{CompactOptions, encode_compact},
        convert::to_response,
        filter::EventFilter,
        json::event_to_json,
        proto::tetragon::{FieldFilter, Filter, GetEventsRequest},
    },
};
use lsm_shared::*;
use proptest::prelude::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every seed policy: (file name, text).
fn policy_corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let root = repo();
        let dirs = [
            root.join("testdata/policies"),
            root.join("policies"),
            root.join("integration/broken-policies"),
            root.join("lsm-agent/tests/fuzz/corpus/policies"),
            root.join("../shared/testdata/tetragon-quickstart"),
        ];
        let mut out = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.filter_map(Result::ok) {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) != Some("yaml") {
                    continue;
                }
                if let Ok(text) = std::fs::read_to_string(&p) {
                    out.push((p.display().to_string(), text));
                }
            }
        }
        out.sort();
        assert!(
            out.len() >= 50,
            "the policy corpus has only {} files",
            out.len()
        );
        out
    })
}

/// One edit of a text: at a position given as a fraction of its length.
#[derive(Debug, Clone)]
enum Edit {
    /// Replaces one byte.
    Set(f64, u8),
    /// Removes up to this many bytes.
    Delete(f64, usize),
    /// Inserts a string.
    Insert(f64, String),
    /// Repeats the line there.
    DupLine(f64),
    /// Swaps the lines at two positions.
    SwapLines(f64, f64),
}

/// Characters that matter to YAML and to our values, and some that should not appear.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(":".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("{".to_string()),
        Just("[".to_string()),
        Just("&a".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("${X}".to_string()),
        Just("-1".to_string()),
        Just("4294967296".to_string()),
        Just("0x".to_string()),
        Just("/".to_string()),
        Just("\u{0}".to_string()),
        Just("é".to_string()),
        "[a-zA-Z0-9_./:-]{1,12}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = 0.0..1.0f64;
    prop_oneof![
        (at.clone(), any::<u8>()).prop_map(|(a, b)| Edit::Set(a, b)),
        (at.clone(), 1..40usize).prop_map(|(a, n)| Edit::Delete(a, n)),
        (at.clone(), token()).prop_map(|(a, s)| Edit::Insert(a, s)),
        at.clone().prop_map(Edit::DupLine),
        (at.clone(), at).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    let pos = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
    for e in edits {
        match e {
            Edit::Set(at, v) if !b.is_empty() => {
                let i = pos(*at, b.len() - 1);
                b[i] = *v;
            }
            Edit::Set(..) => {}
            Edit::Delete(at, n) => {
                let i = pos(*at, b.len());
                let j = (i + n).min(b.len());
                b.drain(i..j);
            }
            Edit::Insert(at, s) => {
                let i = pos(*at, b.len());
                b.splice(i..i, s.bytes());
            }
            Edit::DupLine(at) | Edit::SwapLines(at, _) => {
                let mut lines: Vec<Vec<u8>> =
                    b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let i = pos(*at, lines.len() - 1);
                if let Edit::SwapLines(_, other) = e {
                    let j = pos(*other, lines.len() - 1);
                    lines.swap(i, j);
                } else {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                b = lines.join(&b'\n');
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// The image the decoder's events are converted against: the parseable corpus policies.
fn image() -> &'static MapImage {
    static IMAGE: OnceLock<MapImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let policies: Vec<_> = policy_corpus()
            .iter()
            .filter(|(f, _)| f.contains("quickstart") || f.contains("testdata/policies/observe"))
            .filter_map(|(f, t)| parse_policy(t, Path::new(f)).ok())
            .collect();
        // As many as fit together (the slots of a hook are shared), greedily.
        let mut kept: Vec<&lsm_agent::policy::ir::Policy> = Vec::new();
        let mut img = MapImage::default();
        for p in &policies {
            kept.push(p);
            let numbered: Vec<(u32, &lsm_agent::policy::ir::Policy)> =
                (1..).zip(kept.iter().copied()).collect();
            match lsm_agent::policy::compile::compile(&numbered) {
                Ok(i) => img = i,
                Err(_) => {
                    kept.pop();
                }
            }
        }
        assert!(
            kept.len() >= 10,
            "only {} corpus policies compiled",
            kept.len()
        );
        img
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1024),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any mutation of any corpus policy: parsed, checked and compiled without a panic; a
    /// refusal names the file.
    #[test]
    fn mutated_policies_are_parsed_and_compiled_or_refused_with_their_file(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let corpus = policy_corpus();
        let (file, text) = &corpus[seed.index(corpus.len())];
        let mutated = apply(text, &edits);
        match parse_policy(&mutated, Path::new("fuzz.yaml")) {
            Ok(p) => {
                let _ = lsm_agent::policy::compile::compile(&[(1, &p)]);
            }
            Err(e) => prop_assert!(
                e.to_string().starts_with("fuzz.yaml"),
                "error without its file (seed {file}): {e}"
            ),
        }
    }

    /// Any bytes, and records of every kind with any field values: decoded or refused, and a
    /// decoded one converted to Tetragon's events, their JSON and compact lines, without a
    /// panic.
    #[test]
    fn any_ring_record_is_decoded_and_converted_or_refused(
        kind in prop_oneof![Just(EVENT_EXEC), Just(EVENT_FORK), Just(EVENT_EXIT), Just(EVENT_HOOK), any::<u32>()],
        hook in prop_oneof![0..NUM_HOOKS, any::<u32>()],
        body in prop::collection::vec(any::<u8>(), 0..(2 * size_of::<HookEvent>())),
        full in any::<bool>(),
    ) {
        let mut rec = body;
        if full {
            rec.resize(size_of::<HookEvent>().max(size_of::<ExecEvent>()), 0);
        }
        if rec.len() >= 4 {
            rec[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        let at = std::mem::offset_of!(HookEvent, hook);
        if kind == EVENT_HOOK && rec.len() >= at + 4 {
            rec[at..at + 4].copy_from_slice(&hook.to_ne_bytes());
        }
        if let Ok(ev) = decode(&rec) {
            let mut cache = ProcessCache::new("fuzz".into(), None);
            for out in cache.convert(&ev, image()) {
                let resp = to_response(&out);
                let _ = event_to_json(&resp);
                let _ = encode_compact(&resp, &CompactOptions::default());
            }
        }
    }

    /// Any filters a client may send: accepted or refused, and an accepted one applied to
    /// events without a panic.
    #[test]
    fn any_get_events_filter_is_compiled_and_applied_or_refused(
        regexes in prop::collection::vec("[a-z.*+?()\\[\\]|^$\\\\{}0-9/-]{0,16}", 0..4),
        labels in prop::collection::vec("[a-z=!,() in-]{0,20}", 0..3),
        events in prop::collection::vec(any::<i32>(), 0..4),
        paths in prop::collection::vec("[a-z_.]{0,24}", 0..4),
        action in any::<i32>(),
        raw in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let filter = Filter {
            binary_regex: regexes.clone(),
            parent_binary_regex: regexes.clone(),
            arguments_regex: regexes.clone(),
            pod_regex: regexes.clone(),
            namespace_regex: regexes,
            labels,
            event_set: events.clone(),
            ..Default::default()
        };
        let req = GetEventsRequest {
            allow_list: vec![filter.clone()],
            deny_list: vec![filter],
            field_filters: vec![FieldFilter {
                event_set: events,
                fields: Some(prost_types::FieldMask { paths }),
                action,
                invert_event_set: Some(action % 2 == 0),
            }],
            ..Default::default()
        };
        let decoded = <GetEventsRequest as prost::Message>::decode(raw.as_slice()).ok();
        for req in std::iter::once(req).chain(decoded) {
            if let Ok(f) = EventFilter::new(&req) {
                for ev in sample_events() {
                    if f.matches(ev) {
                        let _ = f.project(ev.clone());
                    }
                }
            }
        }
    }
}

/// A few events of the kinds the filters look at.
fn sample_events() -> &'static [lsm_agent::tetragon::proto::tetragon::GetEventsResponse] {
    static EVENTS: OnceLock<Vec<lsm_agent::tetragon::proto::tetragon::GetEventsResponse>> =
        OnceLock::new();
    EVENTS.get_or_init(|| {
        let header = |kind: u32| EventHeader {
            kind,
            cpu: 0,
            ktime: 1,
            pid: 7,
            tgid: 7,
            cgroup_id: 1,
        };
        let mut exec = bytes_of(&header(EVENT_EXEC));
        exec.resize(size_of::<ExecEvent>(), 0);
        let exit = ExitEvent {
            header: header(EVENT_EXIT),
            exit_code: 9,
            _pad: 0,
        };
        let mut cache = ProcessCache::new("fuzz".into(), None);
        let mut out = Vec::new();
        for rec in [exec, bytes_of(&exit)] {
            if let Ok(ev) = decode(&rec) {
                out.extend(cache.convert(&ev, image()).iter().map(to_response));
            }
        }
        out
    })
}

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain ABI struct.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, size_of::<T>()) }.to_vec()
}
