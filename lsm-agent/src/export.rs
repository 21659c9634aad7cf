//! JSON export of events to a file, as Tetragon's `--export-filename` does: one protojson line
//! per event (the encoding of `lsmctl getevents -o json`: snake_case proto names), size-based
//! rotation with lumberjack's backup names (`tetragon.log` → `tetragon-2006-01-02T15-04-05.000.log`,
//! optionally gzipped), allow/deny lists in Tetragon's filter syntax (matched by the same code as
//! `GetEvents`) and Tetragon's per-minute rate limit.
//!
//! The exporter is one more [`EventBus`] subscriber and never slows down the event pipeline: a
//! task converts what the bus delivers to Tetragon's wire format, filters and rate-limits it
//! and hands it to a dedicated writer thread through a bounded queue. Events it cannot keep up
//! with (lagging on the bus, or a full queue) are dropped, counted in [`ExportStats`] and
//! reported in the log every few seconds.

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, BufReader, BufWriter, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    events::bus::{EventBus, RecvError, Subscriber, TryRecvError},
    tetragon::{
        convert::{rate_limit_info, to_response},
        filter::EventFilter,
        json::event_to_json,
        proto::tetragon::{
            CapFilter, CapFilterSet, CapabilitiesType, EventType, Filter, GetEventsRequest,
            GetEventsResponse,
        },
    },
};

/// Tetragon's `--export-file-max-size-mb` default.
pub const DEFAULT_MAX_SIZE_MB: u64 = 10;
/// lumberjack's size when `MaxSize` is 0.
const LUMBERJACK_DEFAULT_MB: u64 = 100;
/// Tetragon's `--export-file-max-backups` default.
pub const DEFAULT_MAX_BACKUPS: usize = 5;
/// Tetragon's `--export-file-perm` default.
pub const DEFAULT_PERM: u32 = 0o600;
/// Events waiting for the writer thread before new ones are dropped.
pub const DEFAULT_QUEUE: usize = 8192;
/// How often drops are reported in the log.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The writer flushes at least after this many events, even when more are queued.
const WRITE_BATCH: usize = 1024;
/// lumberjack's backup time format `2006-01-02T15-04-05.000`, as its length.
const STAMP_LEN: usize = 23;
const COMPRESS_SUFFIX: &str = ".gz";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{flag}: filter {index}: {msg}")]
    FilterSyntax {
        flag: &'static str,
        index: usize,
        msg: String,
    },
    #[error("{flag}: {msg}")]
    Filter { flag: &'static str, msg: String },
    #[error("export file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("export file {} is a directory", .0.display())]
    IsDirectory(PathBuf),
    #[error("event of {len} bytes exceeds the export file maximum size of {max} bytes")]
    LineTooLong { len: u64, max: u64 },
    #[error("invalid export configuration: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Filters: Tetragon's `--export-allowlist` / `--export-denylist` syntax.

/// Parses a list of `Filter` objects written as Tetragon takes them: JSON objects one after the
/// other (usually one per line), decoded as protojson (proto names or lowerCamelCase JSON names,
/// enums by name or number, `BoolValue` as a plain bool, unknown fields rejected). Commas
/// between the objects and an enclosing JSON array are accepted too.
pub fn parse_filter_list(flag: &'static str, text: &str) -> Result<Vec<Filter>, ExportError> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return Ok(out);
        }
        let index = out.len() + 1;
        let syntax = |msg: String| ExportError::FilterSyntax { flag, index, msg };
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = match values.next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(syntax(format!("invalid JSON: {e}"))),
            None => return Ok(out),
        };
        rest = &rest[values.byte_offset()..];
        match value {
            Value::Array(items) => {
                for item in &items {
                    let index = out.len() + 1;
                    out.push(
                        filter_from_json(item).map_err(|msg| ExportError::FilterSyntax {
                            flag,
                            index,
                            msg,
                        })?,
                    );
                }
            }
            v => out.push(filter_from_json(&v).map_err(syntax)?),
        }
    }
}

/// protojson accepts a field by its proto name or its lowerCamelCase JSON name.
fn proto_name(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!("{key}: expected a list of strings"));
    };
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{key}: expected a string, got {i}"))
        })
        .collect()
}

fn uints(key: &str, v: &Value) -> Result<Vec<u32>, String> {
    let Value::Array(items) = v else {
        return Err(format!("{key}: expected a list of numbers"));
    };
    items
        .iter()
        .map(|i| {
            let n = match i {
                Value::Number(n) => n.as_u64(),
                // protojson also takes integers as strings.
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            n.and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{key}: expected a 32-bit unsigned integer, got {i}"))
        })
        .collect()
}

fn enums(key: &str, v: &Value, by_name: impl Fn(&str) -> Option<i32>) -> Result<Vec<i32>, String> {
    let Value::Array(items) = v else {
        return Err(format!("{key}: expected a list of names"));
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) => by_name(s).ok_or_else(|| format!("{key}: unknown value {s:?}")),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("{key}: invalid value {n}")),
            _ => Err(format!("{key}: expected a name, got {i}")),
        })
        .collect()
}

fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{key}: expected true or false, got {v}"))
}

fn event_type(s: &str) -> Option<i32> {
    EventType::from_str_name(s).map(|t| t as i32)
}

fn capability(s: &str) -> Option<i32> {
    CapabilitiesType::from_str_name(s).map(|c| c as i32)
}

