//! `lsmctl`: a small `tetra`-like client for the lsm-agent gRPC API (which `tetra` itself can
//! also use).

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lsm_agent::grpc::tls::{ClientTlsOptions, error_chain};
use lsm_agent::{
    policy::check::check_files,
    tetragon::{
        compact::{ColorMode, CompactOptions, encode_compact},
        json::event_to_json,
        proto::tetragon::{
            AddTracingPolicyRequest, ConfigureTracingPolicyRequest, DeleteTracingPolicyRequest,
            EventType, FieldFilter, FieldFilterAction, Filter, GetEventsRequest,
            GetHealthStatusRequest, GetInfoRequest, GetVersionRequest, HealthStatusResult,
            ListTracingPoliciesRequest, TracingPolicyMode, TracingPolicyState, TracingPolicyStatus,
            fine_guidance_sensors_client::FineGuidanceSensorsClient,
        },
    },
};
use prost_types::FieldMask;
use tonic::transport::{Channel, Endpoint};

/// Written by the agent at start-up so that clients find it without flags.
const AGENT_INFO: &str = "/var/run/lsm-agent/agent-info.json";
const DEFAULT_ADDRESS: &str = "localhost:54321";
/// tetra's default; our events are far smaller, but a policy list could grow.
const MAX_RECV: usize = 10 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "lsmctl",
    version,
    about = "Client for the lsm-agent (Tetragon-compatible) gRPC API"
)]
struct Cli {
    /// gRPC address: host:port or unix:///path. Default: the agent's unix socket from
    /// /var/run/lsm-agent/agent-info.json (no egress policy can block it; not with TLS
    /// flags), else its `server_address` there, else localhost:54321.
    #[arg(long, global = true)]
    server_address: Option<String>,
    /// Deadline for unary calls, in seconds. Adding a policy returns once it is enforced,
    /// which includes the kernel verifying the BPF programs it is the first to need: tens of
    /// seconds on a slow or emulated node. A call cut off by its deadline may still complete
    /// in the agent, so the default leaves room for that.
    #[arg(long, global = true, default_value_t = 120)]
    timeout: u64,
    /// Client certificate (PEM) for mutual TLS, with --tls-key-file. Turns TLS on.
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file. Turns TLS on.
    #[arg(long, global = true, value_name = "FILE")]
    tls_key_file: Option<PathBuf>,
    /// CA bundles (PEM) that verify the server certificate; comma-separated or repeated.
    /// Turns TLS on. Without them (but with a client certificate) the system roots are used.
    #[arg(long, global = true, value_name = "FILES", value_delimiter = ',')]
    tls_ca_cert_files: Vec<PathBuf>,
    /// Name the server certificate must carry, and SNI, when it differs from the address host.
    #[arg(long, global = true, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Accept any server certificate (development only; not with --tls-ca-cert-files).
    #[arg(long, global = true)]
    tls_skip_verify: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream events (server-side filtered, like `tetra getevents`).
    Getevents(GetEventsArgs),
    /// Print agent health; exit 0 only if running and every policy is enabled.
    Status,
    /// Print client and server versions.
    Version {
        /// Only print the client version.
        #[arg(long)]
        client: bool,
    },
    /// Manage tracing policies.
    #[command(name = "tracingpolicy", visible_alias = "tp")]
    TracingPolicy {
        #[command(subcommand)]
        command: TpCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TpCommand {
    /// List loaded policies.
    List,
    /// Load a policy from a YAML file.
    Add { file: std::path::PathBuf },
    /// Check policy files offline (no agent needed): parse them with ${VAR} expanded from the
    /// environment, compile them together, and report hooks, selectors and map entries.
    /// Exit status 1 if a file is rejected or the set does not compile.
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Unload a policy.
    Delete {
        name: String,
        #[arg(short, long, default_value = "")]
        namespace: String,
    },
    Enable {
        name: String,
        #[arg(short, long, default_value = "")]
        namespace: String,
    },
    Disable {
        name: String,
        #[arg(short, long, default_value = "")]
        namespace: String,
    },
    /// Switch between enforce and monitor.
    SetMode {
        name: String,
        mode: Mode,
        #[arg(short, long, default_value = "")]
        namespace: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Enforce,
    Monitor,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Json,
    Compact,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(clap::Args, Debug)]
struct GetEventsArgs {
    #[arg(short, long, value_enum, default_value = "json")]
    output: Output,
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
    /// Prefix each compact line with the event time.
    #[arg(long)]
    timestamps: bool,
    /// Binary regexes (unanchored).
    #[arg(long, alias = "processes", num_args = 1..)]
    process: Vec<String>,
    /// Kubernetes namespaces.
    #[arg(short, long, alias = "namespaces", num_args = 1..)]
    namespace: Vec<String>,
    /// Events from processes outside any pod.
    #[arg(long)]
    host: bool,
    /// Pod name regexes.
    #[arg(long, alias = "pod", num_args = 1..)]
    pods: Vec<String>,
    /// Container name regexes.
    #[arg(long, num_args = 1..)]
    containers: Vec<String>,
    /// Namespace regexes.
    #[arg(long, num_args = 1..)]
    namespace_regex: Vec<String>,
    /// Event types, e.g. PROCESS_EXEC, PROCESS_LSM.
    #[arg(short, long, num_args = 1..)]
    event_types: Vec<String>,
    #[arg(long, num_args = 1..)]
    policy_names: Vec<String>,
    /// Keep only these fields of each event, e.g. `process,parent.pod` (field paths of the
    /// event message, comma-separated or repeated).
    #[arg(short = 'f', long, value_name = "FIELDS", value_delimiter = ',')]
    include_fields: Vec<String>,
    /// Remove these fields from each event, e.g. `parent,process.pod.pod_labels`.
    #[arg(short = 'F', long, value_name = "FIELDS", value_delimiter = ',')]
    exclude_fields: Vec<String>,
}

/// Where and how to connect.
struct Target {
    address: String,
    tls: ClientTlsOptions,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Version { client: true } = cli.command {
        println!("CLI version: {}", env!("CARGO_PKG_VERSION"));
        return Ok(ExitCode::SUCCESS);
    }
    // Offline: must work where no agent runs (CI, a laptop), so it never connects.
    if let Command::TracingPolicy {
        command: TpCommand::Check { files },
    } = &cli.command
    {
        return Ok(check(files));
    }
    let tls = ClientTlsOptions {
        cert_file: cli.tls_cert_file,
        key_file: cli.tls_key_file,
        ca_files: cli.tls_ca_cert_files,
        server_name: cli.tls_server_name,
        skip_verify: cli.tls_skip_verify,
    };
    let info = std::fs::read(AGENT_INFO)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let address = resolve_address(cli.server_address.as_deref(), info.as_ref(), tls.enabled());
    let address = &Target { address, tls };
    let unary_timeout = Duration::from_secs(cli.timeout);
    match cli.command {
        Command::Getevents(args) => getevents(address, args).await,
        Command::Status => status(address, unary_timeout).await,
        Command::Version { .. } => {
            println!("CLI version: {}", env!("CARGO_PKG_VERSION"));
            let mut c = connect(address, Some(unary_timeout)).await?;
            let v = c
                .get_version(GetVersionRequest {})
                .await
                .context("GetVersion")?
                .into_inner();
            println!("Server version: {}", v.version);
            Ok(ExitCode::SUCCESS)
        }
        Command::TracingPolicy { command } => tracingpolicy(address, unary_timeout, command).await,
    }
}

/// The address to call: the flag; else, from the running agent's `info`, its unix socket
/// when it still exists (TLS flags ask for TCP), else its TCP address; else the default.
fn resolve_address(flag: Option<&str>, info: Option<&serde_json::Value>, tls: bool) -> String {
    if let Some(a) = flag.filter(|a| !a.is_empty()) {
        return a.to_owned();
    }
    let field = |k: &str| {
        info.and_then(|v| v.get(k)?.as_str().map(str::to_owned))
            .filter(|a| !a.is_empty())
    };
    let unix = field("unix_socket").filter(|a| {
        let path = a.strip_prefix("unix://").unwrap_or(a);
        !tls && Path::new(path).exists()
    });
    unix.or_else(|| field("server_address"))
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned())
}

/// `unix:///path` is handled by tonic itself; TCP addresses get a scheme (`https` with TLS),
/// and like the agent a missing host means localhost and a missing port means 54321.
fn endpoint_uri(address: &str, tls: bool) -> String {
    if address.starts_with("unix:") || address.contains("://") {
        return address.to_owned();
    }
    let scheme = if tls { "https" } else { "http" };
    let addr = if address.starts_with(':') {
        format!("localhost{address}")
    } else {
        address.to_owned()
    };
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        format!("{scheme}://{addr}")
    } else {
        format!("{scheme}://{addr}:54321")
    }
}

async fn connect(
    target: &Target,
    timeout: Option<Duration>,
) -> Result<FineGuidanceSensorsClient<Channel>> {
    let address = target.address.as_str();
    let tls = target.tls.enabled();
    if tls && address.starts_with("unix:") {
        bail!("TLS flags given, but {address} is a unix socket (served without TLS)");
    }
    let uri = endpoint_uri(address, tls);
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid server address {address:?}"))?
        .connect_timeout(Duration::from_secs(2));
    let mut endpoint = target.tls.apply(endpoint)?;
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    // Connect eagerly so that "nothing listens" fails within the connect timeout, not later.
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("connecting to {address}: {}", error_chain(&e)))?;
    Ok(FineGuidanceSensorsClient::new(channel).max_decoding_message_size(MAX_RECV))
}

