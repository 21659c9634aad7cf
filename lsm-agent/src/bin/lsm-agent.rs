//! lsm-agent: loads Tetragon TracingPolicy files and enforces them at BPF-LSM hooks.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use lsm_agent::{
    agent::{
        self, Agent, Prepared, Source,
        dir::{PolicyDir, list_policy_dir},
    },
    bpf::{Capabilities, LoadOptions, Probe, pin},
    events::{self, bus::EventBus, enrich::ProcessCache},
    grpc,
    policy::{error::PolicyError, ir::Policy, parse::parse_policy_with_env},
    supervise::Tasks,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

const AGENT_INFO: &str = "/var/run/lsm-agent/agent-info.json";
const DEFAULT_UNIX_SOCKET: &str = "/var/run/lsm-agent/lsm-agent.sock";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Enforces Tetragon TracingPolicy files at BPF-LSM hooks"
)]
struct Args {
    /// A TracingPolicy or TracingPolicyNamespaced YAML file to enforce (repeatable).
    #[arg(long = "tracing-policy", value_name = "FILE")]
    tracing_policy: Vec<PathBuf>,
    /// A directory of policy files (*.yaml, *.yml), loaded in name order.
    #[arg(long = "tracing-policy-dir", value_name = "DIR")]
    tracing_policy_dir: Option<PathBuf>,
    /// gRPC address: host:port, :port, or unix:///path.
    #[arg(long, default_value = "localhost:54321")]
    server_address: String,
    /// A unix socket serving the same API as --server-address (without TLS), which `lsmctl`
    /// on the node prefers: no egress policy can block it. An empty value turns it off.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_UNIX_SOCKET, value_parser = path_or_empty)]
    server_unix_socket: PathBuf,
    #[command(flatten)]
    server_tls: grpc::tls::ServerTlsOptions,
    /// trace, debug, info, warn or error.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Only parse and compile the policies, then exit (no root, no kernel needed).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    export: lsm_agent::export::ExportArgs,
    /// DNS server for `dns:` address values: IP or IP:PORT (port 53 by default). Default:
    /// the system resolver configuration (/etc/resolv.conf).
    #[arg(long, value_name = "ADDR", value_parser = parse_dns_server)]
    dns_server: Option<std::net::SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics: HOST:PORT, or :PORT for all
    /// interfaces (Tetragon uses :2112). Off by default.
    #[arg(long, value_name = "ADDR")]
    metrics_server: Option<String>,
    #[command(flatten)]
    k8s: lsm_agent::k8s::config::K8sArgs,
    /// Refuse to start when BPF LSM is not active, instead of observing the hooks through
    /// kprobes (no pre-operation deny). See docs/modes.md.
    #[arg(long)]
    require_lsm: bool,
    /// When the hooks are observed through kprobes (BPF LSM not active), run the policies'
    /// Sigkill actions after the fact (bpf_send_signal). Override is never applied there.
    #[arg(long)]
    fallback_sigkill: bool,
    /// Where the programs' links are pinned (bpffs), so that they keep enforcing while no agent
    /// runs: a restarted agent takes over without a gap. An empty value turns pinning off (the
    /// programs are detached when the agent exits).
    #[arg(long, value_name = "DIR", default_value = pin::DEFAULT_ROOT, value_parser = path_or_empty)]
    bpf_dir: PathBuf,
    /// Detach every pinned program under --bpf-dir and remove it (uninstall), then exit.
    #[arg(long)]
    unload: bool,
    /// Seconds between canary rounds: each hook with an LSM program proves that it denies
    /// (health turns to error when one does not). 0 runs the canary at start only.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    canary_interval: u64,
}

/// Runs the canary and logs what changed since `last`: a hook that stopped (or started)
/// denying, once per change.
async fn canary_round(
    agent: &agent::AgentHandle,
    last: &mut BTreeMap<&'static str, bool>,
) -> Result<(), agent::AgentError> {
    use lsm_agent::bpf::canary::Verdict;
    for c in agent.canary().await?.iter() {
        let denied = c.verdict == Verdict::Denied;
        let changed = last.insert(c.hook, denied) != Some(denied);
        match &c.verdict {
            Verdict::Denied if changed => info!(hook = c.hook, "canary denied: the hook enforces"),
            Verdict::Failed(why) if changed => {
                error!(
                    hook = c.hook,
                    "canary NOT denied, the hook does not enforce: {why}"
                )
            }
            Verdict::Unverified(why) if changed => {
                debug!(hook = c.hook, "canary not run: {why}")
            }
            _ => {}
        }
    }
    Ok(())
}

