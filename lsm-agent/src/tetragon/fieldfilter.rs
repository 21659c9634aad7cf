//! `GetEventsRequest.field_filters`: Tetragon's per-client field masks.
//!
//! Each [`FieldFilter`](super::proto::tetragon::FieldFilter) applies to the events whose type
//! is in its `event_set` (every event when empty; `invert_event_set` turns the set into an
//! exclusion list). For those events it keeps only (`INCLUDE`) or removes (`EXCLUDE`) the
//! listed FieldMask paths of the event message itself, e.g. `process.binary` or `parent` of
//! `process_exec`; `node_name`, `time` and the other top-level fields are never touched.
//! Filters apply in request order, so whatever one removes stays removed (exclusion wins).
//!
//! The semantics are those of Tetragon's field filters (a nested mask over proto field names):
//! - paths name proto fields (`start_time`, `pod_labels`, a oneof member such as
//!   `args.file_arg`), separated by dots; unknown names match nothing;
//! - `INCLUDE` clears every set field not named; a named field without sub-paths is kept
//!   whole, one with sub-paths is filtered recursively (for repeated messages: each element;
//!   for maps: the named keys); listing `process` and `process.pid` together keeps only
//!   `process.pid`, as Tetragon's mask does;
//! - `EXCLUDE` clears the named leaves and recurses the same way;
//! - an empty mask changes nothing, whichever the action.
//!
//! prost has no reflection, so the event goes through `prost-reflect`: encoded, decoded as a
//! dynamic message of the descriptors `build.rs` compiled from `proto/`, masked, and decoded
//! back. That costs a copy per event and client, only for clients that asked for field
//! filters (Tetragon deep-copies the event for them too), and covers every field of the
//! proto, not only those the agent fills today.

use std::{collections::BTreeMap, sync::OnceLock};

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, Value};

use super::proto::{
    event_type,
    tetragon::{FieldFilter, FieldFilterAction, GetEventsResponse},
};

/// The encoded `FileDescriptorSet` of `proto/tetragon/*.proto` (with its imports).
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tetragon_descriptors.bin"));

#[derive(Debug, thiserror::Error)]
pub enum FieldFilterError {
    #[error("field filter {index}: invalid path {path:?} (empty field name)")]
    InvalidPath { index: usize, path: String },
    #[error("field filter {index}: unknown action {action}")]
    InvalidAction { index: usize, action: i32 },
    #[error("loading the tetragon proto descriptors: {0}")]
    Descriptors(String),
    #[error("field filter: re-encoding the event: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// A nested field mask: each key is a proto field name (or map key); an empty sub-mask means
/// "the whole field".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Mask(BTreeMap<String, Mask>);

impl Mask {
    /// Dots separate field names; a path that is a prefix of another one does not widen it
    /// (`process` + `process.pid` = `process.pid`), like Tetragon's nested masks.
    fn from_paths(paths: &[String], index: usize) -> Result<Self, FieldFilterError> {
        let mut root = Mask::default();
        for path in paths {
            let mut node = &mut root;
            for name in path.split('.') {
                if name.is_empty() {
                    return Err(FieldFilterError::InvalidPath {
                        index,
                        path: path.clone(),
                    });
                }
                node = node.0.entry(name.to_owned()).or_default();
            }
        }
        Ok(root)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, name: &str) -> Option<&Mask> {
        self.0.get(name)
    }

    /// INCLUDE: keep only the fields named by the mask.
    fn keep(&self, msg: &mut DynamicMessage) {
        if self.is_empty() {
            return;
        }
        let set: Vec<_> = msg.fields().map(|(fd, _)| fd).collect();
        for fd in set {
            match self.get(fd.name()) {
                None => msg.clear_field(&fd),
                Some(sub) if sub.is_empty() => {}
                Some(sub) => match msg.get_field_mut(&fd) {
                    Value::Map(map) => map.retain(|k, v| match sub.get(&map_key(k)) {
                        Some(m) => {
                            if let Value::Message(inner) = v {
                                m.keep(inner);
                            }
                            true
                        }
                        None => false,
                    }),
                    v => sub.each_message(v, Mask::keep),
                },
            }
        }
    }