fn parse_event_type(name: &str) -> Result<i32> {
    let upper = name.to_ascii_uppercase();
    EventType::from_str_name(&upper)
        .map(|t| t as i32)
        .ok_or_else(|| anyhow!("unknown event type {name:?} (e.g. PROCESS_EXEC, PROCESS_EXIT, PROCESS_KPROBE, PROCESS_TRACEPOINT, PROCESS_UPROBE, PROCESS_LSM)"))
}

/// Mirrors tetra: always exactly one allow filter, possibly empty (= everything).
fn build_request(args: &GetEventsArgs) -> Result<GetEventsRequest> {
    let mut namespace = args.namespace.clone();
    if args.host {
        namespace.push(String::new());
    }
    let filter = Filter {
        binary_regex: args.process.clone(),
        namespace,
        pod_regex: args.pods.clone(),
        container_name_regex: args.containers.clone(),
        namespace_regex: args.namespace_regex.clone(),
        event_set: args
            .event_types
            .iter()
            .map(|e| parse_event_type(e))
            .collect::<Result<_>>()?,
        policy_names: args.policy_names.clone(),
        ..Default::default()
    };
    // Like tetra: one INCLUDE then one EXCLUDE filter, for every event type.
    let field_filter = |paths: &[String], action: FieldFilterAction| {
        (!paths.is_empty()).then(|| FieldFilter {
            fields: Some(FieldMask {
                paths: paths.to_vec(),
            }),
            action: action as i32,
            ..Default::default()
        })
    };
    let field_filters = [
        field_filter(&args.include_fields, FieldFilterAction::Include),
        field_filter(&args.exclude_fields, FieldFilterAction::Exclude),
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(GetEventsRequest {
        allow_list: vec![filter],
        field_filters,
        ..Default::default()
    })
}

async fn getevents(address: &Target, args: GetEventsArgs) -> Result<ExitCode> {
    let request = build_request(&args)?;
    let mode = match args.color {
        Color::Auto => ColorMode::Auto,
        Color::Always => ColorMode::Always,
        Color::Never => ColorMode::Never,
    };
    let opts = CompactOptions {
        color: mode.enabled(),
        timestamps: args.timestamps,
        ..Default::default()
    };
    let mut client = connect(address, None).await?;
    let mut stream = client
        .get_events(request)
        .await
        .context("GetEvents")?
        .into_inner();
    let mut out = io::stdout().lock();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let ev = match msg {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(s) if s.code() == tonic::Code::Cancelled => return Ok(ExitCode::SUCCESS),
            Err(s) => bail!("failed to receive events: {s}"),
        };
        let line = match args.output {
            Output::Json => event_to_json(&ev),
            // Like tetra, an event that cannot be rendered ends the stream.
            Output::Compact => encode_compact(&ev, &opts).context("failed to encode event")?,
        };
        // A closed pipe (e.g. `| head`) is a normal way to stop reading.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn state_name(s: i32) -> String {
    TracingPolicyState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TP_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({s})"))
}

fn mode_name(m: i32) -> String {
    TracingPolicyMode::try_from(m)
        .map(|m| {
            m.as_str_name()
                .trim_start_matches("TP_MODE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({m})"))
}

fn policy_label(p: &TracingPolicyStatus) -> String {
    if p.namespace.is_empty() {
        p.name.clone()
    } else {
        format!("{}/{}", p.namespace, p.name)
    }
}

async fn status(address: &Target, timeout: Duration) -> Result<ExitCode> {
    let mut c = connect(address, Some(timeout)).await?;
    let health = c
        .get_health(GetHealthStatusRequest::default())
        .await
        .context("GetHealth")?
        .into_inner();
    let mut ok = true;
    match health.health_status.first() {
        Some(h) => {
            println!("Health Status: {}", h.details);
            if h.status != HealthStatusResult::HealthStatusRunning as i32 {
                let name =
                    HealthStatusResult::try_from(h.status).map_or("unknown", |r| r.as_str_name());
                println!("agent is not running: {name}");
                ok = false;
            }
        }
        None => {
            println!("Health Status: no status available");
            ok = false;
        }
    }
    let info = c
        .get_info(GetInfoRequest::default())
        .await
        .context("GetInfo")?
        .into_inner();
    let probes: Vec<(String, bool)> = info
        .probes
        .into_iter()
        .map(|p| (p.name, p.enabled.unwrap_or(false)))
        .collect();
    for line in feature_lines(&probes) {
        println!("{line}");
    }
    let policies = c
        .list_tracing_policies(ListTracingPoliciesRequest::default())
        .await
        .context("ListTracingPolicies")?;
    for p in &policies.get_ref().policies {
        if p.state != TracingPolicyState::TpStateEnabled as i32 {
            ok = false;
            let err = if p.error.is_empty() {
                String::new()
            } else {
                format!(": {}", p.error)
            };
            println!("policy {} is {}{err}", policy_label(p), state_name(p.state));
        }
        for line in observed_lines(p) {
            println!("{line}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `GetInfo`'s probes as `lsmctl status` prints them: one line for the kernel's capabilities,
/// one per hook with the entry point it got (probe names of `bpf::modes::feature_probes`).
fn feature_lines(probes: &[(String, bool)]) -> Vec<String> {
    let yes_no = |v: bool| if v { "yes" } else { "no" };
    let kernel: Vec<String> = probes
        .iter()
        .filter(|(n, _)| !n.contains(':'))
        .map(|(n, v)| format!("{n} {}", yes_no(*v)))
        .collect();
    let mut lines = Vec::new();
    if !kernel.is_empty() {
        lines.push(format!("Kernel: {}", kernel.join(", ")));
    }
    let enabled = |name: &str| probes.iter().any(|(n, v)| n == name && *v);
    for (name, _) in probes {
        let Some(hook) = name.strip_prefix("lsm:") else {
            continue;
        };
        let kprobe = probes.iter().filter(|(_, v)| *v).find_map(|(n, _)| {
            n.strip_prefix("kprobe:")?
                .strip_prefix(hook)?
                .strip_prefix(':')
        });
        let how = if enabled(name) {
            let paths = if enabled(&format!("bpf_d_path:{hook}")) {
                ", paths by bpf_d_path"
            } else {
                ""
            };
            format!("LSM program, denies before the operation{paths}")
        } else if let Some(f) = kprobe {
            format!("kprobe {f}, observes only (BPF LSM is not active)")
        } else {
            "unavailable on this kernel".to_owned()
        };
        lines.push(format!("Hook {hook}: {how}"));
    }
    lines
}

/// One line per hook of `p` that is only observed (the agent lists them in the policy's
/// sensors): `observe:<function>` for an LSM hook a kprobe observes because BPF LSM is
/// inactive (degraded, but not an error), `observe:<kind>:<target>` for a call or tracepoint
/// without an LSM hook.
fn observed_lines(p: &TracingPolicyStatus) -> Vec<String> {
    p.sensors
        .iter()
        .filter_map(|s| s.strip_prefix(lsm_agent::grpc::policy::OBSERVE_PREFIX))
        .map(|f| match f.split_once(':') {
            Some((kind, target)) => format!(
                "policy {}: observed by {kind} {target} (no LSM hook: events, Sigkill after the fact)",
                policy_label(p)
            ),
            None => format!(
                "policy {}: observed by kprobe {f} (BPF LSM is not active: no pre-operation deny)",
                policy_label(p)
            ),
        })
        .collect()
}

/// Human-readable size, as Tetragon's `tp list` shows kernel memory.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

fn print_policy_table(policies: &[TracingPolicyStatus]) {
    let header = [
        "ID",
        "NAME",
        "STATE",
        "FILTERID",
        "NAMESPACE",
        "SENSORS",
        "KERNELMEMORY",
        "MODE",
        "NPOST",
        "NENFORCE",
        "NMONITOR",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| (*s).to_owned()).collect()];
    for p in policies {
        let c = p
            .stats
            .as_ref()
            .and_then(|s| s.action_counters)
            .unwrap_or_default();
        rows.push(vec![
            p.id.to_string(),
            p.name.clone(),
            state_name(p.state),
            p.filter_id.to_string(),
            if p.namespace.is_empty() {
                "(global)".to_owned()
            } else {
                p.namespace.clone()
            },
            p.sensors.join(","),
            human_bytes(p.kernel_memory_bytes),
            mode_name(p.mode),
            c.post.to_string(),
            (c.signal + c.r#override + c.notify_enforcer + c.set).to_string(),
            (c.monitor_signal + c.monitor_override + c.monitor_notify_enforcer + c.monitor_set)
                .to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join(" ").trim_end());
    }
}

/// `tracingpolicy check`: the report on stdout, `error:`/`warning:` lines on stderr (the
/// `file:line:col:` prefix is what editors and CI annotate from, as with the agent).
fn check(files: &[std::path::PathBuf]) -> ExitCode {
    let report = check_files(files, |name| std::env::var(name).ok());
    for line in report.diagnostics() {
        eprintln!("{line}");
    }
    print!("{}", report.render());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn tracingpolicy(
    address: &Target,
    timeout: Duration,
    command: TpCommand,
) -> Result<ExitCode> {
    if let TpCommand::Check { files } = &command {
        return Ok(check(files));
    }
    let mut c = connect(address, Some(timeout)).await?;
    match command {
        // Already handled above; kept so that the match stays exhaustive without a panic.
        TpCommand::Check { files } => return Ok(check(&files)),
        TpCommand::List => {
            let r = c
                .list_tracing_policies(ListTracingPoliciesRequest::default())
                .await
                .context("ListTracingPolicies")?;
            print_policy_table(&r.get_ref().policies);
        }
        TpCommand::Add { file } => {
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // ${VAR} comes from this shell's environment, as with envsubst: the agent's
            // environment is not the user's. Checking here too puts errors at the user's file
            // and line rather than at "<grpc>".
            let lookup = |name: &str| std::env::var(name).ok();
            lsm_agent::policy::parse::parse_policy_with_env(&source, &file, lookup)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let yaml = lsm_agent::policy::env::expand_env(&source, &file, lookup)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .text()
                .to_string();
            c.add_tracing_policy(AddTracingPolicyRequest {
                yaml,
                ..Default::default()
            })
            .await
            .context("failed to add tracing policy")?;
            println!("tracing policy {:?} added", file.display().to_string());
        }
        TpCommand::Delete { name, namespace } => {
            c.delete_tracing_policy(DeleteTracingPolicyRequest {
                name: name.clone(),
                namespace,
                ..Default::default()
            })
            .await
            .context("failed to delete tracing policy")?;
            println!("tracing policy {name:?} deleted");
        }
        TpCommand::Enable { name, namespace } => {
            let req = ConfigureTracingPolicyRequest {
                name: name.clone(),
                namespace,
                enable: Some(true),
                ..Default::default()
            };
            c.configure_tracing_policy(req)
                .await
                .context("failed to enable tracing policy")?;
            println!("tracing policy {name:?} enabled");
        }
        TpCommand::Disable { name, namespace } => {
            let req = ConfigureTracingPolicyRequest {
                name: name.clone(),
                namespace,
                enable: Some(false),
                ..Default::default()
            };
            c.configure_tracing_policy(req)
                .await
                .context("failed to disable tracing policy")?;
            println!("tracing policy {name:?} disabled");
        }
        TpCommand::SetMode {
            name,
            mode,
            namespace,
        } => {
            let mode = match mode {
                Mode::Enforce => TracingPolicyMode::TpModeEnforce,
                Mode::Monitor => TracingPolicyMode::TpModeMonitor,
            };
            c.configure_tracing_policy(ConfigureTracingPolicyRequest {
                name: name.clone(),
                namespace,
                mode: Some(mode as i32),
                ..Default::default()
            })
            .await
            .context("failed to set policy mode")?;
            println!(
                "tracing policy {name:?} mode set to {}",
                mode_name(mode as i32)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_unix_socket_is_preferred_unless_tls_is_asked_for_or_it_is_gone() {
        // Removed when the test ends, passed or failed.
        let dir = tempfile::Builder::new()
            .prefix("lsmctl-addr-")
            .tempdir()
            .unwrap();
        let sock = dir.path().join("api.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let info = serde_json::json!({
            "server_address": "localhost:4000",
            "unix_socket": format!("unix://{}", sock.display()),
        });
        let unix = format!("unix://{}", sock.display());
        assert_eq!(resolve_address(None, Some(&info), false), unix);
        assert_eq!(resolve_address(None, Some(&info), true), "localhost:4000");
        assert_eq!(
            resolve_address(Some("h:1"), Some(&info), false),
            "h:1",
            "the flag wins"
        );
        let gone = serde_json::json!({
            "server_address": "localhost:4000",
            "unix_socket": "unix:///nonexistent/lsm-agent.sock",
        });
        assert_eq!(resolve_address(None, Some(&gone), false), "localhost:4000");
        assert_eq!(resolve_address(None, None, false), DEFAULT_ADDRESS);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The request `lsmctl getevents <args>` sends.
    fn request(args: &[&str]) -> GetEventsRequest {
        let cli = Cli::try_parse_from(["lsmctl", "getevents"].iter().chain(args)).unwrap();
        let Command::Getevents(a) = cli.command else {
            unreachable!()
        };
        build_request(&a).unwrap()
    }

    #[test]
    fn status_prints_the_kernel_then_each_hooks_entry_point() {
        let p = |n: &str, v: bool| (n.to_owned(), v);
        let probes = [
            p("bpf_lsm", false),
            p("kprobes", true),
            p("lsm:file_open", false),
            p("kprobe:file_open:security_file_open", true),
            p("bpf_d_path:file_open", false),
            p("lsm:bprm_check_security", false),
            p("kprobe:bprm_check_security:security_bprm_check", true),
            p("lsm:file_truncate", false),
            p("kprobe:file_truncate:security_file_truncate", false),
        ];
        assert_eq!(
            feature_lines(&probes),
            [
                "Kernel: bpf_lsm no, kprobes yes",
                "Hook file_open: kprobe security_file_open, observes only (BPF LSM is not active)",
                "Hook bprm_check_security: kprobe security_bprm_check, observes only (BPF LSM is not active)",
                "Hook file_truncate: unavailable on this kernel",
            ]
        );
        let lsm = [p("lsm:file_open", true), p("bpf_d_path:file_open", true)];
        assert_eq!(
            feature_lines(&lsm),
            ["Hook file_open: LSM program, denies before the operation, paths by bpf_d_path"]
        );
    }

    #[test]
    fn status_names_each_hook_a_kprobe_only_observes() {
        let p = TracingPolicyStatus {
            name: "file-monitoring".into(),
            sensors: vec![
                "generic_kprobe".into(),
                "observe:security_file_permission".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            observed_lines(&p),
            [
                "policy file-monitoring: observed by kprobe security_file_permission (BPF LSM is not active: no pre-operation deny)"
            ]
        );
        let probes = TracingPolicyStatus {
            name: "creds".into(),
            sensors: vec![
                "generic_kprobe".into(),
                "observe:kretprobe:sys_openat".into(),
                "observe:tracepoint:raw_syscalls/sys_enter".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            observed_lines(&probes),
            [
                "policy creds: observed by kretprobe sys_openat (no LSM hook: events, Sigkill after the fact)",
                "policy creds: observed by tracepoint raw_syscalls/sys_enter (no LSM hook: events, Sigkill after the fact)",
            ]
        );
        let lsm = TracingPolicyStatus {
            sensors: vec!["generic_lsm".into()],
            ..p
        };
        assert!(observed_lines(&lsm).is_empty());
    }

    #[test]
    fn pod_flags_fill_tetras_filter_fields_in_one_allow_filter() {
        let r = request(&["--pods", "xwing", "tie.*", "--namespace", "default"]);
        assert_eq!(r.allow_list.len(), 1);
        let f = &r.allow_list[0];
        assert_eq!(f.pod_regex, ["xwing", "tie.*"]);
        assert_eq!(f.namespace, ["default"]);
        assert!(r.deny_list.is_empty() && r.field_filters.is_empty());
        // tetra's other spellings.
        let r = request(&[
            "--pod",
            "xwing",
            "-n",
            "default",
            "--namespaces",
            "kube-system",
        ]);
        assert_eq!(r.allow_list[0].pod_regex, ["xwing"]);
        assert_eq!(r.allow_list[0].namespace, ["default", "kube-system"]);
    }

    #[test]
    fn host_adds_the_empty_namespace_and_containers_select_by_name() {
        let r = request(&["--host", "-n", "default", "--containers", "spaceship"]);
        let f = &r.allow_list[0];
        assert_eq!(f.namespace, ["default", ""]);
        assert_eq!(f.container_name_regex, ["spaceship"]);
        assert_eq!(request(&[]).allow_list, [Filter::default()]);
    }
}