/// How often generations pinned by another, live agent are looked at again: they are retired
/// once it is gone.
const HANDOVER_PERIOD: Duration = Duration::from_secs(10);

/// Retires the generations pinned by earlier agents once `gates` are all open (this agent then
/// enforces what its sources say), and again every [`HANDOVER_PERIOD`] for those whose agent
/// was still running. What their rings held or lost is logged and counted.
async fn handover(
    root: PathBuf,
    own: Option<pin::Generation>,
    mut gates: Vec<tokio::sync::watch::Receiver<bool>>,
    stats: Arc<events::reader::ReaderStats>,
) {
    for gate in &mut gates {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
    }
    loop {
        let retired = tokio::task::spawn_blocking({
            let (root, own) = (root.clone(), own.clone());
            move || pin::retire_orphans(&root, own.as_ref())
        })
        .await
        .unwrap_or_default();
        for r in retired {
            let lost = r.undelivered();
            stats
                .handover_lost
                .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
            let g = &r.generation;
            if lost > 0 {
                warn!(
                    generation = %g.dir.display(), abi = g.abi, pid = g.pid, unread = r.unread, ring_lost = ?r.lost,
                    "earlier agent's programs detached; {lost} of their events were not delivered (produced while no agent ran; ring_lost counts the earlier agent's whole life)"
                );
            } else {
                info!(generation = %g.dir.display(), abi = g.abi, pid = g.pid, "earlier agent's programs detached; none of their events was lost");
            }
        }
        tokio::time::sleep(HANDOVER_PERIOD).await;
    }
}

/// A path where an empty value means "off" (clap's path parser refuses empty values).
fn path_or_empty(s: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(s))
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    lsm_agent::dns::parse_server(s).map_err(|e| e.to_string())
}

/// Every policy file to start with and its content: the `--tracing-policy` files, then those
/// of `--tracing-policy-dir` in name order. Also returns what the directory held, for its
/// watcher. A directory that cannot be listed stops the agent.
fn read_policy_files(args: &Args) -> anyhow::Result<(PolicyTexts, Option<PolicyDir>)> {
    let mut files: PolicyTexts = args
        .tracing_policy
        .iter()
        .map(|f| (f.clone(), std::fs::read_to_string(f)))
        .collect();
    let Some(dir) = &args.tracing_policy_dir else {
        return Ok((files, None));
    };
    let listing = list_policy_dir(dir)
        .with_context(|| format!("reading --tracing-policy-dir {}", dir.display()))?;
    let mut initial = BTreeMap::new();
    for (path, read) in listing {
        if let Ok(text) = &read {
            initial.insert(path.clone(), text.clone());
        }
        files.push((path, read));
    }
    Ok((files, Some(PolicyDir::new(dir.clone(), initial))))
}

type PolicyTexts = Vec<(PathBuf, std::io::Result<String>)>;

