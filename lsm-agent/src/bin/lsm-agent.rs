//! lsm-agent: loads Tetragon TracingPolicy files and enforces them at BPF-LSM hooks.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use lsm_agent::{
    agent::{Agent, Source},
    bpf::{Capabilities, Probe},
    events::{self, bus::EventBus, enrich::ProcessCache},
    grpc,
    policy::{ir::Policy, parse::parse_policy_file},
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

const AGENT_INFO: &str = "/var/run/lsm-agent/agent-info.json";

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
}

fn parse_dns_server(s: &str) -> Result<std::net::SocketAddr, String> {
    lsm_agent::dns::parse_server(s).map_err(|e| e.to_string())
}

fn policy_files(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = args.tracing_policy.clone();
    if let Some(dir) = &args.tracing_policy_dir {
        let mut in_dir: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading --tracing-policy-dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        in_dir.sort();
        files.extend(in_dir);
    }
    Ok(files)
}

/// Parses every file; reports all broken ones before giving up.
fn load_policies(files: &[PathBuf]) -> anyhow::Result<Vec<(Policy, Source)>> {
    let mut ok = Vec::new();
    let mut failed = 0;
    for f in files {
        match parse_policy_file(f) {
            Ok(p) => ok.push((p, Source::File(f.clone()))),
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

fn write_agent_info(server_address: &str) {
    let info = serde_json::json!({
        "server_address": server_address,
        "pid": std::process::id(),
    });
    let path = Path::new(AGENT_INFO);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, info.to_string()) {
        warn!("cannot write {AGENT_INFO}: {e}");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
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
    // Checked before anything is loaded, like the policies.
    let export = args.export.config().context("export flags")?;

    // What the directory held when it was read, so the watcher reloads anything that changes
    // from now on.
    let initial_dir = args
        .tracing_policy_dir
        .as_deref()
        .map(lsm_agent::agent::read_policy_dir)
        .unwrap_or_default();
    let files = policy_files(&args)?;
    let batch = load_policies(&files)?;
    // Compile before touching the kernel, so a policy set that cannot fit is refused early.
    {
        let refs: Vec<(u32, &Policy)> = batch
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (i as u32 + 1, p))
            .collect();
        lsm_agent::policy::compile::compile(&refs).context("compiling policies")?;
    }
    if args.check {
        println!("{} policy file(s) OK", batch.len());
        return Ok(());
    }
    if batch.is_empty() {
        warn!("no policy loaded: pass --tracing-policy FILE or --tracing-policy-dir DIR");
    }

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

    let caps = Capabilities::probe();
    info!(kernel = %caps.kernel_release, lsms = %caps.lsms, btf = caps.btf, "kernel capabilities");
    let (mut probe, ring) = Probe::load(&caps).context("loading BPF programs")?;
    let seeded = probe.seed_processes();
    info!(
        programs = probe.attached.len(),
        processes = seeded,
        "BPF-LSM programs attached"
    );

    let host_ns = lsm_agent::bpf::procfs::host_namespaces();
    let agent = Agent::with_host_ns(Box::new(probe), host_ns);
    let names: Vec<String> = batch.iter().map(|(p, _)| p.name.clone()).collect();
    agent.add_all(batch).context("enforcing policies")?;
    for n in &names {
        info!(policy = %n, "policy enforcing");
    }

    // `dns:` address values: resolve the names the policies use and keep their answers current.
    // `dns_status` holds every name's state, for status reporting.
    let dns_status = lsm_agent::dns::DnsStatus::new();
    match lsm_agent::dns::resolver(args.dns_server) {
        Ok(lookup) => {
            let status = dns_status.clone();
            let run = lsm_agent::dns::run(agent.clone(), lookup, status, Default::default());
            tokio::spawn(run);
        }
        Err(e) => error!("dns: no resolver, `dns:` address values match nothing: {e}"),
    }

    if let Some(dir) = args.tracing_policy_dir.clone() {
        info!(dir = %dir.display(), "watching for policy changes");
        tokio::spawn(lsm_agent::agent::watch_dir(
            agent.clone(),
            dir,
            initial_dir,
            Duration::from_millis(500),
        ));
    }

    // Ring buffer → decoded events → enriched events on the bus.
    let bus = EventBus::new(4096);
    // JSON export file: one more bus subscriber, subscribed before the first event.
    let exporter = match export {
        Some(cfg) => Some(
            lsm_agent::export::Exporter::start(cfg, &bus).context("starting the JSON export")?,
        ),
        None => None,
    };
    let stats = Arc::new(events::reader::ReaderStats::default());
    let (tx, mut rx) = mpsc::channel(65536);
    tokio::spawn({
        let stats = stats.clone();
        async move {
            if let Err(e) = events::reader::run(ring, tx, stats).await {
                error!("ring-buffer reader stopped: {e}");
            }
        }
    });
    tokio::spawn({
        let bus = bus.clone();
        let agent = agent.clone();
        async move {
            let mut cache = ProcessCache::new(events::enrich::node_name());
            let mut metrics = lsm_agent::metrics::EventMetrics::new();
            while let Some(ev) = rx.recv().await {
                let img = agent.image();
                let out = cache.convert(&ev, &img);
                metrics.record(&ev, &out);
                metrics.set_process_cache_size(cache.len());
                for ev in out {
                    bus.publish(ev);
                }
            }
        }
    });

    // Say so when the kernel loses events or has to fail closed: both deserve attention.
    tokio::spawn({
        let agent = agent.clone();
        let stats = stats.clone();
        async move {
            use lsm_shared::{STAT_PATH_UNRESOLVED, STAT_RING_LOST};
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
                let Some(now) = agent.kernel_stats() else {
                    continue;
                };
                let d = |i: u32| now[i as usize].saturating_sub(last[i as usize]);
                if d(STAT_RING_LOST) > 0 {
                    warn!(lost = d(STAT_RING_LOST), "events lost: ring buffer full");
                }
                if d(STAT_PATH_UNRESOLVED) > 0 {
                    warn!(
                        count = d(STAT_PATH_UNRESOLVED),
                        "paths the kernel could not resolve (enforcing selectors treated them as matching)"
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
        });
        let serve = lsm_agent::metrics::serve(listeners, handle, collector, std::future::pending());
        tokio::spawn(serve);
    }

    // Certificates are read before the address is bound and advertised.
    let server_tls =
        grpc::tls::ServerTls::load(&args.server_tls, &args.server_address).context("gRPC TLS")?;
    let listeners = grpc::bind(&args.server_address)
        .await
        .with_context(|| format!("binding --server-address {}", args.server_address))?;
    write_agent_info(&args.server_address);
    info!(address = %args.server_address, "gRPC server listening; agent ready");
    let control: Arc<dyn grpc::PolicyControl> = Arc::new(agent.clone());
    let served = grpc::serve_listeners_tls(
        listeners,
        bus,
        control,
        server_tls.as_ref(),
        shutdown_signal(),
    )
    .await;
    let _ = std::fs::remove_file(AGENT_INFO);
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    // Give in-flight log lines a moment; links are detached when the probe drops.
    tokio::time::sleep(Duration::from_millis(10)).await;
    served.context("gRPC server")?;
    info!("stopped");
    Ok(())
}