fn object<'a>(key: &str, v: &'a Value) -> Result<&'a serde_json::Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{key}: expected an object, got {v}"))
}

fn cap_filter_set(key: &str, v: &Value) -> Result<CapFilterSet, String> {
    let mut set = CapFilterSet::default();
    for (k, v) in object(key, v)? {
        if v.is_null() {
            continue;
        }
        let field = match proto_name(k).as_str() {
            "any" => &mut set.any,
            "all" => &mut set.all,
            "exactly" => &mut set.exactly,
            "none" => &mut set.none,
            _ => return Err(format!("{key}: unknown field {k:?}")),
        };
        *field = enums(k, v, capability)?;
    }
    Ok(set)
}

fn cap_filter(key: &str, v: &Value) -> Result<CapFilter, String> {
    let mut caps = CapFilter::default();
    for (k, v) in object(key, v)? {
        if v.is_null() {
            continue;
        }
        let field = match proto_name(k).as_str() {
            "permitted" => &mut caps.permitted,
            "effective" => &mut caps.effective,
            "inheritable" => &mut caps.inheritable,
            _ => return Err(format!("{key}: unknown field {k:?}")),
        };
        *field = Some(cap_filter_set(k, v)?);
    }
    Ok(caps)
}

/// One `tetragon.Filter` from its protojson form.
pub fn filter_from_json(v: &Value) -> Result<Filter, String> {
    let mut f = Filter::default();
    for (k, v) in object("filter", v)? {
        // protojson: null leaves a field unset.
        if v.is_null() {
            continue;
        }
        let list = match proto_name(k).as_str() {
            "binary_regex" => &mut f.binary_regex,
            "namespace" => &mut f.namespace,
            "pod_regex" => &mut f.pod_regex,
            "arguments_regex" => &mut f.arguments_regex,
            "labels" => &mut f.labels,
            "policy_names" => &mut f.policy_names,
            "parent_binary_regex" => &mut f.parent_binary_regex,
            "cel_expression" => &mut f.cel_expression,
            "parent_arguments_regex" => &mut f.parent_arguments_regex,
            "container_id" => &mut f.container_id,
            "ancestor_binary_regex" => &mut f.ancestor_binary_regex,
            "container_name_regex" => &mut f.container_name_regex,
            "namespace_regex" => &mut f.namespace_regex,
            "health_check" => {
                f.health_check = Some(boolean(k, v)?);
                continue;
            }
            "in_init_tree" => {
                f.in_init_tree = Some(boolean(k, v)?);
                continue;
            }
            "pid" => {
                f.pid = uints(k, v)?;
                continue;
            }
            "pid_set" => {
                f.pid_set = uints(k, v)?;
                continue;
            }
            "event_set" => {
                f.event_set = enums(k, v, event_type)?;
                continue;
            }
            "capabilities" => {
                f.capabilities = Some(cap_filter(k, v)?);
                continue;
            }
            _ => return Err(format!("unknown field {k:?}")),
        };
        *list = strings(k, v)?;
    }
    Ok(f)
}

/// The allow and deny lists compiled with the `GetEvents` matching code.
pub fn compile_filters(allow: &[Filter], deny: &[Filter]) -> Result<EventFilter, ExportError> {
    EventFilter::new(&GetEventsRequest {
        allow_list: allow.to_vec(),
        deny_list: deny.to_vec(),
        ..Default::default()
    })
    .map_err(|s| ExportError::Filter {
        flag: "--export-allowlist/--export-denylist",
        msg: s.message().to_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// Rate limit: Tetragon's `--export-rate-limit`.

use std::num::NonZeroU32;

use governor::{
    Quota,
    clock::{Clock, MonotonicClock},
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
};

/// Tetragon's limiter (`rate.NewLimiter(rate.Every(1m/N), N)`: up to `N` events at once,
/// refilled at `N` per minute) is a token bucket; governor's GCRA with the same quota decides
/// the same. `N = 0` lets nothing through, which a quota cannot express.
pub struct RateLimiter<C: Clock = MonotonicClock>(
    Option<governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
);

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self::with_clock(per_minute, MonotonicClock)
    }
}

impl<C: Clock> RateLimiter<C> {
    pub fn with_clock(per_minute: u32, clock: C) -> Self {
        Self(
            NonZeroU32::new(per_minute)
                .map(|n| governor::RateLimiter::direct_with_clock(Quota::per_minute(n), clock)),
        )
    }

    pub fn allow(&self) -> bool {
        self.0.as_ref().is_some_and(|l| l.check().is_ok())
    }
}

// ---------------------------------------------------------------------------------------------
// Rotation: lumberjack's behaviour, as Tetragon uses it.

/// How the export file is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes; a write that would take the file past this rotates it first.
    pub max_size: u64,
    /// Rotated files kept, newest first; 0 keeps all of them.
    pub max_backups: usize,
    /// gzip the rotated files (`.gz` appended to the backup name).
    pub compress: bool,
    /// Permission bits of the file (and so of its backups).
    pub perm: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE_MB * 1024 * 1024,
            max_backups: DEFAULT_MAX_BACKUPS,
            compress: false,
            perm: DEFAULT_PERM,
        }
    }
}

