//! In-process tests of the gRPC server: event streaming, server-side filters, slow clients,
//! and the policy/health RPCs, through a real tonic client over TCP.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use lsm_agent::{
    events::{
        bus::EventBus,
        model::{self, Action, EventKind, HookOrigin, LsmHook, Target},
    },
    grpc::{
        PolicyControl, bind,
        proto::tetragon::{
            EventType, FieldFilter, FieldFilterAction, Filter, GetEventsRequest, GetEventsResponse,
            GetHealthStatusRequest, GetVersionRequest, HealthStatusResult,
            ListTracingPoliciesRequest, Pod, Process, ProcessLsm, TracingPolicyMode,
            TracingPolicyState, TracingPolicyStatus,
            fine_guidance_sensors_client::FineGuidanceSensorsClient, get_events_response::Event,
        },
        serve_listeners,
    },
    tetragon::convert::to_response,
};
use tokio::sync::oneshot;
use tonic::{Streaming, transport::Channel};

#[derive(Default)]
struct FakeControl {
    policies: Mutex<Vec<TracingPolicyStatus>>,
}

impl PolicyControl for FakeControl {
    fn list(&self) -> Vec<TracingPolicyStatus> {
        self.policies.lock().unwrap().clone()
    }
    fn add(&self, yaml: String) -> Result<(), String> {
        if yaml.contains("bad") {
            return Err("invalid policy".into());
        }
        self.policies.lock().unwrap().push(TracingPolicyStatus {
            name: "added".into(),
            state: TracingPolicyState::TpStateEnabled as i32,
            ..Default::default()
        });
        Ok(())
    }
    fn delete(&self, name: &str, _namespace: &str) -> Result<(), String> {
        let mut p = self.policies.lock().unwrap();
        let before = p.len();
        p.retain(|p| p.name != name);
        if p.len() == before {
            Err(format!("policy {name} not found"))
        } else {
            Ok(())
        }
    }
    fn set_enabled(&self, name: &str, _namespace: &str, enabled: bool) -> Result<(), String> {
        let mut p = self.policies.lock().unwrap();
        let p = p.iter_mut().find(|p| p.name == name).ok_or("not found")?;
        p.state = if enabled {
            TracingPolicyState::TpStateEnabled
        } else {
            TracingPolicyState::TpStateDisabled
        } as i32;
        Ok(())
    }
    fn set_mode(
        &self,
        name: &str,
        _namespace: &str,
        mode: TracingPolicyMode,
    ) -> Result<(), String> {
        let mut p = self.policies.lock().unwrap();
        let p = p.iter_mut().find(|p| p.name == name).ok_or("not found")?;
        p.mode = mode as i32;
        Ok(())
    }
    fn health(&self) -> (HealthStatusResult, String) {
        (HealthStatusResult::HealthStatusRunning, "running".into())
    }
}

