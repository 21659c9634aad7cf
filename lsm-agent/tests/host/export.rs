//! The JSON export end to end without the kernel: events published on the `EventBus` (where
//! the daemon's ring-buffer pipeline publishes them) reach the export file filtered, rotated and
//! encoded as Tetragon's export encodes them.

use std::{
    collections::BTreeSet,
    fs,
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use lsm_agent::{
    events::{
        bus::EventBus,
        model::{
            Action, Event, EventKind, Exec, Exit, Hook, HookOrigin, LsmHook, Process, ProcessFlag,
            Target, Time,
        },
    },
    export::{ExportConfig, Exporter, Rotation, parse_filter_list},
};
use serde_json::Value;

fn process(binary: &str, pid: u32) -> Process {
    Process {
        exec_id: format!("bm9kZTo{pid}"),
        pid,
        uid: Some(0),
        cwd: Some("/".into()),
        binary: binary.into(),
        argv: vec![binary.into(), "/etc/shadow".into()],
        flags: vec![ProcessFlag::Execve],
        start_time: Some(Time::from_unix_secs(1_700_000_000)),
        parent_exec_id: Some("bm9kZToxMjM=".into()),
        ..Default::default()
    }
}

fn event(i: u32, kind: EventKind) -> Event {
    Event {
        node_name: "test-node".into(),
        time: Time::from_unix_secs(1_700_000_000 + i64::from(i)),
        kind,
    }
}

fn exec(i: u32, binary: &str) -> Event {
    event(
        i,
        EventKind::Exec(Exec {
            process: process(binary, 1000 + i),
            parent: Some(process("/bin/sh", 1)),
        }),
    )
}

fn lsm(i: u32, binary: &str) -> Event {
    event(
        i,
        EventKind::Hook(Hook {
            process: process(binary, 1000 + i),
            parent: None,
            policy_name: "file-monitoring".into(),
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
        }),
    )
}

fn exit(i: u32) -> Event {
    event(
        i,
        EventKind::Exit(Exit {
            process: process("/usr/bin/cat", 1000 + i),
            parent: None,
            signal: Some(9),
            status: 0,
        }),
    )
}

fn export_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn read_text(p: &Path) -> String {
    let mut s = String::new();
    if p.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(fs::File::open(p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
    } else {
        s = fs::read_to_string(p).unwrap();
    }
    s
}

fn lines(p: &Path) -> Vec<Value> {
    read_text(p)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l:?}: {e}", p.display())))
        .collect()
}

/// Backups are `tetragon-<2006-01-02T15-04-05.000>.log` (lumberjack's names).
fn is_backup(name: &str, gz: bool) -> bool {
    let ext = if gz { ".log.gz" } else { ".log" };
    name.strip_prefix("tetragon-")
        .and_then(|s| s.strip_suffix(ext))
        .is_some_and(|s| s.len() == 23 && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.')
}

#[tokio::test]
async fn events_on_the_bus_reach_the_file_filtered_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tetragon.log");
    let mut cfg = ExportConfig::new(&path);
    cfg.rotation = Rotation {
        max_size: 4096,
        max_backups: 2,
        compress: false,
        perm: 0o640,
    };
    cfg.allow = parse_filter_list(
        "--export-allowlist",
        r#"{"event_set":["PROCESS_EXEC"]} {"event_set":["PROCESS_LSM"],"policy_names":["file-monitoring"]}"#,
    )
    .unwrap();
    cfg.deny = parse_filter_list("--export-denylist", r#"{"binary_regex":["secret"]}"#).unwrap();
    let bus = EventBus::new(4096);
    let exporter = Exporter::start(cfg, &bus).unwrap();
    let stats = exporter.stats();

    let mut expected = Vec::new();
    for i in 0..200u32 {
        let ev = match i % 4 {
            0 => exec(i, "/usr/bin/cat"),
            1 => lsm(i, "/usr/bin/cat"),
            2 => exit(i),                    // not in the allow list
            _ => exec(i, "/usr/bin/secret"), // denied
        };
        if i % 4 < 2 {
            expected.push(i);
        }
        bus.publish(ev);
        if i % 50 == 0 {
            // Let the writer run between bursts, as it does in the daemon.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    exporter.shutdown().await;

    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.exported.load(Relaxed), expected.len() as u64);
    assert_eq!(stats.lost(), 0);
    assert!(stats.rotations.load(Relaxed) >= 3, "{stats:?}");

    // The current file and exactly two backups; every file within the size and at 0640.
    let files = export_files(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.contains(&path));
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(f == &path || is_backup(name, false), "{name}");
        let meta = fs::metadata(f).unwrap();
        assert!(meta.len() <= 4096, "{name}: {}", meta.len());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{name}");
    }

    // Oldest backup, newer backup, current file: the newest events, in order, nothing between
    // them missing; the oldest files were removed.
    let mut seen = Vec::new();
    for f in files.iter().filter(|f| *f != &path).chain([&path]) {
        for v in lines(f) {
            let obj = v.as_object().unwrap();
            assert_eq!(obj["node_name"], "test-node");
            let time = obj["time"].as_str().unwrap();
            assert!(
                time.starts_with("2023-11-") && time.ends_with('Z'),
                "{time}"
            );
            let (kind, inner) = obj.iter().find(|(k, _)| k.starts_with("process_")).unwrap();
            let p = &inner["process"];
            assert_eq!(p["binary"], "/usr/bin/cat");
            assert_eq!(p["start_time"], "2023-11-14T22:13:20Z");
            assert_eq!(p["parent_exec_id"], "bm9kZToxMjM=");
            assert!(p["exec_id"].is_string() && p["pid"].is_u64() && p["uid"] == 0);
            match kind.as_str() {
                "process_exec" => assert_eq!(inner["parent"]["binary"], "/bin/sh"),
                "process_lsm" => {
                    assert_eq!(inner["policy_name"], "file-monitoring");
                    assert_eq!(inner["function_name"], "file_open");
                    assert_eq!(inner["action"], "KPROBE_ACTION_POST");
                }
                k => panic!("{k} was exported"),
            }
            seen.push(p["pid"].as_u64().unwrap() as u32 - 1000);
        }
    }
    assert!(seen.len() > 10 && seen.len() < expected.len(), "{seen:?}");
    assert_eq!(seen[..], expected[expected.len() - seen.len()..]);
}

#[tokio::test]
async fn rate_limit_and_compressed_backups() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tetragon.log");
    let mut cfg = ExportConfig::new(&path);
    cfg.rotation = Rotation {
        max_size: 1024,
        max_backups: 0,
        compress: true,
        perm: 0o600,
    };
    cfg.rate_limit = Some(10);
    cfg.rate_limit_report = Duration::from_millis(100);
    cfg.node_name = "rl-node".into();
    let bus = EventBus::new(4096);
    let exporter = Exporter::start(cfg, &bus).unwrap();
    let stats = exporter.stats();
    for i in 0..40 {
        bus.publish(exec(i, "/usr/bin/cat"));
    }
    // The report of what the limit left out comes within the report interval.
    tokio::time::sleep(Duration::from_millis(400)).await;
    exporter.shutdown().await;

    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(stats.rate_limited.load(Relaxed), 30);
    let files = export_files(dir.path());
    let mut execs = BTreeSet::new();
    let mut dropped = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(f == &path || is_backup(name, true), "{name}");
        assert_eq!(fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600);
        for v in lines(f) {
            if let Some(r) = v.get("rate_limit_info") {
                assert_eq!(v["node_name"], "rl-node");
                dropped += r["number_of_dropped_process_events"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            } else {
                execs.insert(v["process_exec"]["process"]["pid"].as_u64().unwrap());
            }
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    // The first ten (the burst the limit allows), then the count of the others.
    assert_eq!(execs, (1000..1010).collect());
    assert_eq!(dropped, 30);
}

#[tokio::test]
async fn a_bad_path_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EventBus::new(16);
    let err = Exporter::start(ExportConfig::new(dir.path()), &bus).unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
}
