//! Tests of the policy directory: the sync rules with an injected listing (no filesystem),
//! then the real watcher on real directories, with a fake map writer (no kernel).

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::*;
use crate::{
    agent::{
        owner::{AgentHandle, owner},
        state::{Agent, Source, tests::Recorder},
        status::{PolicyState, PolicyStatus},
    },
    policy::{compile::MapImage, ir::HostNs},
};

const V1: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/deny-etc-passwd-open.yaml"
));
const V2: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/lsm-file-open-v2.yaml"
));
const OTHER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/deny-truncate.yaml"
));
const BROKEN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/file-open-unknown-operator.yaml"
));

type Images = Arc<Mutex<Vec<MapImage>>>;

/// An agent behind its owner task, writing into a recorder.
fn start_agent() -> (AgentHandle, Images) {
    let (r, images) = Recorder::new();
    let (owner, handle) = owner(Agent::new(Box::new(r), HostNs::default()));
    tokio::spawn(owner.run());
    (handle, images)
}

fn listing(files: &[(&str, Result<&str, io::ErrorKind>)]) -> io::Result<Listing> {
    Ok(files
        .iter()
        .map(|(name, r)| {
            let r = r.map(str::to_owned).map_err(io::Error::from);
            (Path::new("/tp").join(name), r)
        })
        .collect())
}

fn os_error(errno: i32) -> io::Result<Listing> {
    Err(io::Error::from_raw_os_error(errno))
}

async fn status(agent: &AgentHandle) -> Vec<PolicyStatus> {
    agent.status().await.unwrap()
}

fn find<'a>(st: &'a [PolicyStatus], file: &str) -> &'a PolicyStatus {
    let source = Source::File(Path::new("/tp").join(file));
    st.iter()
        .find(|p| p.source == source)
        .unwrap_or_else(|| panic!("{file} not listed: {st:#?}"))
}

/// Two files loaded through a first good listing.
async fn two_loaded() -> (PolicyDir, AgentHandle, Images) {
    let (agent, images) = start_agent();
    let mut dir = PolicyDir::new("/tp".into(), BTreeMap::new());
    dir.sync(
        listing(&[("a.yaml", Ok(V1)), ("b.yaml", Ok(OTHER))]),
        &agent,
    )
    .await
    .unwrap();
    assert_eq!(status(&agent).await.len(), 2);
    assert_eq!(images.lock().unwrap().len(), 2);
    (dir, agent, images)
}