    /// EXCLUDE: clear the fields named by the mask.
    fn prune(&self, msg: &mut DynamicMessage) {
        if self.is_empty() {
            return;
        }
        let set: Vec<_> = msg.fields().map(|(fd, _)| fd).collect();
        for fd in set {
            match self.get(fd.name()) {
                None => {}
                Some(sub) if sub.is_empty() => msg.clear_field(&fd),
                Some(sub) => match msg.get_field_mut(&fd) {
                    Value::Map(map) => map.retain(|k, v| match (sub.get(&map_key(k)), v) {
                        (None, _) => true,
                        (Some(m), Value::Message(inner)) if !m.is_empty() => {
                            m.prune(inner);
                            true
                        }
                        (Some(_), _) => false,
                    }),
                    v => sub.each_message(v, Mask::prune),
                },
            }
        }
    }

    /// Applies `f` to a message value or to every message of a list; sub-paths of scalar
    /// fields select nothing, so those are left alone.
    fn each_message(&self, v: &mut Value, f: fn(&Mask, &mut DynamicMessage)) {
        match v {
            Value::Message(m) => f(self, m),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(m) = item {
                        f(self, m);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Map keys as they are written in a path (Go's `MapKey.String()`).
fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

fn response_descriptor() -> Result<&'static MessageDescriptor, FieldFilterError> {
    static DESC: OnceLock<Result<MessageDescriptor, String>> = OnceLock::new();
    DESC.get_or_init(|| {
        let pool = DescriptorPool::decode(DESCRIPTORS).map_err(|e| e.to_string())?;
        pool.get_message_by_name("tetragon.GetEventsResponse")
            .ok_or_else(|| "tetragon.GetEventsResponse is missing".to_owned())
    })
    .as_ref()
    .map_err(|e| FieldFilterError::Descriptors(e.clone()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Include,
    Exclude,
}

#[derive(Debug)]
struct Compiled {
    event_set: Vec<i32>,
    invert: bool,
    action: Action,
    mask: Mask,
}

impl Compiled {
    fn applies_to(&self, event_type: i32) -> bool {
        self.event_set.is_empty() || self.event_set.contains(&event_type) != self.invert
    }
}

/// The field filters of one `GetEvents` request, ready to apply.
#[derive(Debug, Default)]
pub struct FieldFilters {
    filters: Vec<Compiled>,
}

impl FieldFilters {
    /// Fails on a path with an empty component (`process..pid`, `""`) or an unknown action.
    pub fn new(filters: &[FieldFilter]) -> Result<Self, FieldFilterError> {
        let filters = filters
            .iter()
            .enumerate()
            .map(|(index, f)| {
                let action = match FieldFilterAction::try_from(f.action) {
                    Ok(FieldFilterAction::Include) => Action::Include,
                    Ok(FieldFilterAction::Exclude) => Action::Exclude,
                    Err(_) => {
                        return Err(FieldFilterError::InvalidAction {
                            index,
                            action: f.action,
                        });
                    }
                };
                let paths = f.fields.as_ref().map_or(&[][..], |m| &m.paths[..]);
                Ok(Compiled {
                    event_set: f.event_set.clone(),
                    invert: f.invert_event_set.unwrap_or(false),
                    action,
                    mask: Mask::from_paths(paths, index)?,
                })
            })
            .collect::<Result<_, _>>()?;
        // Fail now rather than on the first event if the embedded descriptors are broken.
        response_descriptor()?;
        Ok(Self { filters })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The event as this client should see it: `None` when no filter applies to its type
    /// (send it unchanged), else the masked copy.
    pub fn apply(
        &self,
        ev: &GetEventsResponse,
    ) -> Result<Option<GetEventsResponse>, FieldFilterError> {
        let ty = event_type(ev) as i32;
        let active: Vec<&Compiled> = self.filters.iter().filter(|f| f.applies_to(ty)).collect();
        if active.is_empty() {
            return Ok(None);
        }
        let desc = response_descriptor()?.clone();
        let mut dynamic = DynamicMessage::decode(desc, ev.encode_to_vec().as_slice())?;
        let member = dynamic
            .fields()
            .map(|(fd, _)| fd)
            .find(|fd| fd.containing_oneof().is_some());
        let Some(member) = member else {
            return Ok(None);
        };
        if let Value::Message(inner) = dynamic.get_field_mut(&member) {
            for f in active {
                match f.action {
                    Action::Include => f.mask.keep(inner),
                    Action::Exclude => f.mask.prune(inner),
                }
            }
        }
        Ok(Some(GetEventsResponse::decode(
            dynamic.encode_to_vec().as_slice(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::tetragon::proto::tetragon::{
        Container, EventType, Image, KprobeArgument, KprobeFile, Pod, Process, ProcessExec,
        ProcessExit, ProcessKprobe, ProcessTracepoint, get_events_response::Event,
        kprobe_argument::Arg,
    };

    fn filter(event_set: &[EventType], paths: &[&str], action: FieldFilterAction) -> FieldFilter {
        FieldFilter {
            event_set: event_set.iter().map(|t| *t as i32).collect(),
            fields: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
            action: action as i32,
            invert_event_set: None,
        }
    }

    fn include(paths: &[&str]) -> FieldFilter {
        filter(&[], paths, FieldFilterAction::Include)
    }

    fn exclude(paths: &[&str]) -> FieldFilter {
        filter(&[], paths, FieldFilterAction::Exclude)
    }

    fn apply(filters: &[FieldFilter], ev: &GetEventsResponse) -> GetEventsResponse {
        FieldFilters::new(filters)
            .unwrap()
            .apply(ev)
            .unwrap()
            .unwrap_or_else(|| ev.clone())
    }

    fn process(binary: &str) -> Process {
        Process {
            exec_id: "id".into(),
            pid: Some(1337),
            uid: Some(0),
            binary: binary.into(),
            arguments: "-a".into(),
            start_time: Some(prost_types::Timestamp {
                seconds: 1000,
                nanos: 1000,
            }),
            pod: Some(Pod {
                namespace: "kube-system".into(),
                name: "foobar".into(),
                container: Some(Container {
                    id: "c".into(),
                    name: "c".into(),
                    image: Some(Image {
                        id: "i".into(),
                        name: "i".into(),
                    }),
                    pid: Some(1),
                    ..Default::default()
                }),
                pod_labels: HashMap::from([
                    ("app".to_owned(), "web".to_owned()),
                    ("tier".to_owned(), "fe".to_owned()),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exec() -> GetEventsResponse {
        GetEventsResponse {
            event: Some(Event::ProcessExec(ProcessExec {
                process: Some(process("/bin/sh")),
                parent: Some(process("/sbin/init")),
                ancestors: vec![process("/a"), process("/b")],
            })),
            node_name: "node".into(),
            time: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn exec_of(ev: &GetEventsResponse) -> &ProcessExec {
        match &ev.event {
            Some(Event::ProcessExec(e)) => e,
            other => panic!("not an exec: {other:?}"),
        }
    }

    #[test]
    fn include_keeps_only_listed_paths() {
        let out = apply(
            &[include(&["process.binary", "process.pod.name", "parent"])],
            &exec(),
        );
        let e = exec_of(&out);
        assert_eq!(
            e.process,
            Some(Process {
                binary: "/bin/sh".into(),
                pod: Some(Pod {
                    name: "foobar".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        );
        assert_eq!(e.parent, Some(process("/sbin/init")));
        assert!(e.ancestors.is_empty());
        // Top-level fields are not part of the event message.
        assert_eq!(out.node_name, "node");
        assert!(out.time.is_some());
    }

    #[test]
    fn exclude_removes_listed_paths() {
        let out = apply(
            &[exclude(&[
                "parent",
                "process.pid",
                "process.pod.container.image",
                "ancestors.binary",
            ])],
            &exec(),
        );
        let e = exec_of(&out);
        assert!(e.parent.is_none());
        let p = e.process.as_ref().unwrap();
        assert_eq!(p.pid, None);
        assert_eq!(p.binary, "/bin/sh");
        let c = p.pod.as_ref().unwrap().container.as_ref().unwrap();
        assert!(c.image.is_none());
        assert_eq!(c.pid, Some(1));
        assert_eq!(e.ancestors.len(), 2);
        assert!(
            e.ancestors
                .iter()
                .all(|a| a.binary.is_empty() && a.pid == Some(1337))
        );
    }

    /// Tetragon's own example: include, then exclude; exclusion wins.
    #[test]
    fn include_then_exclude() {
        let out = apply(
            &[
                include(&["parent", "process.pid", "process.uid", "process.pod"]),
                exclude(&[
                    "process.pid",
                    "process.pod.pod_labels",
                    "process.pod.container.image",
                    "process.pod.namespace",
                ]),
            ],
            &exec(),
        );
        let e = exec_of(&out);
        let p = e.process.as_ref().unwrap();
        assert_eq!(p.uid, Some(0));
        assert_eq!(p.pid, None);
        assert!(p.binary.is_empty() && p.start_time.is_none());
        let pod = p.pod.as_ref().unwrap();
        assert_eq!(pod.name, "foobar");
        assert!(pod.namespace.is_empty() && pod.pod_labels.is_empty());
        assert!(pod.container.as_ref().unwrap().image.is_none());
        assert!(e.parent.is_some());
    }

    #[test]
    fn event_set_and_inversion() {
        let f = filter(
            &[EventType::ProcessExit],
            &["process.pid"],
            FieldFilterAction::Exclude,
        );
        let ff = FieldFilters::new(std::slice::from_ref(&f)).unwrap();
        assert!(
            ff.apply(&exec()).unwrap().is_none(),
            "exec is not in the set"
        );
        let exit = GetEventsResponse {
            event: Some(Event::ProcessExit(ProcessExit {
                process: Some(process("/bin/sh")),
                ..Default::default()
            })),
            ..Default::default()
        };
        let out = ff.apply(&exit).unwrap().unwrap();
        match out.event {
            Some(Event::ProcessExit(e)) => assert_eq!(e.process.unwrap().pid, None),
            other => panic!("{other:?}"),
        }
        // Inverted: everything but exits.
        let inverted = FieldFilter {
            invert_event_set: Some(true),
            ..f
        };
        let ff = FieldFilters::new(&[inverted]).unwrap();
        assert!(ff.apply(&exit).unwrap().is_none());
        let out = ff.apply(&exec()).unwrap().unwrap();
        assert_eq!(exec_of(&out).process.as_ref().unwrap().pid, None);
        // Inverted over an exec filter, excluding everything: an empty but present exec.
        let ff = FieldFilters::new(&[FieldFilter {
            invert_event_set: Some(true),
            ..filter(
                &[EventType::ProcessKprobe],
                &["process", "parent", "ancestors"],
                FieldFilterAction::Exclude,
            )
        }])
        .unwrap();
        let out = ff.apply(&exec()).unwrap().unwrap();
        assert_eq!(exec_of(&out), &ProcessExec::default());
    }

    #[test]
    fn tracepoint_events_are_filtered_by_their_own_fields() {
        let tp = GetEventsResponse {
            event: Some(Event::ProcessTracepoint(ProcessTracepoint {
                process: Some(process("/usr/bin/cat")),
                subsys: "raw_syscalls".into(),
                event: "sys_enter".into(),
                args: vec![KprobeArgument {
                    arg: Some(Arg::LongArg(257)),
                    label: String::new(),
                }],
                policy_name: "syscalls".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = filter(
            &[EventType::ProcessTracepoint],
            &["subsys", "event"],
            FieldFilterAction::Include,
        );
        let out = apply(std::slice::from_ref(&f), &tp);
        let Some(Event::ProcessTracepoint(t)) = out.event else {
            panic!("not a tracepoint: {out:?}")
        };
        assert_eq!(
            t,
            ProcessTracepoint {
                subsys: "raw_syscalls".into(),
                event: "sys_enter".into(),
                ..Default::default()
            }
        );
        // The same filter for kprobes only leaves the tracepoint alone.
        let kprobe_only = FieldFilter {
            event_set: vec![EventType::ProcessKprobe as i32],
            ..f
        };
        let ff = FieldFilters::new(&[kprobe_only]).unwrap();
        assert!(ff.apply(&tp).unwrap().is_none());
    }

    #[test]
    fn empty_masks_change_nothing() {
        let ev = exec();
        assert_eq!(apply(&[include(&[])], &ev), ev);
        assert_eq!(apply(&[exclude(&[])], &ev), ev);
        let no_mask = FieldFilter {
            fields: None,
            ..include(&[])
        };
        assert_eq!(apply(&[no_mask], &ev), ev);
        assert!(FieldFilters::new(&[]).unwrap().is_empty());
    }

    #[test]
    fn narrower_path_wins_and_unknown_names_match_nothing() {
        let out = apply(&[include(&["process", "process.binary"])], &exec());
        assert_eq!(
            exec_of(&out).process,
            Some(Process {
                binary: "/bin/sh".into(),
                ..Default::default()
            })
        );
        let out = apply(&[include(&["nosuchfield"])], &exec());
        assert_eq!(exec_of(&out), &ProcessExec::default());
        let ev = exec();
        assert_eq!(apply(&[exclude(&["nosuchfield", "process.nope"])], &ev), ev);
    }

    #[test]
    fn map_keys_wrappers_and_oneof_members() {
        let out = apply(&[include(&["process.pod.pod_labels.app"])], &exec());
        let labels = &exec_of(&out)
            .process
            .as_ref()
            .unwrap()
            .pod
            .as_ref()
            .unwrap()
            .pod_labels;
        assert_eq!(
            labels,
            &HashMap::from([("app".to_owned(), "web".to_owned())])
        );
        let out = apply(&[exclude(&["process.pod.pod_labels.app"])], &exec());
        let labels = &exec_of(&out)
            .process
            .as_ref()
            .unwrap()
            .pod
            .as_ref()
            .unwrap()
            .pod_labels;
        assert_eq!(
            labels,
            &HashMap::from([("tier".to_owned(), "fe".to_owned())])
        );
        // Wrappers and timestamps are messages: a sub-path selects inside them.
        let out = apply(
            &[include(&["process.start_time.seconds", "process.pid"])],
            &exec(),
        );
        let p = exec_of(&out).process.clone().unwrap();
        assert_eq!(p.pid, Some(1337));
        assert_eq!(
            p.start_time,
            Some(prost_types::Timestamp {
                seconds: 1000,
                nanos: 0
            })
        );

        let kprobe = GetEventsResponse {
            event: Some(Event::ProcessKprobe(ProcessKprobe {
                process: Some(process("/bin/cat")),
                function_name: "security_file_permission".into(),
                args: vec![
                    KprobeArgument {
                        arg: Some(Arg::FileArg(KprobeFile {
                            path: "/etc/shadow".into(),
                            mount: "/".into(),
                            ..Default::default()
                        })),
                        label: String::new(),
                    },
                    KprobeArgument {
                        arg: Some(Arg::IntArg(4)),
                        label: "mask".into(),
                    },
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let out = apply(
            &[include(&["function_name", "args.file_arg.path"])],
            &kprobe,
        );
        let Some(Event::ProcessKprobe(k)) = out.event else {
            panic!("not a kprobe");
        };
        assert!(k.process.is_none());
        assert_eq!(k.function_name, "security_file_permission");
        assert_eq!(
            k.args,
            vec![
                KprobeArgument {
                    arg: Some(Arg::FileArg(KprobeFile {
                        path: "/etc/shadow".into(),
                        ..Default::default()
                    })),
                    label: String::new(),
                },
                KprobeArgument::default(),
            ]
        );
    }

    #[test]
    fn bad_paths_and_actions_are_rejected() {
        assert!(matches!(
            FieldFilters::new(&[include(&["process..pid"])]),
            Err(FieldFilterError::InvalidPath { index: 0, .. })
        ));
        assert!(matches!(
            FieldFilters::new(&[exclude(&["parent"]), include(&[""])]),
            Err(FieldFilterError::InvalidPath { index: 1, .. })
        ));
        let bad = FieldFilter {
            action: 7,
            ..include(&["process"])
        };
        assert!(matches!(
            FieldFilters::new(&[bad]),
            Err(FieldFilterError::InvalidAction { action: 7, .. })
        ));
    }
}