struct Server {
    port: u16,
    bus: EventBus,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(capacity: usize, control: Arc<FakeControl>) -> Self {
        let listeners = bind("127.0.0.1:0").await.unwrap();
        let port = listeners.local_addrs()[0].port();
        let bus = EventBus::new(capacity);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn({
            let bus = bus.clone();
            async move {
                serve_listeners(listeners, bus, control, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        Self {
            port,
            bus,
            stop: Some(tx),
            task,
        }
    }

    async fn client(&self) -> FineGuidanceSensorsClient<Channel> {
        FineGuidanceSensorsClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }

    async fn subscribe(&self, filter: Option<Filter>) -> Streaming<GetEventsResponse> {
        let mut c = self.client().await;
        let req = GetEventsRequest {
            allow_list: filter.into_iter().collect(),
            ..Default::default()
        };
        c.get_events(req).await.unwrap().into_inner()
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("server shuts down")
            .unwrap();
    }
}

fn event(kind: EventKind) -> model::Event {
    model::Event {
        node_name: "node".into(),
        time: model::Time::default(),
        kind,
    }
}

fn exec(binary: &str, ns: Option<&str>) -> model::Event {
    event(EventKind::Exec(model::Exec {
        process: model::Process {
            binary: binary.into(),
            argv: vec![binary.into(), "x".repeat(64)],
            pid: 1,
            pod: ns.map(|ns| {
                Arc::new(model::Pod {
                    namespace: ns.into(),
                    name: "pod".into(),
                    ..Default::default()
                })
            }),
            ..Default::default()
        },
        parent: None,
    }))
}

fn lsm(binary: &str) -> model::Event {
    event(EventKind::Hook(model::Hook {
        process: model::Process {
            binary: binary.into(),
            argv: vec![binary.into()],
            ..Default::default()
        },
        parent: None,
        policy_name: "p".into(),
        policy_namespace: None,
        hook: Target::Lsm(LsmHook::FileOpen),
        origin: HookOrigin::LsmHook,
        args: vec![],
        return_arg: None,
        data: vec![],
        action: Action::Post,
        return_action: None,
        message: None,
        tags: vec![],
        request: None,
    }))
}

fn binary(ev: &GetEventsResponse) -> &str {
    match &ev.event {
        Some(Event::ProcessExec(e)) => &e.process.as_ref().unwrap().binary,
        Some(Event::ProcessLsm(e)) => &e.process.as_ref().unwrap().binary,
        _ => panic!("unexpected event {ev:?}"),
    }
}

async fn recv(s: &mut Streaming<GetEventsResponse>) -> GetEventsResponse {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("event in time")
        .unwrap()
        .unwrap()
}

async fn assert_quiet(s: &mut Streaming<GetEventsResponse>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), s.message()).await {
        panic!("unexpected message {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receives_published_events() {
    let server = Server::start(64, Arc::default()).await;
    let mut s = server.subscribe(None).await;
    assert_eq!(server.bus.subscriber_count(), 1);
    server.bus.publish(exec("/bin/a", None));
    server.bus.publish(lsm("/bin/b"));
    server.bus.publish(exec("/bin/c", Some("default")));
    assert_eq!(binary(&recv(&mut s).await), "/bin/a");
    let ev = recv(&mut s).await;
    assert_eq!(binary(&ev), "/bin/b");
    assert_eq!(ev.node_name, "node");
    assert_eq!(binary(&recv(&mut s).await), "/bin/c");
    assert_quiet(&mut s).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_filters() {
    let server = Server::start(64, Arc::default()).await;
    let mut by_binary = server
        .subscribe(Some(Filter {
            binary_regex: vec!["cur".into()],
            ..Default::default()
        }))
        .await;
    let mut by_type = server
        .subscribe(Some(Filter {
            event_set: vec![EventType::ProcessLsm as i32],
            ..Default::default()
        }))
        .await;
    let mut host_only = server
        .subscribe(Some(Filter {
            namespace: vec![String::new()],
            ..Default::default()
        }))
        .await;
    let mut in_ns = server
        .subscribe(Some(Filter {
            namespace: vec!["default".into()],
            ..Default::default()
        }))
        .await;

    server.bus.publish(exec("/usr/bin/curl", None));
    server.bus.publish(exec("/bin/cat", Some("default")));
    server.bus.publish(lsm("/bin/sh"));

    assert_eq!(binary(&recv(&mut by_binary).await), "/usr/bin/curl");
    assert_quiet(&mut by_binary).await;
    assert_eq!(binary(&recv(&mut by_type).await), "/bin/sh");
    assert_quiet(&mut by_type).await;
    assert_eq!(binary(&recv(&mut host_only).await), "/usr/bin/curl");
    assert_eq!(binary(&recv(&mut host_only).await), "/bin/sh");
    assert_quiet(&mut host_only).await;
    assert_eq!(binary(&recv(&mut in_ns).await), "/bin/cat");
    assert_quiet(&mut in_ns).await;
    server.shutdown().await;
}

/// `binary` run in pod `namespace/name` (container `spaceship`) with `labels`.
fn exec_in_pod(binary: &str, namespace: &str, name: &str, labels: &[(&str, &str)]) -> model::Event {
    let mut ev = exec(binary, Some(namespace));
    let EventKind::Exec(e) = &mut ev.kind else {
        unreachable!()
    };
    e.process.pod = Some(Arc::new(model::Pod {
        namespace: namespace.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        container: Some(model::Container {
            // A 64-character id: the name, padded with zeros.
            id: format!("containerd://{name:0<64}"),
            name: "spaceship".into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_filters_select_pods_and_never_the_host() {
    let server = Server::start(64, Arc::default()).await;
    let mut by_labels = server
        .subscribe(Some(Filter {
            labels: vec!["org=alliance,class notin (tiefighter)".into()],
            ..Default::default()
        }))
        .await;
    let mut by_pod = server
        .subscribe(Some(Filter {
            pod_regex: vec!["^xwing$".into()],
            namespace: vec!["default".into()],
            ..Default::default()
        }))
        .await;
    // `docker` is the container id's first 31 characters.
    let mut by_container = server
        .subscribe(Some(Filter {
            container_id: vec!["^tiefighter0".into()],
            ..Default::default()
        }))
        .await;

    server.bus.publish(exec("/usr/bin/host-curl", None));
    server.bus.publish(exec_in_pod(
        "/usr/bin/xwing-curl",
        "default",
        "xwing",
        &[("org", "alliance"), ("class", "xwing")],
    ));
    server.bus.publish(exec_in_pod(
        "/usr/bin/tie-curl",
        "empire",
        "tiefighter",
        &[("org", "empire"), ("class", "tiefighter")],
    ));

    let xwing = recv(&mut by_labels).await;
    assert_eq!(binary(&xwing), "/usr/bin/xwing-curl");
    let Some(Event::ProcessExec(e)) = &xwing.event else {
        unreachable!()
    };
    let p = e.process.as_ref().unwrap();
    assert_eq!(p.pod.as_ref().unwrap().pod_labels["org"], "alliance");
    assert_eq!(p.docker, "xwing00000000000000000000000000");
    assert_quiet(&mut by_labels).await;
    assert_eq!(binary(&recv(&mut by_pod).await), "/usr/bin/xwing-curl");
    assert_quiet(&mut by_pod).await;
    assert_eq!(binary(&recv(&mut by_container).await), "/usr/bin/tie-curl");
    assert_quiet(&mut by_container).await;
    server.shutdown().await;
}

fn field_filter(event_set: &[EventType], paths: &[&str], action: FieldFilterAction) -> FieldFilter {
    FieldFilter {
        event_set: event_set.iter().map(|t| *t as i32).collect(),
        fields: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        action: action as i32,
        invert_event_set: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_filters_mask_events() {
    let server = Server::start(64, Arc::default()).await;
    let mut c = server.client().await;
    // What `tetra getevents -f process.binary,process.pod.name,parent -F parent.arguments`
    // sends.
    let mut included = c
        .get_events(GetEventsRequest {
            allow_list: vec![Filter::default()],
            field_filters: vec![
                field_filter(
                    &[],
                    &["process.binary", "process.pod.name", "parent"],
                    FieldFilterAction::Include,
                ),
                field_filter(&[], &["parent.arguments"], FieldFilterAction::Exclude),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Only exec events lose their process arguments; LSM events stay whole.
    let mut exec_only = c
        .get_events(GetEventsRequest {
            field_filters: vec![field_filter(
                &[EventType::ProcessExec],
                &["process.arguments", "process.pid"],
                FieldFilterAction::Exclude,
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let mut ev = exec("/bin/cat", Some("default"));
    if let EventKind::Exec(e) = &mut ev.kind {
        e.parent = Some(model::Process {
            binary: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), "cat".into()],
            pid: 7,
            ..Default::default()
        });
    }
    server.bus.publish(ev.clone());
    let mut lsm_ev = lsm("/bin/sh");
    if let EventKind::Hook(h) = &mut lsm_ev.kind {
        h.process.argv.push("-x".into());
    }
    server.bus.publish(lsm_ev.clone());
    // What was published, as clients receive it unfiltered.
    let lsm_ev = to_response(&lsm_ev);

    let got = recv(&mut included).await;
    assert_eq!(got.node_name, "node", "top-level fields are kept");
    let Some(Event::ProcessExec(e)) = got.event else {
        panic!("expected an exec");
    };
    assert_eq!(
        e.process,
        Some(Process {
            binary: "/bin/cat".into(),
            pod: Some(Pod {
                name: "pod".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    );
    assert_eq!(
        e.parent,
        Some(Process {
            binary: "/bin/sh".into(),
            pid: Some(7),
            ..Default::default()
        })
    );
    let Some(Event::ProcessLsm(l)) = recv(&mut included).await.event else {
        panic!("expected an lsm event");
    };
    assert_eq!(
        l,
        ProcessLsm {
            process: Some(Process {
                binary: "/bin/sh".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    );

    let Some(Event::ProcessExec(e)) = recv(&mut exec_only).await.event else {
        panic!("expected an exec");
    };
    let p = e.process.unwrap();
    assert!(p.arguments.is_empty() && p.pid.is_none());
    assert_eq!(p.binary, "/bin/cat");
    assert_eq!(
        e.parent.unwrap().arguments,
        "-c cat",
        "only the listed paths go"
    );
    assert_eq!(
        recv(&mut exec_only).await,
        lsm_ev,
        "other event types are untouched"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_field_filter_is_rejected() {
    let server = Server::start(8, Arc::default()).await;
    let mut c = server.client().await;
    let req = GetEventsRequest {
        field_filters: vec![field_filter(
            &[],
            &["process..binary"],
            FieldFilterAction::Include,
        )],
        ..Default::default()
    };
    let err = c.get_events(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("process..binary"),
        "{}",
        err.message()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_filter_is_rejected() {
    let server = Server::start(8, Arc::default()).await;
    let mut c = server.client().await;
    let req = GetEventsRequest {
        allow_list: vec![Filter {
            binary_regex: vec!["(".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = c.get_events(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_does_not_stall_others() {
    const N: usize = 3000;
    let server = Server::start(32, Arc::default()).await;
    // Subscribed but never read: its queues fill up and it starts losing events.
    let mut slow = server.subscribe(None).await;
    let mut fast = server.subscribe(None).await;
    let big = |i: usize| {
        let mut ev = exec(&format!("/bin/{i}"), None);
        if let EventKind::Exec(e) = &mut ev.kind {
            e.process.argv[1] = "y".repeat(16 * 1024);
        }
        ev
    };
    for batch in 0..N / 8 {
        for i in 0..8 {
            server.bus.publish(big(batch * 8 + i));
        }
        for i in 0..8 {
            assert_eq!(
                binary(&recv(&mut fast).await),
                format!("/bin/{}", batch * 8 + i)
            );
        }
    }
    // The slow client's buffers (queue + HTTP/2 window) hold far less than N large events, so
    // once it reads again it sees a gap; the loss is counted when its forwarder resumes.
    let mut seen = 0;
    let mut gap = false;
    while seen < N && !gap {
        gap = binary(&recv(&mut slow).await) != format!("/bin/{seen}");
        seen += 1;
    }
    assert!(gap, "the slow subscriber should have lost events");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.bus.lost_events() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.bus.lost_events() > 0, "lost events are counted");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_does_not_hold_the_shutdown() {
    let server = Server::start(32, Arc::default()).await;
    let mut stuck = server.subscribe(None).await;
    let mut big = exec("/bin/first", None);
    if let EventKind::Exec(e) = &mut big.kind {
        e.process.argv[1] = "y".repeat(16 * 1024);
    }
    server.bus.publish(big.clone());
    // Read once so the stream is known to be flowing, then never again: the rest (far more
    // than the HTTP/2 window) stays queued behind flow control, and so would the stream's end.
    assert_eq!(binary(&recv(&mut stuck).await), "/bin/first");
    // Paced so that the forwarder keeps up with the bus and fills the client's queue instead
    // of skipping events as lagged.
    for _ in 0..200 {
        for _ in 0..16 {
            server.bus.publish(big.clone());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // `shutdown` fails the test if the server has not stopped within 5 s.
    server.shutdown().await;
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_policies() {
    let control = Arc::new(FakeControl::default());
    control.policies.lock().unwrap().push(TracingPolicyStatus {
        id: 1,
        name: "block-shadow".into(),
        state: TracingPolicyState::TpStateEnabled as i32,
        mode: TracingPolicyMode::TpModeEnforce as i32,
        ..Default::default()
    });
    let server = Server::start(8, control.clone()).await;
    let mut c = server.client().await;

    let h = c
        .get_health(GetHealthStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.health_status.len(), 1);
    assert_eq!(h.health_status[0].details, "running");
    assert_eq!(
        h.health_status[0].status,
        HealthStatusResult::HealthStatusRunning as i32
    );
    assert!(
        !c.get_version(GetVersionRequest {})
            .await
            .unwrap()
            .into_inner()
            .version
            .is_empty()
    );

    use lsm_agent::grpc::proto::tetragon::{
        AddTracingPolicyRequest, ConfigureTracingPolicyRequest, DeleteTracingPolicyRequest,
    };
    c.configure_tracing_policy(ConfigureTracingPolicyRequest {
        name: "block-shadow".into(),
        enable: Some(false),
        mode: Some(TracingPolicyMode::TpModeMonitor as i32),
        ..Default::default()
    })
    .await
    .unwrap();
    let list = c
        .list_tracing_policies(ListTracingPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.policies[0].state,
        TracingPolicyState::TpStateDisabled as i32
    );
    assert_eq!(
        list.policies[0].mode,
        TracingPolicyMode::TpModeMonitor as i32
    );

    let err = c
        .add_tracing_policy(AddTracingPolicyRequest {
            yaml: "bad".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "invalid policy");
    c.add_tracing_policy(AddTracingPolicyRequest {
        yaml: "ok".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_tracing_policy(DeleteTracingPolicyRequest {
        name: "block-shadow".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let list = c
        .list_tracing_policies(ListTracingPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.policies
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["added"]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_enable_disable_over_grpc() {
    use lsm_agent::grpc::proto::tetragon::{
        DisableTracingPolicyRequest, EnableTracingPolicyRequest, GetInfoRequest,
    };
    let control = Arc::new(FakeControl::default());
    control.policies.lock().unwrap().push(TracingPolicyStatus {
        id: 1,
        name: "block-shadow".into(),
        state: TracingPolicyState::TpStateEnabled as i32,
        ..Default::default()
    });
    let server = Server::start(8, control.clone()).await;
    let mut c = server.client().await;

    let info = c
        .get_info(GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "lsm-agent");
    assert!(!info.version.is_empty());

    let state = |c: &Arc<FakeControl>| c.policies.lock().unwrap()[0].state;
    c.disable_tracing_policy(DisableTracingPolicyRequest {
        name: "block-shadow".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(state(&control), TracingPolicyState::TpStateDisabled as i32);
    c.enable_tracing_policy(EnableTracingPolicyRequest {
        name: "block-shadow".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(state(&control), TracingPolicyState::TpStateEnabled as i32);
    let err = c
        .enable_tracing_policy(EnableTracingPolicyRequest {
            name: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown, "Tetragon's plain error");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    let server = Server::start(8, Arc::default()).await;
    let mut s = server.subscribe(None).await;
    server.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None) | Err(_)));
}