/// Parses every file (`${VAR}` expanded from the environment); reports all broken ones before
/// giving up.
fn load_policies(files: PolicyTexts) -> anyhow::Result<Vec<(Policy, Source)>> {
    let mut ok = Vec::new();
    let mut failed = 0;
    for (f, read) in files {
        let parsed = read
            .map_err(|e| PolicyError::new(&f, "", format!("cannot read policy file: {e}")))
            .and_then(|text| parse_policy_with_env(&text, &f, |name| std::env::var(name).ok()));
        match parsed {
            Ok(p) => ok.push((p, Source::File(f))),
            Err(e) => {
                // Plain text on stderr (not a log line): the file:line:col prefix is what
                // editors and CI annotate from.
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} policy file(s) rejected");
    }
    Ok(ok)
}

/// This agent's pinned generation under `root`; a node where it cannot pin (no bpffs) is
/// still protected while the agent runs, so that is a warning, not a refusal.
fn pins(root: &Path) -> pin::Pins {
    if root.as_os_str().is_empty() {
        info!("--bpf-dir is empty: programs are detached when the agent exits");
        return pin::Pins::none();
    }
    match pin::list(root) {
        Ok(earlier) if !earlier.is_empty() => {
            let exempt = pin::exempt_from(&earlier, std::process::id());
            info!(
                generations = earlier.len(),
                exempt,
                "programs pinned by an earlier agent keep enforcing until this one's policies are loaded (this agent exempt from them)"
            )
        }
        Ok(_) => {}
        Err(e) => warn!("{e}"),
    }
    match pin::Pins::create(root) {
        Ok(p) => p,
        Err(e) => {
            error!("cannot pin the programs, they are detached when the agent exits: {e}");
            pin::Pins::none()
        }
    }
}

/// `--unload`: detaches and removes every pinned generation.
fn unload(root: &Path) -> anyhow::Result<()> {
    if root.as_os_str().is_empty() {
        bail!("--unload needs --bpf-dir");
    }
    let retired = pin::unload_all(root).with_context(|| format!("unloading {}", root.display()))?;
    for r in &retired {
        println!(
            "unloaded {} (ABI {}, agent pid {}): {} event(s) undelivered",
            r.generation.dir.display(),
            r.generation.abi,
            r.generation.pid,
            r.undelivered()
        );
    }
    println!(
        "{} pinned generation(s) removed from {}",
        retired.len(),
        root.display()
    );
    Ok(())
}

fn write_agent_info(server_address: &str, unix_socket: Option<&str>) {
    let mut info = serde_json::json!({
        "server_address": server_address,
        "pid": std::process::id(),
    });
    if let Some(unix) = unix_socket {
        info["unix_socket"] = unix.into();
    }
    let path = Path::new(AGENT_INFO);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, info.to_string()) {
        warn!("cannot write {AGENT_INFO}: {e}");
    }
}

/// Binds `--server-unix-socket` (unless empty, or already `--server-address`) and returns
/// its `unix://` address with the listener. The default path may fail (no root, another
/// agent serving it): the agent then serves TCP only and says so; a path given explicitly
/// must bind.
async fn bind_unix_socket(args: &Args) -> anyhow::Result<Option<(String, grpc::Listeners)>> {
    let path = &args.server_unix_socket;
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let address = format!("unix://{}", path.display());
    let same = args
        .server_address
        .strip_prefix("unix://")
        .or_else(|| args.server_address.strip_prefix("unix:"))
        .is_some_and(|p| Path::new(p) == path);
    if same {
        return Ok(None);
    }
    match grpc::bind(&address).await {
        Ok(l) => Ok(Some((address, l))),
        Err(e) if path == Path::new(DEFAULT_UNIX_SOCKET) => {
            warn!(error = %e, "the API is served on TCP only: --server-unix-socket did not bind");
            Ok(None)
        }
        Err(e) => {
            Err(e).with_context(|| format!("binding --server-unix-socket {}", path.display()))
        }
    }
}

/// Resolves at SIGTERM or SIGINT. Installed before anything runs, so that a signal during
/// start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: stopping"),
            _ = int.recv() => info!("SIGINT: stopping"),
        }
    })
}

/// How often the process cache is checked against /proc for processes whose exit event was
/// lost.
const RECONCILE_PERIOD: Duration = Duration::from_secs(30);

/// How long the tasks get to finish (the gRPC server, the export flush) once stopping.
const GRACE: Duration = Duration::from_secs(10);

