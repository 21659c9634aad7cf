//! `--tracing-policy-dir`: reading the directory, and keeping the loaded policies in step
//! with it.
//!
//! * [`list_policy_dir`] is the one lister, used at start-up and by the watcher.
//! * [`PolicyDir`] is what the watcher knows about the directory; [`PolicyDir::sync`] brings
//!   the agent in step with one listing.
//! * [`watch`] re-lists the directory whenever inotify reports a change in it (debounced).
//!
//! Rules: a new file is added, a changed file replaces its policy without a gap, a file that
//! is really gone (the listing succeeded without it) is unloaded. Nothing that could not be
//! *read* is unloaded: an unreadable file or directory keeps every loaded policy as it is,
//! and is reported in the log and in the policy list until it can be read again.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use notify_debouncer_full::{
    DebounceEventResult, NoCache,
    notify::{
        self, EventKind, RecommendedWatcher, RecursiveMode,
        event::{AccessKind, AccessMode},
    },
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{
    owner::AgentHandle,
    state::{AgentError, SourceError},
};
use crate::policy::parse::parse_policy_with_env;

/// How long the directory must be quiet before it is read again: editors and the kubelet
/// change it in several steps.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often a directory that cannot be read or watched is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The policy files of a directory, each with its content or why it could not be read.
pub type Listing = BTreeMap<PathBuf, Result<String, io::Error>>;

/// A policy file name: `*.yaml` or `*.yml`, not hidden. Hidden names are skipped because
/// Kubernetes keeps a ConfigMap's real files in `..<timestamp>/` behind `..data`, and editors
/// write their temporary files as `.name.swp`.
pub fn is_policy_file_name(name: &OsStr) -> bool {
    let name = Path::new(name);
    !name.as_os_str().as_encoded_bytes().starts_with(b".")
        && matches!(
            name.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        )
}

/// Lists `dir` and reads every policy file in it, following symlinks (ConfigMap files are
/// links into `..data/`). Fails as a whole when the directory cannot be listed completely, as
/// nothing can then be said about which files are gone. A file that vanishes while it is
/// read, or a link to nothing, is gone; any other error is kept for that file.
pub fn list_policy_dir(dir: &Path) -> io::Result<Listing> {
    let mut out = Listing::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !is_policy_file_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let read = fs::metadata(&path).and_then(|md| {
            if md.is_file() {
                fs::read_to_string(&path).map(Some)
            } else {
                Ok(None)
            }
        });
        match read {
            Ok(Some(text)) => {
                out.insert(path, Ok(text));
            }
            Ok(None) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                out.insert(path, Err(e));
            }
        }
    }
    Ok(out)
}

/// What the watcher knows about one file of the directory.
#[derive(Debug, Default)]
struct Tracked {
    /// The content last read (`None`: never read).
    text: Option<String>,
    /// A version of the file is loaded in the agent.
    loaded: bool,
    /// Why `text` failed to load.
    load_error: Option<String>,
    /// What the agent was last told about the file.
    reported: Option<SourceError>,
}

/// The watcher's view of a policy directory.
#[derive(Debug)]
pub struct PolicyDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Tracked>,
    /// Why the directory could not be listed last time.
    unreadable: Option<String>,
}