/// A buffered append-only file that is renamed aside once it reaches [`Rotation::max_size`].
/// Backups are named like lumberjack's: `<name>-<UTC time>.<ext>`, time formatted as
/// `2006-01-02T15-04-05.000`, so that they sort by name in the order they were made.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    out: Option<BufWriter<File>>,
    size: u64,
    /// The last backup time used, so two rotations within a millisecond still get distinct,
    /// ordered names.
    last_stamp_ms: i64,
}

fn open_file(path: &Path, perm: u32, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    let f = o.create(true).mode(perm).open(path)?;
    // Exactly these bits, whatever the umask or an older file had.
    f.set_permissions(Permissions::from_mode(perm))?;
    Ok(f)
}

/// Go's `filepath.Ext`: from the last dot of the file name, dot included.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    }
}

/// lumberjack's backup time format, `2006-01-02T15-04-05.000`, in UTC.
pub fn backup_stamp(ms_since_epoch: i64) -> String {
    use time::{OffsetDateTime, PrimitiveDateTime};
    // Beyond the years 0000 to 9999 (no real clock), the nearest representable time.
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms_since_epoch) * 1_000_000)
        .unwrap_or_else(|_| {
            if ms_since_epoch < 0 {
                PrimitiveDateTime::MIN
            } else {
                PrimitiveDateTime::MAX
            }
            .assume_utc()
        });
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == STAMP_LEN
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// gzip `src` into `src.gz` (written as `src.gz.tmp`, then renamed) and remove `src`.
fn compress_file(src: &Path) -> io::Result<()> {
    let dst = with_suffix(src, COMPRESS_SUFFIX);
    let tmp = with_suffix(&dst, ".tmp");
    let result = (|| {
        let mode = fs::metadata(src)?.permissions().mode() & 0o7777;
        let input = File::open(src)?;
        let out = open_file(&tmp, mode, true)?;
        let mut gz =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::default());
        io::copy(&mut BufReader::new(input), &mut gz)?;
        let out = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        fs::rename(&tmp, &dst)?;
        fs::remove_file(src)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl RotatingFile {
    /// Opens (creating it and its directory if needed) `path` for appending.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> Result<Self, ExportError> {
        let path = path.into();
        if rotation.max_size == 0 {
            return Err(ExportError::Config("maximum file size is 0".into()));
        }
        if rotation.perm > 0o7777 {
            return Err(ExportError::Config(format!(
                "file permission {:o} is not a mode",
                rotation.perm
            )));
        }
        if path.file_name().is_none() {
            return Err(ExportError::Config(format!(
                "{} has no file name",
                path.display()
            )));
        }
        if path.is_dir() {
            return Err(ExportError::IsDirectory(path));
        }
        let mut f = Self {
            path,
            rotation,
            out: None,
            size: 0,
            last_stamp_ms: 0,
        };
        f.open_current()?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the current file, buffered ones included.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn open_current(&mut self) -> Result<(), ExportError> {
        let dir = self.dir().to_owned();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let f = open_file(&self.path, self.rotation.perm, false).map_err(io_err(&self.path))?;
        self.size = f.metadata().map_err(io_err(&self.path))?.len();
        self.out = Some(BufWriter::with_capacity(64 * 1024, f));
        Ok(())
    }

    /// Appends one line (newline included). A line that would take the file past the maximum
    /// size goes to a new file; a line longer than the maximum is refused, as lumberjack does.
    pub fn write_line(&mut self, line: &[u8]) -> Result<(), ExportError> {
        let len = line.len() as u64;
        if len > self.rotation.max_size {
            return Err(ExportError::LineTooLong {
                len,
                max: self.rotation.max_size,
            });
        }
        if self.out.is_none() {
            self.open_current()?;
        }
        if self.size + len > self.rotation.max_size {
            self.rotate()?;
        }
        let Some(out) = self.out.as_mut() else {
            return Err(ExportError::Config("export file not open".into()));
        };
        if let Err(e) = out.write_all(line) {
            // Start again from a fresh handle next time.
            self.out = None;
            return Err(io_err(&self.path)(e));
        }
        self.size += len;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), ExportError> {
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.flush()
        {
            self.out = None;
            return Err(io_err(&self.path)(e));
        }
        Ok(())
    }

    /// Moves the current file aside under a backup name, starts an empty one, then removes the
    /// backups beyond [`Rotation::max_backups`] (oldest first) and compresses the others.
    pub fn rotate(&mut self) -> Result<(), ExportError> {
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(io_err(&self.path))?;
        }
        if self.path.exists() {
            let backup = self.next_backup_path();
            fs::rename(&self.path, &backup).map_err(io_err(&self.path))?;
            debug!(backup = %backup.display(), "export file rotated");
        }
        let f = open_file(&self.path, self.rotation.perm, true).map_err(io_err(&self.path))?;
        self.out = Some(BufWriter::with_capacity(64 * 1024, f));
        self.size = 0;
        if let Err(e) = self.clean_backups() {
            warn!(file = %self.path.display(), error = %e, "cleaning up rotated export files");
        }
        Ok(())
    }

    fn backup_path(&self, ms: i64) -> PathBuf {
        let name = self.file_name();
        let (stem, ext) = split_ext(&name);
        self.dir().join(format!("{stem}-{}{ext}", backup_stamp(ms)))
    }

    fn next_backup_path(&mut self) -> PathBuf {
        let mut ms = now_ms().max(self.last_stamp_ms + 1);
        loop {
            let p = self.backup_path(ms);
            if !p.exists() && !with_suffix(&p, COMPRESS_SUFFIX).exists() {
                self.last_stamp_ms = ms;
                return p;
            }
            ms += 1;
        }
    }

    /// The backups of this file, newest first (both plain and compressed ones).
    pub fn backups(&self) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .list_backups()?
            .into_iter()
            .map(|(_, p, _)| p)
            .collect())
    }

    /// (stamp, path, compressed), newest first.
    fn list_backups(&self) -> io::Result<Vec<(String, PathBuf, bool)>> {
        let name = self.file_name();
        let (stem, ext) = split_ext(&name);
        let prefix = format!("{stem}-");
        let gz_ext = format!("{ext}{COMPRESS_SUFFIX}");
        let mut found = Vec::new();
        for entry in fs::read_dir(self.dir())? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some(tail) = file.strip_prefix(&prefix) else {
                continue;
            };
            let (stamp, gz) = match tail.strip_suffix(&gz_ext) {
                Some(s) if is_stamp(s) => (s, true),
                _ => match tail.strip_suffix(ext) {
                    Some(s) if is_stamp(s) => (s, false),
                    _ => continue,
                },
            };
            found.push((stamp.to_owned(), entry.path(), gz));
        }
        // The stamp sorts chronologically; a plain file before its compressed twin.
        found.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        Ok(found)
    }

    fn clean_backups(&self) -> io::Result<()> {
        let max = self.rotation.max_backups;
        if max == 0 && !self.rotation.compress {
            return Ok(());
        }
        let mut kept_stamps = 0;
        let mut last_stamp: Option<String> = None;
        let mut to_compress = Vec::new();
        let mut first_err = None;
        for (stamp, path, gz) in self.list_backups()? {
            // A plain file and its compressed twin count once.
            if last_stamp.as_deref() != Some(stamp.as_str()) {
                kept_stamps += 1;
                last_stamp = Some(stamp);
            }
            if max > 0 && kept_stamps > max {
                if let Err(e) = fs::remove_file(&path) {
                    first_err.get_or_insert(e);
                }
            } else if self.rotation.compress && !gz {
                to_compress.push(path);
            }
        }
        for p in to_compress {
            if let Err(e) = compress_file(&p) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

// ---------------------------------------------------------------------------------------------
// The exporter.

/// Everything the exporter needs; [`ExportArgs::config`] builds it from the flags.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub path: PathBuf,
    pub rotation: Rotation,
    pub allow: Vec<Filter>,
    pub deny: Vec<Filter>,
    /// Events per minute; `None` exports everything.
    pub rate_limit: Option<u32>,
    /// How often events dropped by the rate limit are reported in the file (a `rate_limit_info`
    /// event), as Tetragon does every minute.
    pub rate_limit_report: Duration,
    /// Events waiting for the writer thread before new ones are dropped.
    pub queue: usize,
    /// `node_name` of the `rate_limit_info` events.
    pub node_name: String,
}

impl ExportConfig {
    /// Tetragon's defaults for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            rotation: Rotation::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            rate_limit: None,
            rate_limit_report: Duration::from_secs(60),
            queue: DEFAULT_QUEUE,
            node_name: crate::events::enrich::node_name(),
        }
    }
}