/// Every uprobe point is a link of its own (a perf event, a descriptor), and a policy may list
/// thousands (Tetragon's `uprobe.yaml` has 1,618): the soft limit on open files (often 1,024)
/// goes up to the hard one, as far as the kernel allows.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!(soft, hard, "raising the open file limit: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => warn!("reading the open file limit: {e}"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("bad --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    if args.unload {
        return unload(&args.bpf_dir);
    }
    // Checked before anything is loaded, like the policies.
    let export = args.export.config().context("export flags")?;
    let k8s = args.k8s.settings().context("Kubernetes flags")?;

    let (files, policy_dir) = read_policy_files(&args)?;
    let batch = load_policies(files)?;
    // Compiled once, before touching the kernel, so that a policy set that cannot fit is
    // refused early; the agent applies this very image.
    let host_ns = lsm_agent::bpf::procfs::host_namespaces();
    // With Kubernetes, policies scoped to workloads apply to the pods they name from the
    // start (to none until the pods are known), never node-wide.
    let env = lsm_agent::policy::compile::CompileEnv {
        host_ns,
        workloads: lsm_agent::policy::workloads::Workloads {
            enabled: k8s.is_some(),
            ..Default::default()
        },
        ..Default::default()
    };
    let prepared = Prepared::compile(batch, env).context("compiling policies")?;
    if args.check {
        println!("{} policy file(s) OK", prepared.policies().len());
        return Ok(());
    }
    if prepared.policies().is_empty() && k8s.is_none() {
        warn!("no policy loaded: pass --tracing-policy FILE or --tracing-policy-dir DIR");
    }
    let signal = shutdown_signal()?;

    // Bound before anything is loaded, so that a taken port stops the agent early; installed
    // before the event loop starts, which registers its counters.
    let metrics = match &args.metrics_server {
        Some(addr) => {
            let listeners = lsm_agent::metrics::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-server {addr}"))?;
            Some((listeners, lsm_agent::metrics::install()?))
        }
        None => None,
    };

    raise_open_file_limit();
    let caps = Capabilities::probe();
    info!(
        kernel = %caps.kernel_release,
        lsms = %caps.lsms,
        bpf_lsm = caps.bpf_lsm,
        btf = caps.btf,
        kprobes = caps.kprobes,
        bpf_send_signal = caps.send_signal,
        "kernel capabilities"
    );
    let opts = LoadOptions {
        require_lsm: args.require_lsm,
        fallback_sigkill: args.fallback_sigkill,
        api_port: grpc::tcp_port(&args.server_address),
    };
    let pins = pins(&args.bpf_dir);
    let own_generation = pins.generation().cloned();
    let (mut probe, ring) = Probe::load(&caps, opts, pins).context("loading BPF programs")?;
    let seeded = probe.seed_processes();
    if probe.modes.degraded() {
        warn!(
            programs = probe.attached.len(),
            processes = seeded,
            fallback_sigkill = args.fallback_sigkill,
            "BPF LSM is not active: hooks observed by kprobes, no pre-operation deny (docs/modes.md)"
        );
    } else {
        info!(
            programs = probe.attached.len(),
            processes = seeded,
            "BPF-LSM programs attached"
        );
    }

    let names: Vec<String> = prepared
        .policies()
        .iter()
        .map(|p| p.policy.name.clone())
        .collect();
    let agent = Agent::start(Box::new(probe), prepared).context("enforcing policies")?;
    for n in &names {
        info!(policy = %n, "policy enforcing");
    }
    // From here on the owner task alone touches the kernel maps.
    let (owner, agent) = agent::owner(agent);
    let mut tasks = Tasks::new();
    tasks.spawn_until_stopped("policy owner", async move {
        owner.run().await;
        Err("every handle to it is gone".into())
    });

    // `dns:` address values: resolve the names the policies use and keep their answers current.
    // `dns_status` holds every name's state, for status reporting.
    let dns_status = lsm_agent::dns::DnsStatus::new();
    match lsm_agent::dns::resolver(args.dns_server) {
        Ok(lookup) => {
            let run = lsm_agent::dns::run(
                agent.clone(),
                lookup,
                dns_status.clone(),
                Default::default(),
            );
            tasks.spawn_until_stopped("dns resolver", async move { Ok(run.await?) });
        }
        Err(e) => error!("dns: no resolver, `dns:` address values match nothing: {e}"),
    }

    if let Some(state) = policy_dir {
        info!(dir = %state.dir().display(), "watching for policy changes");
        let watch = agent::dir::watch(agent.clone(), state, list_policy_dir);
        tasks.spawn_until_stopped("policy directory watcher", async move { Ok(watch.await?) });
    }

    // TracingPolicy and TracingPolicyNamespaced objects: one more source of policies; this
    // node's pods joined with the kubelet's cgroups: the workloads scoped policies apply to.
    // The client only reads its configuration here; an unreachable API server is retried by
    // the watchers (and logged), it does not stop the agent.
    // What must hold before earlier agents' pinned programs are detached: the policy files are
    // enforced already; Kubernetes policies and workloads once listed and installed.
    let mut gates = Vec::new();
    let pod_index = match k8s {
        Some(settings) => {
            let (policies_synced, gate) = tokio::sync::watch::channel(false);
            gates.push(gate);
            let (workloads_installed, gate) = tokio::sync::watch::channel(false);
            gates.push(gate);
            let client = settings.client().await.context("Kubernetes client")?;
            info!(node = %settings.node_name, source = ?settings.source, "watching TracingPolicy objects and this node's pods");
            let load = lsm_agent::k8s::loader::watch_and_load(
                client.clone(),
                settings.node_name.clone(),
                agent.clone(),
                policies_synced,
            );
            tasks.spawn_until_stopped("Kubernetes policy loader", async move { Ok(load.await?) });
            let opts = lsm_agent::k8s::workloads::Options::default();
            let index = lsm_agent::k8s::workloads::PodIndex::new(opts.proc_root.clone());
            let send = lsm_agent::k8s::workloads::watch_and_send(
                client,
                settings.node_name,
                agent.clone(),
                index.clone(),
                opts,
                workloads_installed,
            );
            tasks.spawn_until_stopped("Kubernetes workloads", async move { Ok(send.await?) });
            // Which pod a cgroup is, for the events (the enrichment takes it).
            Some(index)
        }
        None => None,
    };

    // Ring buffer → decoded events → enriched events on the bus.
    let bus = EventBus::new(4096);
    // JSON export file: one more bus subscriber, subscribed before the first event.
    let mut export_lost = None;
    if let Some(cfg) = export {
        let exporter =
            lsm_agent::export::Exporter::start(cfg, &bus).context("starting the JSON export")?;
        let stats = exporter.stats();
        export_lost = Some(Arc::new(move || stats.lost()) as Arc<dyn Fn() -> u64 + Send + Sync>);
        let stop = tasks.stop_token();
        // Flushed at shutdown.
        tasks.spawn("export", async move {
            stop.cancelled().await;
            exporter.shutdown().await;
            Ok(())
        });
    }
    // GetUrl/DnsLookup actions: one more subscriber, making the requests of the events that
    // carry one.
    match lsm_agent::dns::resolver(args.dns_server) {
        Ok(lookup) => {
            let run = lsm_agent::requests::run(bus.subscribe(), lookup);
            tasks.spawn_until_stopped("GetUrl/DnsLookup requests", async move {
                run.await;
                Err("the event bus closed".into())
            });
        }
        Err(e) => error!("dns: no resolver, GetUrl and DnsLookup actions are not performed: {e}"),
    }
    let stats = Arc::new(events::reader::ReaderStats::default());
    if !args.bpf_dir.as_os_str().is_empty() {
        let run = handover(args.bpf_dir.clone(), own_generation, gates, stats.clone());
        // Until stopped: it retries every HANDOVER_PERIOD for good, and a task that ignores
        // the stop holds every shutdown for the whole grace period.
        tasks.spawn_until_stopped("pinned-generation handover", async move {
            run.await;
            Ok(())
        });
    }
    let (tx, mut rx) = mpsc::channel(65536);
    tasks.spawn_until_stopped("ring-buffer reader", {
        let stats = stats.clone();
        async move {
            events::reader::run(ring, tx, stats).await?;
            Err("the decoder's queue closed".into())
        }
    });
    tasks.spawn_until_stopped("event decoder", {
        let bus = bus.clone();
        let images = agent.images();
        let pods = pod_index.map(|i| Arc::new(i) as Arc<dyn events::enrich::PodLookup>);
        async move {
            let mut cache = ProcessCache::new(events::enrich::node_name(), pods);
            let mut metrics = lsm_agent::metrics::EventMetrics::new();
            // Lost exit events would leave their processes cached for good: check the cache
            // against /proc now and then.
            let mut reconcile = tokio::time::interval(RECONCILE_PERIOD);
            loop {
                tokio::select! {
                    ev = rx.recv() => {
                        let Some(ev) = ev else { break };
                        let img = images.borrow().clone();
                        let out = cache.convert(&ev, &img);
                        metrics.record(&ev, &out);
                        for ev in out {
                            bus.publish(ev);
                        }
                    }
                    _ = reconcile.tick() => {
                        let dropped = cache.reconcile(|t| lsm_agent::procfs::Proc::open(t).is_some());
                        if dropped > 0 {
                            debug!(dropped, "processes whose exit was not seen dropped from the cache");
                        }
                    }
                }
                metrics.set_process_cache_size(cache.len());
            }
            Err("the ring-buffer reader's queue closed".into())
        }
    });

    // Say so when the kernel loses events or has to fail closed: both deserve attention.
    tasks.spawn_until_stopped("stats logger", {
        let agent = agent.clone();
        let stats = stats.clone();
        async move {
            use lsm_shared::{
                STAT_DPATH_FAILED, STAT_PATH_UNRESOLVED, STAT_RING_LOST, STAT_WALK_FAILED,
            };
            let mut last = [0u64; lsm_shared::NUM_STATS as usize];
            let mut last_queue_lost = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let queue_lost = stats.queue_lost.load(std::sync::atomic::Ordering::Relaxed);
                if queue_lost > last_queue_lost {
                    warn!(
                        lost = queue_lost - last_queue_lost,
                        "events dropped: decoder queue full"
                    );
                    last_queue_lost = queue_lost;
                }
                let Some(now) = agent.kernel_stats().await? else {
                    continue;
                };
                let d = |i: u32| now[i as usize].saturating_sub(last[i as usize]);
                if d(STAT_RING_LOST) > 0 {
                    warn!(lost = d(STAT_RING_LOST), "events lost: ring buffer full");
                }
                if d(STAT_PATH_UNRESOLVED) > 0 {
                    // The rest are arguments the reader could not read (a NULL or bad
                    // pointer).
                    warn!(
                        count = d(STAT_PATH_UNRESOLVED),
                        walk_failed = d(STAT_WALK_FAILED),
                        "paths the kernel could not resolve (enforcing selectors treated them as matching)"
                    );
                }
                if d(STAT_DPATH_FAILED) > 0 {
                    debug!(
                        count = d(STAT_DPATH_FAILED),
                        "paths bpf_d_path could not resolve, walked instead"
                    );
                }
                last = now;
            }
        }
    });

    if let Some((listeners, handle)) = metrics {
        let collector = lsm_agent::metrics::Collector::new(lsm_agent::metrics::Sources {
            agent: Some(agent.clone()),
            reader: Some(stats.clone()),
            bus: Some(bus.clone()),
            dns: Some(dns_status.clone()),
            export_lost,
        });
        let stop = tasks.stop_token().cancelled_owned();
        let serve = lsm_agent::metrics::serve(listeners, handle, collector, stop);
        tasks.spawn("metrics server", async move {
            serve.await;
            Ok(())
        });
    }

    // The first canary before the API answers: health and readiness then say from the start
    // whether each hook denies.
    let mut canary_last = BTreeMap::new();
    canary_round(&agent, &mut canary_last)
        .await
        .context("running the canary")?;
    if args.canary_interval > 0 {
        let agent = agent.clone();
        let period = Duration::from_secs(args.canary_interval);
        tasks.spawn_until_stopped("canary", async move {
            loop {
                tokio::time::sleep(period).await;
                canary_round(&agent, &mut canary_last).await?;
            }
        });
    }

    // Certificates are read before the address is bound and advertised.
    let server_tls =
        grpc::tls::ServerTls::load(&args.server_tls, &args.server_address).context("gRPC TLS")?;
    let listeners = grpc::bind(&args.server_address)
        .await
        .with_context(|| format!("binding --server-address {}", args.server_address))?;
    let unix = bind_unix_socket(&args).await?;
    let unix_address = unix.as_ref().map(|(a, _)| a.clone());
    write_agent_info(&args.server_address, unix_address.as_deref());
    info!(address = %args.server_address, unix = ?unix_address, "gRPC server listening; agent ready");
    let control: Arc<dyn grpc::PolicyApi> = Arc::new(agent);
    if let Some((_, listener)) = unix {
        let (bus, control) = (bus.clone(), control.clone());
        let stop = tasks.stop_token().cancelled_owned();
        tasks.spawn("gRPC unix socket server", async move {
            grpc::serve_listeners(listener, bus, control, stop).await?;
            Ok(())
        });
    }
    let stop = tasks.stop_token().cancelled_owned();
    tasks.spawn("gRPC server", async move {
        grpc::serve_listeners_tls(listeners, bus, control, server_tls.as_ref(), stop).await?;
        Ok(())
    });

    let outcome = tasks.run(signal, GRACE).await;
    let _ = std::fs::remove_file(AGENT_INFO);
    // Give in-flight log lines a moment; links are detached when the probe drops.
    tokio::time::sleep(Duration::from_millis(10)).await;
    outcome?;
    info!("stopped");
    Ok(())
}
