//! `GetEventsRequest` allow and deny lists (Tetragon's `Filter`), applied to wire events: the
//! `GetEvents` server and the JSON export both select events with them.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt as _};
use regex::Regex;
use tonic::Status;

use super::{
    fieldfilter::{FieldFilterError, FieldFilters},
    labels,
    proto::{
        event_type,
        tetragon::{
            Filter, GetEventsRequest, GetEventsResponse, Process, get_events_response::Event,
        },
    },
};

/// Filter fields of a `Filter`, compiled once per `GetEvents` call.
#[derive(Debug, Default)]
struct CompiledFilter {
    binary: Vec<Regex>,
    namespace: Vec<String>,
    health_check: Option<bool>,
    pid: Vec<u32>,
    event_set: Vec<i32>,
    pod: Vec<Regex>,
    arguments: Vec<Regex>,
    /// Kubernetes label selectors on the pod's labels.
    labels: Vec<Selector>,
    policy_names: Vec<String>,
    parent_binary: Vec<Regex>,
    parent_arguments: Vec<Regex>,
    container_id: Vec<Regex>,
    in_init_tree: Option<bool>,
    ancestor_binary: Vec<Regex>,
    container_name: Vec<Regex>,
    namespace_regex: Vec<Regex>,
}

fn compile_regexes(field: &str, patterns: &[String]) -> Result<Vec<Regex>, Status> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p)
                .map_err(|e| Status::invalid_argument(format!("invalid {field} {p:?}: {e}")))
        })
        .collect()
}