/// Counters of the exporter, cumulative since it started.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Lines written (events and `rate_limit_info` reports).
    pub exported: AtomicU64,
    pub exported_bytes: AtomicU64,
    /// Events left out by `--export-rate-limit`.
    pub rate_limited: AtomicU64,
    /// Events missed because the exporter lagged behind on the event bus.
    pub lagged: AtomicU64,
    /// Events dropped because the writer queue was full.
    pub queue_full: AtomicU64,
    /// Events lost to write errors (or longer than the maximum file size).
    pub write_errors: AtomicU64,
    pub rotations: AtomicU64,
}

impl ExportStats {
    /// Events that matched the filters but are not in the file, rate limit aside.
    pub fn lost(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
            + self.queue_full.load(Ordering::Relaxed)
            + self.write_errors.load(Ordering::Relaxed)
    }
}

/// A running exporter: a bus subscriber task and a writer thread.
#[derive(Debug)]
pub struct Exporter {
    stats: Arc<ExportStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
}

impl Exporter {
    /// Opens the file (so that a bad path fails now), subscribes to `bus` (everything published
    /// after this call is seen) and starts exporting. Must be called inside a tokio runtime.
    pub fn start(cfg: ExportConfig, bus: &EventBus) -> Result<Self, ExportError> {
        let filter = compile_filters(&cfg.allow, &cfg.deny)?;
        let file = RotatingFile::open(&cfg.path, cfg.rotation.clone())?;
        let stats = Arc::new(ExportStats::default());
        let pending_rate_limited = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std_mpsc::sync_channel(cfg.queue.max(1));
        let writer = {
            let stats = stats.clone();
            let pending = cfg.rate_limit.map(|_| pending_rate_limited.clone());
            let report = cfg.rate_limit_report;
            let node_name = cfg.node_name.clone();
            std::thread::Builder::new()
                .name("lsm-export".into())
                .spawn(move || writer_loop(rx, file, stats, pending, report, node_name))
                .map_err(io_err(&cfg.path))?
        };
        let (stop, stop_rx) = watch::channel(false);
        let limiter = cfg.rate_limit.map(RateLimiter::new);
        let task = tokio::spawn(subscriber_loop(
            bus.subscribe(),
            tx,
            filter,
            limiter,
            pending_rate_limited,
            stats.clone(),
            stop_rx,
        ));
        info!(
            file = %cfg.path.display(),
            max_size = cfg.rotation.max_size,
            max_backups = cfg.rotation.max_backups,
            compress = cfg.rotation.compress,
            rate_limit = ?cfg.rate_limit,
            allow = cfg.allow.len(),
            deny = cfg.deny.len(),
            "exporting events as JSON"
        );
        Ok(Self {
            stats,
            stop,
            task,
            writer,
        })
    }

    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// Exports what the bus already delivered, flushes the file and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
}