#[tokio::test]
async fn an_unlistable_directory_keeps_every_policy_and_says_why() {
    let (mut dir, agent, images) = two_loaded().await;
    let before = status(&agent).await;
    let image = agent.image();

    for (errno, text) in [
        (nix::errno::Errno::EACCES as i32, "Permission denied"),
        (nix::errno::Errno::EIO as i32, "Input/output error"),
    ] {
        dir.sync(os_error(errno), &agent).await.unwrap();
        let st = status(&agent).await;
        assert_eq!(st.len(), 2, "nothing unloaded after {text}");
        for (now, was) in st.iter().zip(&before) {
            assert_eq!(now.id, was.id, "not reloaded either");
            assert!(now.enabled);
            assert_eq!(now.state, PolicyState::Error);
            let e = now.error.as_deref().unwrap();
            assert!(
                e.contains("policy directory /tp unreadable") && e.contains(text),
                "{e}"
            );
        }
        assert!(
            Arc::ptr_eq(&agent.image(), &image),
            "kernel image unchanged"
        );
        assert_eq!(images.lock().unwrap().len(), 2, "nothing written");
    }

    // Readable again with the same files: the marks go, nothing is reloaded.
    dir.sync(
        listing(&[("a.yaml", Ok(V1)), ("b.yaml", Ok(OTHER))]),
        &agent,
    )
    .await
    .unwrap();
    assert_eq!(status(&agent).await, before);
    assert_eq!(images.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreadable_file_keeps_its_policy_and_is_listed_with_the_error() {
    let (mut dir, agent, images) = two_loaded().await;
    dir.sync(
        listing(&[
            ("a.yaml", Err(io::ErrorKind::PermissionDenied)),
            ("b.yaml", Ok(OTHER)),
            ("c.yaml", Err(io::ErrorKind::InvalidData)),
        ]),
        &agent,
    )
    .await
    .unwrap();
    let st = status(&agent).await;
    assert_eq!(st.len(), 3);
    let a = find(&st, "a.yaml");
    assert_eq!(a.state, PolicyState::Error);
    assert_eq!(a.id, Some(1), "still the loaded version");
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .contains("cannot read policy file"),
        "{a:?}"
    );
    assert_eq!(find(&st, "b.yaml").state, PolicyState::Enabled);
    // Never loaded: a load error under the file's name.
    let c = find(&st, "c.yaml");
    assert_eq!((c.state, c.name.as_str()), (PolicyState::LoadError, "c"));
    assert_eq!(images.lock().unwrap().len(), 2);

    // Readable again and unchanged: back to normal without a reload; `c` is gone.
    dir.sync(
        listing(&[("a.yaml", Ok(V1)), ("b.yaml", Ok(OTHER))]),
        &agent,
    )
    .await
    .unwrap();
    let st = status(&agent).await;
    assert_eq!(st.len(), 2);
    assert_eq!(find(&st, "a.yaml").state, PolicyState::Enabled);
    assert_eq!(find(&st, "a.yaml").id, Some(1));
    assert_eq!(images.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn only_a_file_missing_from_a_good_listing_is_unloaded() {
    let (mut dir, agent, _) = two_loaded().await;
    dir.sync(listing(&[("a.yaml", Ok(V1))]), &agent)
        .await
        .unwrap();
    let st = status(&agent).await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].name, "lsm-file-open");
}

#[tokio::test]
async fn a_broken_new_version_keeps_the_old_one_and_its_error_survives_an_outage() {
    let (mut dir, agent, images) = two_loaded().await;
    let good = listing(&[("a.yaml", Ok(BROKEN)), ("b.yaml", Ok(OTHER))]);
    dir.sync(good, &agent).await.unwrap();
    let rejected = find(&status(&agent).await, "a.yaml").clone();
    assert_eq!(rejected.state, PolicyState::Error);
    assert_eq!(rejected.id, Some(1));
    assert!(
        rejected
            .error
            .as_deref()
            .unwrap()
            .contains("new version not loaded, previous one enforcing: /tp/a.yaml:"),
        "{rejected:?}"
    );

    dir.sync(os_error(nix::errno::Errno::EIO as i32), &agent)
        .await
        .unwrap();
    assert!(
        find(&status(&agent).await, "a.yaml")
            .error
            .as_deref()
            .unwrap()
            .contains("unreadable")
    );

    // The same broken content once readable: its own error again, not parsed into a reload.
    let again = listing(&[("a.yaml", Ok(BROKEN)), ("b.yaml", Ok(OTHER))]);
    dir.sync(again, &agent).await.unwrap();
    assert_eq!(find(&status(&agent).await, "a.yaml"), &rejected);
    assert_eq!(images.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_policy_moved_to_a_file_of_another_name_is_loaded_from_it() {
    let (agent, _) = start_agent();
    let mut dir = PolicyDir::new("/tp".into(), BTreeMap::new());
    dir.sync(listing(&[("a.yaml", Ok(V1))]), &agent)
        .await
        .unwrap();
    dir.sync(listing(&[("renamed.yaml", Ok(V1))]), &agent)
        .await
        .unwrap();
    let st = status(&agent).await;
    assert_eq!(st.len(), 1, "{st:#?}");
    assert_eq!(st[0].source, Source::File("/tp/renamed.yaml".into()));
    assert_eq!(st[0].state, PolicyState::Enabled);
}

#[test]
fn policy_file_names_skip_hidden_entries_and_other_extensions() {
    for name in ["p.yaml", "p.yml", "..p.yaml.yaml"] {
        let expect = !name.starts_with('.');
        assert_eq!(is_policy_file_name(name.as_ref()), expect, "{name}");
    }
    for name in ["..data", ".p.yaml", "p.yaml.swp", "p.json", "yaml"] {
        assert!(!is_policy_file_name(name.as_ref()), "{name}");
    }
}

#[test]
fn the_lister_follows_links_and_leaves_out_what_is_not_a_policy_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("a.yaml"), V1).unwrap();
    std::fs::write(d.join(".hidden.yaml"), V1).unwrap();
    std::fs::write(d.join("notes.txt"), "x").unwrap();
    std::fs::create_dir(d.join("sub.yaml")).unwrap();
    std::fs::create_dir(d.join("real")).unwrap();
    std::fs::write(d.join("real/b.yaml"), OTHER).unwrap();
    std::os::unix::fs::symlink("real/b.yaml", d.join("b.yaml")).unwrap();
    std::os::unix::fs::symlink("nowhere.yaml", d.join("dangling.yaml")).unwrap();
    let l = list_policy_dir(d).unwrap();
    let names: Vec<_> = l.keys().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(names, ["a.yaml", "b.yaml"]);
    assert_eq!(l[&d.join("b.yaml")].as_deref().unwrap(), OTHER);

    // Not a directory: the listing as a whole fails.
    let e = list_policy_dir(&d.join("notes.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(nix::errno::Errno::ENOTDIR as i32));
}

// ---------------------------------------------------------------------------------------------
// The real watcher on real directories.

/// Every log line of this test process. Process-wide because a thread-local subscriber
/// misses events whose call sites another test thread registers at the same moment; tests
/// look for lines naming their own temporary directory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

fn logs() -> &'static Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(sub).expect("the only subscriber of the tests");
        logs
    })
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits (real time) until `check` holds for the agent's policy list.
async fn until(agent: &AgentHandle, what: &str, check: impl Fn(&[PolicyStatus]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status(agent).await;
        if check(&st) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the watcher on `dir` with what it holds now loaded, as the daemon does.
async fn watched(dir: &Path) -> (AgentHandle, Images) {
    let (agent, images) = start_agent();
    let initial: BTreeMap<PathBuf, String> = list_policy_dir(dir)
        .unwrap()
        .into_iter()
        .map(|(p, r)| (p, r.unwrap()))
        .collect();
    for (path, text) in &initial {
        let p = crate::policy::parse::parse_policy(text, path).unwrap();
        agent.upsert_file(path.clone(), p).await.unwrap();
    }
    let state = PolicyDir::new(dir.to_path_buf(), initial);
    tokio::spawn(watch(agent.clone(), state, list_policy_dir));
    (agent, images)
}

/// The image has an `Equal` entry for `path` (the fixtures' only kind of value).
fn denies(img: &MapImage, path: &str) -> bool {
    img.str_eq
        .keys()
        .any(|(_, _, value)| value.starts_with(path.as_bytes()))
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_file_replaced_by_rename_is_reloaded_without_a_gap_and_a_deleted_one_unloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("p.yaml"), V1).unwrap();
    std::fs::write(d.join("q.yaml"), OTHER).unwrap();
    let (agent, images) = watched(d).await;
    let written = images.lock().unwrap().len();

    write_atomically(&d.join("p.yaml"), V2);
    until(&agent, "the new version", |st| {
        st.iter().any(|p| p.id == Some(3))
    })
    .await;
    {
        let imgs = images.lock().unwrap();
        let after: Vec<&MapImage> = imgs[written..].iter().collect();
        assert_eq!(after.len(), 1, "one switch, no unload-then-load");
        assert!(denies(after[0], "/etc/shadow") && !denies(after[0], "/etc/passwd"));
    }

    std::fs::remove_file(d.join("q.yaml")).unwrap();
    until(&agent, "q.yaml unloaded", |st| st.len() == 1).await;
    let st = status(&agent).await;
    assert_eq!(st[0].source, Source::File(d.join("p.yaml")));
    assert_eq!(st[0].state, PolicyState::Enabled);
}

#[tokio::test]
async fn a_configmap_style_data_swap_is_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The kubelet's layout: real files in a hidden timestamped directory, `..data` pointing
    // at it, and one link per key through `..data`.
    std::fs::create_dir(d.join("..2026_01_01_00_00_00.1")).unwrap();
    std::fs::write(d.join("..2026_01_01_00_00_00.1/p.yaml"), V1).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/p.yaml", d.join("p.yaml")).unwrap();
    let (agent, images) = watched(d).await;
    assert_eq!(
        status(&agent).await.len(),
        1,
        "hidden entries are no policies"
    );

    std::fs::create_dir(d.join("..2026_01_01_00_01_00.2")).unwrap();
    std::fs::write(d.join("..2026_01_01_00_01_00.2/p.yaml"), V2).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_01_00.2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_01_01_00_00_00.1")).unwrap();

    until(&agent, "the swapped content", |st| {
        st.len() == 1 && st[0].id == Some(2) && st[0].state == PolicyState::Enabled
    })
    .await;
    assert!(denies(&agent.image(), "/etc/shadow"));
    assert!(images.lock().unwrap().iter().all(|i| !i.str_eq.is_empty()));
}

#[tokio::test]
async fn a_directory_that_cannot_be_listed_keeps_everything_until_it_is_back() {
    let logs = logs();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("tp");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("p.yaml"), V1).unwrap();
    std::fs::write(d.join("q.yaml"), OTHER).unwrap();
    let (agent, images) = watched(&d).await;
    let before = status(&agent).await;
    let written = images.lock().unwrap().len();
    // Root reads a chmod 000 directory anyway: make listing fail for real by putting a file
    // (ENOTDIR), then a link to nothing (ENOENT), where the directory was.
    let away = tmp.path().join("tp.away");
    std::fs::rename(&d, &away).unwrap();
    std::fs::write(&d, "not a directory").unwrap();
    until(&agent, "the unreadable mark", |st| {
        st.len() == 2
            && st.iter().all(|p| {
                p.state == PolicyState::Error
                    && p.error
                        .as_deref()
                        .is_some_and(|e| e.contains("Not a directory"))
            })
    })
    .await;
    std::fs::remove_file(&d).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &d).unwrap();
    until(&agent, "the ENOENT mark", |st| {
        st.len() == 2
            && st.iter().all(|p| {
                p.error
                    .as_deref()
                    .is_some_and(|e| e.contains("No such file or directory"))
            })
    })
    .await;
    assert_eq!(images.lock().unwrap().len(), written, "nothing unloaded");
    assert!(logs.text().contains(&format!(
        "policy directory unreadable, keeping 2 loaded policies: Not a directory (os error 20) dir={}",
        d.display()
    )));

    // Back, with one file changed while it was away: the change loads, the rest is as before.
    std::fs::write(away.join("p.yaml"), V2).unwrap();
    std::fs::remove_file(&d).unwrap();
    std::fs::rename(&away, &d).unwrap();
    until(&agent, "recovery", |st| {
        st.len() == 2 && st.iter().all(|p| p.state == PolicyState::Enabled)
    })
    .await;
    let st = status(&agent).await;
    assert_eq!(st[1], before[1], "the unchanged file was not reloaded");
    assert_eq!(st[0].id, Some(3), "the changed one was");
    assert!(
        logs.text().contains(&format!(
            "policy directory readable again, 2 policy files dir={}",
            d.display()
        )),
        "{}",
        logs.text()
    );

    // And the new watch sees later changes.
    std::fs::remove_file(d.join("q.yaml")).unwrap();
    until(&agent, "q.yaml unloaded", |st| st.len() == 1).await;
}

#[tokio::test]
async fn the_watchers_own_reads_do_not_wake_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    std::fs::write(d.join("p.yaml"), V1).unwrap();
    let (agent, _) = start_agent();
    let listings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = {
        let listings = listings.clone();
        move |dir: &Path| {
            listings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            list_policy_dir(dir)
        }
    };
    tokio::spawn(watch(
        agent.clone(),
        PolicyDir::new(d.clone(), BTreeMap::new()),
        counted,
    ));
    until(&agent, "the first read", |st| st.len() == 1).await;
    // Reading opens the directory and the file, which inotify reports; none of it may count.
    tokio::time::sleep(DEBOUNCE * 5).await;
    assert_eq!(listings.load(std::sync::atomic::Ordering::SeqCst), 1);
    std::fs::write(d.join("p.yaml"), V2).unwrap();
    until(&agent, "the change", |st| st[0].id == Some(2)).await;
    tokio::time::sleep(DEBOUNCE * 5).await;
    let after_change = listings.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(DEBOUNCE * 5).await;
    assert_eq!(
        listings.load(std::sync::atomic::Ordering::SeqCst),
        after_change
    );
}