impl CompiledFilter {
    fn new(f: &Filter) -> Result<Self, Status> {
        // Silently ignoring these would stream events the client asked not to see.
        let unsupported = [
            ("pid_set", !f.pid_set.is_empty()),
            ("capabilities", f.capabilities.is_some()),
            ("cel_expression", !f.cel_expression.is_empty()),
        ];
        if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(Status::unimplemented(format!(
                "filter field {name} is not supported"
            )));
        }
        Ok(Self {
            binary: compile_regexes("binary_regex", &f.binary_regex)?,
            namespace: f.namespace.clone(),
            health_check: f.health_check,
            pid: f.pid.clone(),
            event_set: f.event_set.clone(),
            pod: compile_regexes("pod_regex", &f.pod_regex)?,
            arguments: compile_regexes("arguments_regex", &f.arguments_regex)?,
            labels: f
                .labels
                .iter()
                .map(|l| {
                    labels::parse(l).map_err(|e| {
                        Status::invalid_argument(format!("invalid labels selector {l:?}: {e}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            policy_names: f.policy_names.clone(),
            parent_binary: compile_regexes("parent_binary_regex", &f.parent_binary_regex)?,
            parent_arguments: compile_regexes("parent_arguments_regex", &f.parent_arguments_regex)?,
            container_id: compile_regexes("container_id", &f.container_id)?,
            in_init_tree: f.in_init_tree,
            ancestor_binary: compile_regexes("ancestor_binary_regex", &f.ancestor_binary_regex)?,
            container_name: compile_regexes("container_name_regex", &f.container_name_regex)?,
            namespace_regex: compile_regexes("namespace_regex", &f.namespace_regex)?,
        })
    }

    /// Set fields are ANDed, values within a field ORed; an empty filter matches everything.
    fn matches(&self, ev: &GetEventsResponse) -> bool {
        let process = event_process(ev);
        let any = |res: &[Regex], s: Option<&str>| {
            res.is_empty() || s.is_some_and(|s| res.iter().any(|r| r.is_match(s)))
        };
        let pod = process.and_then(|p| p.pod.as_ref());
        let parent = event_parent(ev);
        (self.event_set.is_empty() || self.event_set.contains(&(event_type(ev) as i32)))
            && any(&self.binary, process.map(|p| p.binary.as_str()))
            && (self.namespace.is_empty()
                || process.is_some_and(|_| {
                    let ns = pod.map_or("", |p| p.namespace.as_str());
                    self.namespace.iter().any(|n| n == ns)
                }))
            && (self.pid.is_empty()
                || process
                    .and_then(|p| p.pid)
                    .is_some_and(|pid| self.pid.contains(&pid)))
            && any(&self.pod, pod.map(|p| p.name.as_str()))
            && any(&self.arguments, process.map(|p| p.arguments.as_str()))
            // As in Tetragon: a process outside any pod matches no label selector.
            && (self.labels.is_empty()
                || pod.is_some_and(|p| {
                    let labels: BTreeMap<String, String> = p
                        .pod_labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    self.labels.iter().any(|s| s.matches(&labels))
                }))
            && (self.policy_names.is_empty()
                || event_policy_name(ev).is_some_and(|n| self.policy_names.iter().any(|p| p == n)))
            && any(&self.parent_binary, parent.map(|p| p.binary.as_str()))
            && any(&self.parent_arguments, parent.map(|p| p.arguments.as_str()))
            && any(&self.container_id, process.map(|p| p.docker.as_str()))
            && self
                .in_init_tree
                .is_none_or(|want| process.and_then(|p| p.in_init_tree).unwrap_or(false) == want)
            && (self.ancestor_binary.is_empty()
                || event_ancestors(ev)
                    .iter()
                    .any(|a| self.ancestor_binary.iter().any(|r| r.is_match(&a.binary))))
            && any(
                &self.container_name,
                pod.and_then(|p| p.container.as_ref())
                    .map(|c| c.name.as_str()),
            )
            && any(&self.namespace_regex, pod.map(|p| p.namespace.as_str()))
            // Tetragon's heuristic: the process or its parent runs in a container that may be an
            // exec probe (always false without Kubernetes).
            && self.health_check.is_none_or(|want| {
                let probe = |p: Option<&Process>| {
                    p.and_then(|p| p.pod.as_ref())
                        .and_then(|p| p.container.as_ref())
                        .is_some_and(|c| c.maybe_exec_probe)
                };
                (probe(process) || probe(parent)) == want
            })
    }
}

/// A `GetEventsRequest` ready to apply: allow list (empty = everything) minus deny list.
#[derive(Debug, Default)]
pub struct EventFilter {
    allow: Vec<CompiledFilter>,
    deny: Vec<CompiledFilter>,
    /// `field_filters`: what is left of the events that match.
    fields: FieldFilters,
}

impl EventFilter {
    /// Fails with `InvalidArgument`/`Unimplemented` for bad regexes or unsupported fields.
    pub fn new(req: &GetEventsRequest) -> Result<Self, Status> {
        let fields = FieldFilters::new(&req.field_filters).map_err(|e| match e {
            FieldFilterError::Descriptors(_) => Status::internal(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        })?;
        Ok(Self {
            fields,
            allow: req
                .allow_list
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
            deny: req
                .deny_list
                .iter()
                .map(CompiledFilter::new)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, ev: &GetEventsResponse) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(ev)))
            && !self.deny.iter().any(|f| f.matches(ev))
    }

    /// A matching event as the client asked to see it: masked by the `field_filters`.
    pub fn project(&self, ev: GetEventsResponse) -> Result<GetEventsResponse, Status> {
        match self.fields.apply(&ev) {
            Ok(masked) => Ok(masked.unwrap_or(ev)),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

fn event_process(ev: &GetEventsResponse) -> Option<&Process> {
    match ev.event.as_ref()? {
        Event::ProcessExec(e) => e.process.as_ref(),
        Event::ProcessExit(e) => e.process.as_ref(),
        Event::ProcessKprobe(e) => e.process.as_ref(),
        Event::ProcessTracepoint(e) => e.process.as_ref(),
        Event::ProcessLsm(e) => e.process.as_ref(),
        Event::ProcessUprobe(e) => e.process.as_ref(),
        Event::ProcessUsdt(e) => e.process.as_ref(),
        Event::ProcessThrottle(_) | Event::Test(_) | Event::RateLimitInfo(_) => None,
    }
}

fn event_parent(ev: &GetEventsResponse) -> Option<&Process> {
    match ev.event.as_ref()? {
        Event::ProcessExec(e) => e.parent.as_ref(),
        Event::ProcessExit(e) => e.parent.as_ref(),
        Event::ProcessKprobe(e) => e.parent.as_ref(),
        Event::ProcessTracepoint(e) => e.parent.as_ref(),
        Event::ProcessLsm(e) => e.parent.as_ref(),
        Event::ProcessUprobe(e) => e.parent.as_ref(),
        Event::ProcessUsdt(e) => e.parent.as_ref(),
        Event::ProcessThrottle(_) | Event::Test(_) | Event::RateLimitInfo(_) => None,
    }
}

fn event_ancestors(ev: &GetEventsResponse) -> &[Process] {
    match &ev.event {
        Some(Event::ProcessExec(e)) => &e.ancestors,
        Some(Event::ProcessExit(e)) => &e.ancestors,
        Some(Event::ProcessKprobe(e)) => &e.ancestors,
        Some(Event::ProcessTracepoint(e)) => &e.ancestors,
        Some(Event::ProcessLsm(e)) => &e.ancestors,
        Some(Event::ProcessUprobe(e)) => &e.ancestors,
        Some(Event::ProcessUsdt(e)) => &e.ancestors,
        _ => &[],
    }
}

fn event_policy_name(ev: &GetEventsResponse) -> Option<&str> {
    match ev.event.as_ref()? {
        Event::ProcessKprobe(e) => Some(&e.policy_name),
        Event::ProcessTracepoint(e) => Some(&e.policy_name),
        Event::ProcessLsm(e) => Some(&e.policy_name),
        Event::ProcessUprobe(e) => Some(&e.policy_name),
        Event::ProcessUsdt(e) => Some(&e.policy_name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tetragon::proto::tetragon::{
        EventType, Pod, ProcessExec, ProcessKprobe, ProcessLsm, ProcessTracepoint,
    };

    fn exec(binary: &str, ns: Option<&str>) -> GetEventsResponse {
        GetEventsResponse {
            event: Some(Event::ProcessExec(ProcessExec {
                process: Some(Process {
                    binary: binary.into(),
                    arguments: "-a -b".into(),
                    pid: Some(42),
                    pod: ns.map(|ns| Pod {
                        namespace: ns.into(),
                        name: "web-1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn filter(allow: Vec<Filter>, deny: Vec<Filter>) -> EventFilter {
        EventFilter::new(&GetEventsRequest {
            allow_list: allow,
            deny_list: deny,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn empty_allow_matches_all() {
        assert!(filter(vec![], vec![]).matches(&exec("/bin/ls", None)));
        assert!(filter(vec![Filter::default()], vec![]).matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn binary_namespace_pod_pid() {
        let f = filter(
            vec![Filter {
                binary_regex: vec!["ls".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(f.matches(&exec("/bin/ls", None)));
        assert!(!f.matches(&exec("/bin/cat", None)));
        let host = filter(
            vec![Filter {
                namespace: vec!["".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(host.matches(&exec("/bin/ls", None)));
        assert!(!host.matches(&exec("/bin/ls", Some("default"))));
        let pod = filter(
            vec![Filter {
                pod_regex: vec!["^web".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(pod.matches(&exec("/bin/ls", Some("default"))));
        assert!(!pod.matches(&exec("/bin/ls", None)));
        let pid = filter(
            vec![Filter {
                pid: vec![7, 42],
                ..Default::default()
            }],
            vec![],
        );
        assert!(pid.matches(&exec("/bin/ls", None)));
        let args = filter(
            vec![Filter {
                arguments_regex: vec!["-b$".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(args.matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn and_within_or_across_and_deny() {
        let f = filter(
            vec![
                Filter {
                    binary_regex: vec!["ls".into()],
                    namespace: vec!["kube-system".into()],
                    ..Default::default()
                },
                Filter {
                    binary_regex: vec!["cat".into()],
                    ..Default::default()
                },
            ],
            vec![Filter {
                namespace: vec!["secret".into()],
                ..Default::default()
            }],
        );
        assert!(!f.matches(&exec("/bin/ls", Some("default"))));
        assert!(f.matches(&exec("/bin/ls", Some("kube-system"))));
        assert!(f.matches(&exec("/bin/cat", None)));
        assert!(!f.matches(&exec("/bin/cat", Some("secret"))));
    }

    #[test]
    fn event_set_and_policy_names() {
        let lsm = GetEventsResponse {
            event: Some(Event::ProcessLsm(ProcessLsm {
                process: Some(Process::default()),
                policy_name: "p1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let kprobe = GetEventsResponse {
            event: Some(Event::ProcessKprobe(ProcessKprobe {
                process: Some(Process::default()),
                policy_name: "p2".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let f = filter(
            vec![Filter {
                event_set: vec![EventType::ProcessLsm as i32],
                ..Default::default()
            }],
            vec![],
        );
        assert!(f.matches(&lsm));
        assert!(!f.matches(&kprobe));
        assert!(!f.matches(&exec("/bin/ls", None)));
        let f = filter(
            vec![Filter {
                policy_names: vec!["p2".into()],
                ..Default::default()
            }],
            vec![],
        );
        assert!(!f.matches(&lsm));
        assert!(f.matches(&kprobe));
        assert!(!f.matches(&exec("/bin/ls", None)));
    }

    #[test]
    fn tracepoint_events_are_selected_by_their_event_type_and_policy_name() {
        let tp = GetEventsResponse {
            event: Some(Event::ProcessTracepoint(ProcessTracepoint {
                process: Some(Process {
                    binary: "/usr/bin/cat".into(),
                    ..Default::default()
                }),
                subsys: "raw_syscalls".into(),
                event: "sys_enter".into(),
                policy_name: "syscalls".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let by_type = |t: EventType| {
            filter(
                vec![Filter {
                    event_set: vec![t as i32],
                    ..Default::default()
                }],
                vec![],
            )
        };
        assert!(by_type(EventType::ProcessTracepoint).matches(&tp));
        assert!(!by_type(EventType::ProcessKprobe).matches(&tp));
        assert!(!by_type(EventType::ProcessTracepoint).matches(&exec("/bin/ls", None)));
        let by_policy = |name: &str| {
            filter(
                vec![Filter {
                    policy_names: vec![name.into()],
                    ..Default::default()
                }],
                vec![],
            )
        };
        assert!(by_policy("syscalls").matches(&tp));
        assert!(!by_policy("other").matches(&tp));
        // Process filters look at the tracepoint's process too.
        let f = filter(
            vec![],
            vec![Filter {
                binary_regex: vec!["cat$".into()],
                ..Default::default()
            }],
        );
        assert!(!f.matches(&tp));
    }

    #[test]
    fn bad_regex_and_unsupported_fields_are_rejected() {
        let req = GetEventsRequest {
            allow_list: vec![Filter {
                binary_regex: vec!["(".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            EventFilter::new(&req).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let req = GetEventsRequest {
            allow_list: vec![Filter {
                pid_set: vec![1],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            EventFilter::new(&req).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let req = GetEventsRequest {
            deny_list: vec![Filter {
                labels: vec!["app in (x".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = EventFilter::new(&req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("app in (x"), "{}", err.message());
    }

    /// An exec of `/usr/bin/curl` in pod `default/xwing` (container `spaceship`) with `labels`.
    fn in_xwing(labels: &[(&str, &str)]) -> GetEventsResponse {
        let mut ev = exec("/usr/bin/curl", Some("default"));
        let Some(Event::ProcessExec(e)) = &mut ev.event else {
            unreachable!()
        };
        let p = e.process.as_mut().unwrap();
        p.docker = "4b0df5a137260a6b95cbf6443bb2f4b".into();
        let pod = p.pod.as_mut().unwrap();
        pod.name = "xwing".into();
        pod.pod_labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        pod.container = Some(crate::tetragon::proto::tetragon::Container {
            id: "containerd://4b0df5a137260a6b95cbf6443bb2f4b0c9309e6ccb3d8afdbc3da8fff40c0778"
                .into(),
            name: "spaceship".into(),
            ..Default::default()
        });
        ev
    }

    fn only(f: Filter) -> EventFilter {
        filter(vec![f], vec![])
    }

    #[test]
    fn label_selectors_match_the_pods_labels_any_of_them() {
        let xwing = in_xwing(&[("app", "xwing"), ("org", "alliance")]);
        let tie = in_xwing(&[("app", "tiefighter"), ("org", "empire")]);
        let f = only(Filter {
            labels: vec!["app=xwing,org in (alliance)".into()],
            ..Default::default()
        });
        assert!(f.matches(&xwing));
        assert!(!f.matches(&tie));
        let either = only(Filter {
            labels: vec!["org=empire".into(), "app=xwing".into()],
            ..Default::default()
        });
        assert!(either.matches(&xwing) && either.matches(&tie));
        let deny = filter(
            vec![],
            vec![Filter {
                labels: vec!["org!=alliance".into()],
                ..Default::default()
            }],
        );
        assert!(deny.matches(&xwing));
        assert!(!deny.matches(&tie));
    }

    #[test]
    fn pod_filters_match_nothing_on_the_host() {
        let host = exec("/usr/bin/curl", None);
        let xwing = in_xwing(&[("app", "xwing")]);
        for (what, f) in [
            (
                "namespace",
                Filter {
                    namespace: vec!["default".into()],
                    ..Default::default()
                },
            ),
            (
                "pod_regex",
                Filter {
                    pod_regex: vec!["".into()],
                    ..Default::default()
                },
            ),
            (
                "labels (a selector of everything)",
                Filter {
                    labels: vec!["".into()],
                    ..Default::default()
                },
            ),
            (
                "labels (a missing label)",
                Filter {
                    labels: vec!["!tier".into()],
                    ..Default::default()
                },
            ),
            // A regex on `docker`, which is empty for a host process: as in Tetragon, only a
            // pattern that matches the empty string selects host processes.
            (
                "container_id",
                Filter {
                    container_id: vec!["[0-9a-f]".into()],
                    ..Default::default()
                },
            ),
            (
                "namespace_regex",
                Filter {
                    namespace_regex: vec!["".into()],
                    ..Default::default()
                },
            ),
            (
                "container_name_regex",
                Filter {
                    container_name_regex: vec!["".into()],
                    ..Default::default()
                },
            ),
        ] {
            let f = only(f);
            assert!(!f.matches(&host), "{what} matched a host process");
            assert!(f.matches(&xwing), "{what} missed the pod's process");
        }
    }

    #[test]
    fn pod_namespace_and_container_id_select_one_pod() {
        let xwing = in_xwing(&[]);
        let mut other = in_xwing(&[]);
        if let Some(Event::ProcessExec(e)) = &mut other.event {
            let p = e.process.as_mut().unwrap();
            p.docker = "9e123a99b140a6ea4a8d15040ca2c8e".into();
            let pod = p.pod.as_mut().unwrap();
            pod.name = "deathstar-6c94dcc57b-7pr8c".into();
            pod.namespace = "empire".into();
        }
        let pods = only(Filter {
            pod_regex: vec!["^xwing$".into()],
            ..Default::default()
        });
        let ns = only(Filter {
            namespace: vec!["default".into()],
            ..Default::default()
        });
        // Tetragon matches the regex against the 31-character `docker` id.
        let id = only(Filter {
            container_id: vec!["^4b0df5a1".into()],
            ..Default::default()
        });
        for f in [&pods, &ns, &id] {
            assert!(f.matches(&xwing));
            assert!(!f.matches(&other));
        }
    }
}