fn log_drops(stats: &ExportStats, last: &mut [u64; 3]) {
    let now = [
        stats.lagged.load(Ordering::Relaxed),
        stats.queue_full.load(Ordering::Relaxed),
        stats.write_errors.load(Ordering::Relaxed),
    ];
    if now != *last {
        warn!(
            lagged = now[0] - last[0],
            queue_full = now[1] - last[1],
            write_errors = now[2] - last[2],
            total_lost = now.iter().sum::<u64>(),
            "export: events dropped"
        );
        *last = now;
    }
}

/// What the bus delivers → wire event → filters → rate limit → bounded queue to the writer. Never waits on
/// the writer: a full queue drops the event.
async fn subscriber_loop(
    mut rx: Subscriber,
    tx: std_mpsc::SyncSender<GetEventsResponse>,
    filter: EventFilter,
    limiter: Option<RateLimiter>,
    pending_rate_limited: Arc<AtomicU64>,
    stats: Arc<ExportStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = [0u64; 3];
    let mut tick = tokio::time::interval(DROP_LOG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let offer = |ev: &crate::events::model::Event| -> bool {
        let ev = to_response(ev);
        if !filter.matches(&ev) {
            return true;
        }
        if let Some(l) = &limiter
            && !l.allow()
        {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            pending_rate_limited.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        match tx.try_send(ev) {
            Ok(()) => true,
            Err(std_mpsc::TrySendError::Full(_)) => {
                stats.queue_full.fetch_add(1, Ordering::Relaxed);
                true
            }
            // The writer thread is gone (it only ends when we do, or if it panicked).
            Err(std_mpsc::TrySendError::Disconnected(_)) => false,
        }
    };
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if !offer(&ev) {
                        warn!("export writer stopped; no more events are exported");
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    stats.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => log_drops(&stats, &mut last),
            _ = stop.wait_for(|s| *s) => {
                // What was published before the stop still goes to the file.
                loop {
                    match rx.try_recv() {
                        Ok(ev) => {
                            if !offer(&ev) {
                                break;
                            }
                        }
                        Err(TryRecvError::Lagged(n)) => {
                            stats.lagged.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    log_drops(&stats, &mut last);
    // Dropping `tx` lets the writer drain the queue and finish.
}

struct Writer {
    file: RotatingFile,
    stats: Arc<ExportStats>,
    last_error_log: Option<Instant>,
}

impl Writer {
    fn write(&mut self, ev: &GetEventsResponse) {
        let mut line = event_to_json(ev);
        line.push('\n');
        let before = self.file.size();
        match self.file.write_line(line.as_bytes()) {
            Ok(()) => {
                if self.file.size() < before + line.len() as u64 {
                    self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.exported.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .exported_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                self.error(&e);
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            self.error(&e);
        }
    }

    /// At most one log line per interval; the counters have the rest.
    fn error(&mut self, e: &ExportError) {
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= DROP_LOG_INTERVAL)
        {
            warn!(error = %e, "export: writing the JSON export file failed");
            self.last_error_log = Some(Instant::now());
        }
    }

    fn report_rate_limited(&mut self, pending: &AtomicU64, node_name: &str) {
        let dropped = pending.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        self.write(&rate_limit_info(dropped, node_name, now_ms()));
        self.flush();
    }
}

fn writer_loop(
    rx: std_mpsc::Receiver<GetEventsResponse>,
    file: RotatingFile,
    stats: Arc<ExportStats>,
    pending_rate_limited: Option<Arc<AtomicU64>>,
    report_every: Duration,
    node_name: String,
) {
    let mut w = Writer {
        file,
        stats,
        last_error_log: None,
    };
    let mut next_report = Instant::now() + report_every;
    loop {
        let timeout = match pending_rate_limited {
            Some(_) => next_report.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(timeout) {
            Ok(ev) => {
                w.write(&ev);
                // Whatever is already queued goes out in the same flush.
                for _ in 1..WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(ev) => w.write(&ev),
                        Err(_) => break,
                    }
                }
                w.flush();
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if let Some(pending) = &pending_rate_limited
            && Instant::now() >= next_report
        {
            w.report_rate_limited(pending, &node_name);
            next_report = Instant::now() + report_every;
        }
    }
    if let Some(pending) = &pending_rate_limited {
        w.report_rate_limited(pending, &node_name);
    }
    w.flush();
    debug!("export writer finished");
}

// ---------------------------------------------------------------------------------------------
// Flags.

fn parse_perm(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|p| *p <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 600 or 640"))
}

/// Tetragon's export flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Write every event as one JSON line (as `lsmctl getevents -o json` prints it) to FILE.
    #[arg(long, value_name = "FILE")]
    pub export_filename: Option<PathBuf>,
    /// Rotate the export file before it grows past this size (0 means 100, as in Tetragon).
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_MAX_SIZE_MB)]
    pub export_file_max_size_mb: u64,
    /// Rotated export files to keep, named like `tetragon-2006-01-02T15-04-05.000.log`
    /// (0 keeps all).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BACKUPS)]
    pub export_file_max_backups: usize,
    /// gzip rotated export files.
    #[arg(long)]
    pub export_file_compress: bool,
    /// Permission bits of the export files, octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_perm)]
    pub export_file_perm: u32,
    /// Export at most N events per minute (-1: no limit, 0: none); the number left out is
    /// written to the file every minute as a `rate_limit_info` event.
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub export_rate_limit: i64,
    /// Only export events matching one of these filters: JSON `Filter` objects, one per line,
    /// e.g. '{"event_set":["PROCESS_EXEC","PROCESS_EXIT"]}'.
    #[arg(long, value_name = "FILTERS", default_value = "")]
    pub export_allowlist: String,
    /// Do not export events matching any of these filters (same syntax as --export-allowlist),
    /// e.g. '{"health_check":true}'.
    #[arg(long, value_name = "FILTERS", default_value = "")]
    pub export_denylist: String,
}

impl ExportArgs {
    /// `None` when no export file is asked for. Filters are checked here, so that a bad one
    /// stops the agent before it touches the kernel.
    pub fn config(&self) -> Result<Option<ExportConfig>, ExportError> {
        let Some(path) = self
            .export_filename
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Ok(None);
        };
        let allow = parse_filter_list("--export-allowlist", &self.export_allowlist)?;
        let deny = parse_filter_list("--export-denylist", &self.export_denylist)?;
        compile_filters(&allow, &deny)?;
        let mb = match self.export_file_max_size_mb {
            0 => LUMBERJACK_DEFAULT_MB,
            n => n,
        };
        let mut cfg = ExportConfig::new(path);
        cfg.rotation = Rotation {
            max_size: mb.saturating_mul(1024 * 1024),
            max_backups: self.export_file_max_backups,
            compress: self.export_file_compress,
            perm: self.export_file_perm,
        };
        cfg.allow = allow;
        cfg.deny = deny;
        cfg.rate_limit = u32::try_from(self.export_rate_limit).ok();
        if self.export_rate_limit > i64::from(u32::MAX) {
            cfg.rate_limit = Some(u32::MAX);
        }
        Ok(Some(cfg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tetragon::proto::tetragon::{
        Container, Pod, Process, ProcessExec, ProcessExit, get_events_response::Event,
    };

    fn rot(max_size: u64, max_backups: usize) -> Rotation {
        Rotation {
            max_size,
            max_backups,
            compress: false,
            perm: 0o640,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn backup_stamps_are_lumberjacks_format() {
        assert_eq!(backup_stamp(0), "1970-01-01T00-00-00.000");
        assert_eq!(backup_stamp(1_700_000_000_500), "2023-11-14T22-13-20.500");
        assert_eq!(backup_stamp(951_782_400_007), "2000-02-29T00-00-00.007");
        assert_eq!(backup_stamp(4_102_444_799_999), "2099-12-31T23-59-59.999");
        assert!(is_stamp(&backup_stamp(now_ms())));
        assert!(!is_stamp("2023-11-14T22-13-20"));
        assert!(!is_stamp("2023-11-14 22-13-20.500"));
        assert_eq!(split_ext("tetragon.log"), ("tetragon", ".log"));
        assert_eq!(split_ext("a.b.json"), ("a.b", ".json"));
        assert_eq!(split_ext("events"), ("events", ""));
    }

    #[test]
    fn rotates_at_the_size_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tetragon.log");
        let mut f = RotatingFile::open(&path, rot(100, 5)).unwrap();
        let line = [b'x'; 49];
        let line = [&line[..], b"\n"].concat(); // 50 bytes
        f.write_line(&line).unwrap();
        f.write_line(&line).unwrap(); // exactly 100: still one file
        f.flush().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 100);
        assert!(f.backups().unwrap().is_empty());
        f.write_line(&line).unwrap(); // would be 150: rotates first
        f.flush().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 50);
        let backups = f.backups().unwrap();
        assert_eq!(backups.len(), 1);
        assert_eq!(fs::metadata(&backups[0]).unwrap().len(), 100);
        let name = backups[0].file_name().unwrap().to_str().unwrap().to_owned();
        let stamp = name
            .strip_prefix("tetragon-")
            .and_then(|s| s.strip_suffix(".log"))
            .unwrap();
        assert!(is_stamp(stamp), "{name}");
        // Longer than the whole file: refused, nothing written.
        assert!(matches!(
            f.write_line(&[b'y'; 101]),
            Err(ExportError::LineTooLong { len: 101, max: 100 })
        ));
        assert_eq!(f.size(), 50);
    }

    #[test]
    fn keeps_the_newest_backups_and_removes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        // Someone else's files in the same directory stay.
        fs::write(dir.path().join("events-notastamp.json"), "x").unwrap();
        fs::write(dir.path().join("other.json"), "x").unwrap();
        let mut f = RotatingFile::open(&path, rot(10, 3)).unwrap();
        // One 10-byte line per file: line i rotates line i-1 out.
        for i in 0..8 {
            f.write_line(format!("line {i:03}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let backups = f.backups().unwrap();
        assert_eq!(backups.len(), 3);
        let contents: Vec<String> = backups
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        // Newest first: lines 6, 5, 4; 0-3 are gone.
        assert_eq!(contents, ["line 006\n", "line 005\n", "line 004\n"]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "line 007\n");
        let all = names(dir.path());
        assert_eq!(all.len(), 6, "{all:?}");
        assert!(all.contains(&"events-notastamp.json".to_owned()));
        assert!(all.contains(&"other.json".to_owned()));
        // Names sort in the order the backups were made.
        let mut sorted = backups.clone();
        sorted.sort();
        sorted.reverse();
        assert_eq!(sorted, backups);
    }

    #[test]
    fn zero_backups_keeps_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut f = RotatingFile::open(&path, rot(10, 0)).unwrap();
        for i in 0..6 {
            f.write_line(format!("line {i:03}\n").as_bytes()).unwrap();
        }
        assert_eq!(f.backups().unwrap().len(), 5);
    }

    #[test]
    fn file_and_backups_get_the_permission() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/t.log");
        // An existing file with other bits is brought to the configured mode.
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "old line\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let mut f = RotatingFile::open(&path, rot(20, 2)).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(f.size(), 9); // appends to what was there
        f.write_line(b"0123456789abcdef\n").unwrap();
        f.flush().unwrap();
        assert_eq!(mode(&path), 0o640);
        let backups = f.backups().unwrap();
        assert_eq!(backups.len(), 1);
        assert_eq!(fs::read_to_string(&backups[0]).unwrap(), "old line\n");
        assert_eq!(mode(&backups[0]), 0o640);
        let f = RotatingFile::open(
            dir.path().join("p.log"),
            Rotation {
                perm: 0o600,
                ..rot(20, 2)
            },
        );
        drop(f);
        assert_eq!(mode(&dir.path().join("p.log")), 0o600);
    }

    #[test]
    fn compressed_backups() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tetragon.log");
        let mut f = RotatingFile::open(
            &path,
            Rotation {
                compress: true,
                ..rot(10, 2)
            },
        )
        .unwrap();
        for i in 0..5 {
            f.write_line(format!("line {i:03}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let backups = f.backups().unwrap();
        assert_eq!(backups.len(), 2);
        let mut text = Vec::new();
        for b in &backups {
            let name = b.file_name().unwrap().to_str().unwrap();
            assert!(name.ends_with(".log.gz"), "{name}");
            assert_eq!(fs::metadata(b).unwrap().permissions().mode() & 0o777, 0o640);
            let mut s = String::new();
            flate2::read::GzDecoder::new(File::open(b).unwrap())
                .read_to_string(&mut s)
                .unwrap();
            text.push(s);
        }
        assert_eq!(text, ["line 003\n", "line 002\n"]);
        // No plain backup or temporary file left behind.
        assert_eq!(names(dir.path()).len(), 3, "{:?}", names(dir.path()));
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            RotatingFile::open(dir.path(), rot(10, 1)),
            Err(ExportError::IsDirectory(_))
        ));
    }

    #[test]
    fn filter_lists_in_tetragons_syntax() {
        let list = parse_filter_list(
            "--export-allowlist",
            r#"{"event_set":["PROCESS_EXEC","PROCESS_EXIT"]}
               {"health_check":true}
               {"namespace":["","kube-system"], "binaryRegex": ["^/usr/bin/"], "pid": [1, "2"]}"#,
        )
        .unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[0].event_set,
            [EventType::ProcessExec as i32, EventType::ProcessExit as i32]
        );
        assert_eq!(list[1].health_check, Some(true));
        assert_eq!(list[2].namespace, ["", "kube-system"]);
        assert_eq!(list[2].binary_regex, ["^/usr/bin/"]);
        assert_eq!(list[2].pid, [1, 2]);
        // Comma-separated, or a JSON array, work as well.
        let a = parse_filter_list("f", r#"{"pid":[1]},{"event_set":[5]}"#).unwrap();
        let b = parse_filter_list("f", r#"[{"pid":[1]},{"event_set":["PROCESS_EXIT"]}]"#).unwrap();
        assert_eq!(a, b);
        assert!(parse_filter_list("f", "  \n").unwrap().is_empty());
        let caps = parse_filter_list(
            "f",
            r#"{"capabilities":{"effective":{"any":["CAP_SYS_ADMIN"]}}}"#,
        )
        .unwrap();
        assert_eq!(
            caps[0]
                .capabilities
                .as_ref()
                .unwrap()
                .effective
                .as_ref()
                .unwrap()
                .any,
            [CapabilitiesType::CapSysAdmin as i32]
        );
    }

    #[test]
    fn bad_filters_say_which_and_why() {
        let err = |s: &str| {
            parse_filter_list("--export-denylist", s)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(r#"{"event_set":["PROCESS_EXEC"]} {"binary":["x"]}"#),
            r#"--export-denylist: filter 2: unknown field "binary""#
        );
        assert!(err(r#"{"event_set":["EXEC"]}"#).contains(r#"unknown value "EXEC""#));
        assert!(err(r#"{"pid":[-1]}"#).contains("32-bit unsigned"));
        assert!(err(r#"{"health_check":"yes"}"#).contains("true or false"));
        assert!(err(r#"{"namespace":"default"}"#).contains("list of strings"));
        assert!(err(r#"{"pid":[1]"#).contains("invalid JSON"));
        assert!(err("42").contains("expected an object"));
        // Parsed, but refused by the matcher like GetEvents refuses it.
        let bad_regex = parse_filter_list("f", r#"{"binary_regex":["("]}"#).unwrap();
        assert!(compile_filters(&bad_regex, &[]).is_err());
        let pid_set = parse_filter_list("f", r#"{"pid_set":[1]}"#).unwrap();
        let e = compile_filters(&[], &pid_set).unwrap_err().to_string();
        assert!(e.contains("pid_set is not supported"), "{e}");
        let labels = parse_filter_list("f", r#"{"labels":["app in x"]}"#).unwrap();
        let e = compile_filters(&[], &labels).unwrap_err().to_string();
        assert!(e.contains("invalid labels selector"), "{e}");
    }

    #[test]
    fn a_label_selector_list_keeps_only_the_selected_pods_events() {
        let in_pod = |labels: &[(&str, &str)]| {
            let mut ev = exec("/usr/bin/curl", true);
            let Some(Event::ProcessExec(e)) = &mut ev.event else {
                unreachable!()
            };
            let pod = e.process.as_mut().unwrap().pod.as_mut().unwrap();
            pod.namespace = "default".into();
            pod.pod_labels = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ev
        };
        let allow =
            parse_filter_list("a", r#"{"labels":["org=alliance,class in (xwing)"]}"#).unwrap();
        let f = compile_filters(&allow, &[]).unwrap();
        assert!(f.matches(&in_pod(&[("org", "alliance"), ("class", "xwing")])));
        assert!(!f.matches(&in_pod(&[("org", "empire"), ("class", "tiefighter")])));
        assert!(!f.matches(&exec("/usr/bin/curl", false)), "host process");
    }

    fn exec(binary: &str, probe: bool) -> GetEventsResponse {
        GetEventsResponse {
            event: Some(Event::ProcessExec(ProcessExec {
                process: Some(Process {
                    binary: binary.into(),
                    pod: probe.then(|| Pod {
                        container: Some(Container {
                            maybe_exec_probe: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn filters_match_like_get_events() {
        let allow = parse_filter_list("a", r#"{"event_set":["PROCESS_EXEC"]}"#).unwrap();
        let deny = parse_filter_list("d", r#"{"health_check":true}"#).unwrap();
        let f = compile_filters(&allow, &deny).unwrap();
        assert!(f.matches(&exec("/bin/ls", false)));
        assert!(!f.matches(&exec("/bin/ls", true)));
        let exit = GetEventsResponse {
            event: Some(Event::ProcessExit(ProcessExit::default())),
            ..Default::default()
        };
        assert!(!f.matches(&exit));
        let only_probes = compile_filters(
            &parse_filter_list("a", r#"{"health_check":true}"#).unwrap(),
            &[],
        )
        .unwrap();
        assert!(only_probes.matches(&exec("/bin/ls", true)));
        assert!(!only_probes.matches(&exec("/bin/ls", false)));
    }

    #[test]
    fn rate_limiter_is_a_token_bucket_per_minute() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let l = RateLimiter::with_clock(60, clock.clone());
        // The whole minute's budget at once, then one per second.
        assert_eq!((0..100).filter(|_| l.allow()).count(), 60);
        clock.advance(Duration::from_millis(500));
        assert!(!l.allow());
        clock.advance(Duration::from_millis(500));
        assert!(l.allow());
        clock.advance(Duration::from_millis(100));
        assert!(!l.allow());
        // Refills up to the burst, not beyond.
        clock.advance(Duration::from_secs(3600));
        assert_eq!((0..100).filter(|_| l.allow()).count(), 60);
        let none = RateLimiter::with_clock(0, clock.clone());
        clock.advance(Duration::from_secs(3600));
        assert!(!none.allow());
    }

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            export: ExportArgs,
        }
        let a = A::try_parse_from(["x"]).unwrap();
        assert!(a.export.config().unwrap().is_none());
        let a = A::try_parse_from(["x", "--export-filename", "/tmp/t.log"]).unwrap();
        let c = a.export.config().unwrap().unwrap();
        assert_eq!(c.rotation, Rotation::default());
        assert_eq!(c.rate_limit, None);
        let a = A::try_parse_from([
            "x",
            "--export-filename=/tmp/t.log",
            "--export-file-max-size-mb=0",
            "--export-file-max-backups=2",
            "--export-file-compress",
            "--export-file-perm=640",
            "--export-rate-limit=0",
            "--export-allowlist",
            r#"{"event_set":["PROCESS_LSM"]}"#,
        ])
        .unwrap();
        let c = a.export.config().unwrap().unwrap();
        assert_eq!(c.rotation.max_size, 100 * 1024 * 1024);
        assert_eq!(c.rotation.max_backups, 2);
        assert!(c.rotation.compress);
        assert_eq!(c.rotation.perm, 0o640);
        assert_eq!(c.rate_limit, Some(0));
        assert_eq!(c.allow.len(), 1);
        let a = A::try_parse_from(["x", "--export-rate-limit", "-1"]).unwrap();
        assert_eq!(a.export.export_rate_limit, -1);
        assert!(A::try_parse_from(["x", "--export-file-perm=999"]).is_err());
        let a = A::try_parse_from([
            "x",
            "--export-filename=/tmp/t.log",
            "--export-denylist={\"nope\":1}",
        ])
        .unwrap();
        assert!(a.export.config().is_err());
    }
}