impl PolicyDir {
    /// A directory whose files were loaded at start-up with these contents.
    pub fn new(dir: PathBuf, loaded: BTreeMap<PathBuf, String>) -> Self {
        let files = loaded
            .into_iter()
            .map(|(path, text)| {
                let t = Tracked {
                    text: Some(text),
                    loaded: true,
                    ..Default::default()
                };
                (path, t)
            })
            .collect();
        PolicyDir {
            dir,
            files,
            unreadable: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory could not be listed last time.
    pub fn is_unreadable(&self) -> bool {
        self.unreadable.is_some()
    }

    fn loaded_count(&self) -> usize {
        self.files.values().filter(|t| t.loaded).count()
    }

    /// Brings the agent in step with `listing`. Fails only when the agent is gone; every
    /// other problem is logged and shown in the policy list.
    pub async fn sync(
        &mut self,
        listing: io::Result<Listing>,
        agent: &AgentHandle,
    ) -> Result<(), AgentError> {
        let listing = match listing {
            Ok(l) => l,
            Err(e) => return self.keep_everything(e, agent).await,
        };
        if self.unreadable.take().is_some() {
            info!(
                dir = %self.dir.display(),
                "policy directory readable again, {} policy files",
                listing.len()
            );
        }

        // New and changed files first, so that a replaced policy never leaves a gap.
        let mut duplicates = Vec::new();
        for (path, read) in &listing {
            let desired = match read {
                Ok(text) => {
                    let t = self.files.entry(path.clone()).or_default();
                    if t.text.as_deref() != Some(text.as_str()) {
                        t.text = Some(text.clone());
                        if let Err(AgentError::Duplicate(_)) = self.load(path, agent).await? {
                            duplicates.push(path.clone());
                        }
                    }
                    let t = self.files.entry(path.clone()).or_default();
                    t.load_error.clone().map(SourceError::Rejected)
                }
                Err(e) => {
                    let error = SourceError::Unreadable(format!("cannot read policy file: {e}"));
                    let t = self.files.entry(path.clone()).or_default();
                    if t.reported.as_ref() != Some(&error) {
                        if t.loaded {
                            error!(file = %path.display(), "policy file unreadable, keeping its loaded policy: {e}");
                        } else {
                            error!(file = %path.display(), "policy file unreadable: {e}");
                        }
                    }
                    Some(error)
                }
            };
            self.report(path, desired, agent).await?;
        }

        // Then what is really gone: the listing succeeded and does not have it.
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !listing.contains_key(*p))
            .cloned()
            .collect();
        let mut removed = false;
        for path in gone {
            match agent.remove_file(path.clone()).await {
                Ok(()) => {
                    self.files.remove(&path);
                    removed = true;
                    info!(file = %path.display(), "policy file removed, policy unloaded");
                }
                Err(AgentError::OwnerStopped) => return Err(AgentError::OwnerStopped),
                // Still tracked: the next change in the directory tries again.
                Err(e) => error!(file = %path.display(), "unloading policy: {e}"),
            }
        }

        // A policy moved to a file of another name could not load while the old file still
        // held its name.
        if removed {
            for path in duplicates {
                // The outcome is recorded in the tracked state (and logged).
                let _ = self.load(&path, agent).await?;
                let error = self.files.get(&path).and_then(|t| t.load_error.clone());
                let desired = error.map(SourceError::Rejected);
                self.report(&path, desired, agent).await?;
            }
        }
        Ok(())
    }

    /// The directory cannot be listed: every loaded policy stays, each is marked.
    async fn keep_everything(
        &mut self,
        e: io::Error,
        agent: &AgentHandle,
    ) -> Result<(), AgentError> {
        let why = format!("policy directory {} unreadable: {e}", self.dir.display());
        if self.unreadable.as_deref() != Some(why.as_str()) {
            error!(
                dir = %self.dir.display(),
                "policy directory unreadable, keeping {} loaded policies: {e}",
                self.loaded_count()
            );
        }
        self.unreadable = Some(why.clone());
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for path in paths {
            self.report(&path, Some(SourceError::Unreadable(why.clone())), agent)
                .await?;
        }
        Ok(())
    }

    /// Parses the tracked text of `path` and loads it. The outcome is recorded (and logged);
    /// it is returned too, for the caller to retry what a removal may unblock.
    async fn load(
        &mut self,
        path: &Path,
        agent: &AgentHandle,
    ) -> Result<Result<(), AgentError>, AgentError> {
        let Some(t) = self.files.get_mut(path) else {
            return Ok(Ok(()));
        };
        let Some(text) = &t.text else {
            return Ok(Ok(()));
        };
        // Like `--tracing-policy` files: `${VAR}` is expanded from the agent's environment.
        let parsed = parse_policy_with_env(text, path, |name| std::env::var(name).ok());
        let result = match parsed {
            Ok(policy) => {
                let name = policy.name.clone();
                agent
                    .upsert_file(path.to_path_buf(), policy)
                    .await
                    .map(|()| name)
            }
            Err(e) => Err(AgentError::Parse(e)),
        };
        match result {
            Ok(name) => {
                info!(policy = %name, file = %path.display(), "policy (re)loaded");
                t.loaded = true;
                t.load_error = None;
                // Loading clears what the agent showed for the file.
                t.reported = None;
                Ok(Ok(()))
            }
            Err(AgentError::OwnerStopped) => Err(AgentError::OwnerStopped),
            Err(e) => {
                error!(file = %path.display(), "policy not loaded, previous version kept: {e}");
                t.load_error = Some(e.to_string());
                Ok(Err(e))
            }
        }
    }

    /// Tells the agent what to show for `path`, when that changed.
    async fn report(
        &mut self,
        path: &Path,
        desired: Option<SourceError>,
        agent: &AgentHandle,
    ) -> Result<(), AgentError> {
        let Some(t) = self.files.get_mut(path) else {
            return Ok(());
        };
        if t.reported != desired {
            agent
                .set_file_error(path.to_path_buf(), desired.clone())
                .await?;
            t.reported = desired;
        }
        Ok(())
    }
}

/// The identity of a directory, to notice one replaced under the same name (the inotify watch
/// stays on the old one).
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

type Debouncer = notify_debouncer_full::Debouncer<RecommendedWatcher, NoCache>;

/// Watches `dir` itself (not recursively): creating, removing, writing or renaming an entry,
/// including the swap of a ConfigMap's `..data` link, is an event.
fn start_watch(
    dir: &Path,
    events: mpsc::UnboundedSender<DebounceEventResult>,
) -> notify::Result<Debouncer> {
    let mut debouncer = notify_debouncer_full::new_debouncer_opt(
        DEBOUNCE,
        None,
        move |r: DebounceEventResult| {
            // Fails only once the watch loop is gone.
            let _ = events.send(r);
        },
        NoCache,
        notify::Config::default(),
    )?;
    debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// Whether an event may mean new content. inotify also reports every open of a file, the
/// watcher's own reads included, which would otherwise wake it forever.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Keeps the agent in step with the directory of `state`, listed with `list`, until the agent
/// is gone. The directory is read once when the watch starts (so nothing that changed since
/// the start-up listing is missed), then after every debounced change. While it cannot be
/// read or watched, it is tried again every [`RETRY`].
pub async fn watch(
    agent: AgentHandle,
    mut state: PolicyDir,
    list: impl Fn(&Path) -> io::Result<Listing>,
) -> Result<(), AgentError> {
    let dir = state.dir().to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watching: Option<(Debouncer, Option<(u64, u64)>)> = None;
    let mut watch_error: Option<String> = None;
    loop {
        if watching.is_none() {
            let id = dir_id(&dir);
            match start_watch(&dir, tx.clone()) {
                Ok(w) => {
                    watching = Some((w, id));
                    if watch_error.take().is_some() {
                        info!(dir = %dir.display(), "watching the policy directory again");
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    if watch_error.as_ref() != Some(&e) {
                        warn!(dir = %dir.display(), "cannot watch the policy directory, retrying: {e}");
                    }
                    watch_error = Some(e);
                }
            }
        }

        state.sync(list(&dir), &agent).await?;
        // A directory that could not be read, or was replaced, gets a new watch: the old one
        // may be on a directory that is gone.
        if let Some((_, id)) = &watching
            && (state.is_unreadable() || *id != dir_id(&dir))
        {
            debug!(dir = %dir.display(), "policy directory replaced or unreadable; watching anew");
            watching = None;
        }

        let retry = watching.is_none() || state.is_unreadable();
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Ok(events)) if events.iter().any(|e| is_change(&e.event.kind)) => break,
                    Some(Ok(_)) => {}
                    // Lost events (queue overflow) and the like: read everything again.
                    Some(Err(errors)) => {
                        for e in errors {
                            warn!(dir = %dir.display(), "policy directory watch: {e}");
                        }
                        break;
                    }
                    // `tx` is held here: cannot happen.
                    None => break,
                },
                _ = tokio::time::sleep(RETRY), if retry => break,
            }
        }
    }
}

#[cfg(test)]
#[path = "dir_tests.rs"]
mod tests;
