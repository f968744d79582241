//! The files backend's lease source: the budgets of one host's processes in one state file,
//! changed under an exclusive file lock, so `[backend.leases]` means the same thing with
//! `kind = "files"` (every process of the host shares the budget) as with `kind = "postgres"`
//! (every host of the fleet does). Same rules as the PostgreSQL source: what is handed out never
//! exceeds the window's limit, a lease not renewed within `lease_timeout` is reclaimed and its
//! units written off, unused units come back on release.
//!
//! The state is rewritten whole (temporary file, fsync, rename, directory fsync) on every lease,
//! release and heartbeat: leases are taken a chunk at a time, not per call, so the file is
//! touched a few times per chunk. A missing file after creation or a damaged one refuses every
//! lease (the check path denies), never "nothing handed out yet".

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BudgetSpec, Grant, LeaseError, LeaseSource};
use crate::clock::Clock;

const STATE: &str = "leases.json";
const LOCK: &str = "leases.lock";
const FORMAT: &str = "tollgate-leases/1";

/// One budget key's window, as the state file holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileBudgetRow {
    /// The window's limit.
    pub capacity: u64,
    /// Handed out in this window and not given back (never above `capacity`): always
    /// `written_off + spent +` the units held.
    pub allocated: u64,
    /// Units given back unused.
    pub returned: u64,
    /// Units of reclaimed leases (their host stopped renewing them).
    pub written_off: u64,
    /// Units released as spent.
    pub spent: u64,
    /// Leases in force: host -> (units, expiry in Unix milliseconds).
    pub grants: BTreeMap<String, FileGrant>,
}

/// One host's lease of a budget key's window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileGrant {
    /// Units held.
    pub units: u64,
    /// When the lease lapses unless renewed (Unix milliseconds).
    pub expires_unix_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: String,
    /// `budget/key/window_start` -> row (window_start in Unix milliseconds).
    rows: BTreeMap<String, FileBudgetRow>,
    /// Window length per budget name, to drop rows of ended windows.
    windows_ms: BTreeMap<String, u64>,
}

/// Leases of one host's processes in a state file (see the module docs).
#[derive(Debug, Clone)]
pub struct FileLeases {
    dir: PathBuf,
    host: String,
    lease_timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl FileLeases {
    /// Opens (creating when missing) the state in `dir` for the process named `host` (unique
    /// among the processes sharing the directory). Wall time comes from `clock`.
    pub fn open(
        dir: impl AsRef<Path>,
        host: &str,
        lease_timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, &e))?;
        let leases = FileLeases {
            dir,
            host: host.to_owned(),
            lease_timeout,
            clock,
        };
        let _lock = leases.lock()?;
        if !leases.state_path().exists() {
            leases.write(&OnDisk {
                format: FORMAT.to_owned(),
                ..OnDisk::default()
            })?;
        }
        Ok(leases)
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    /// The row of `budget`/`key` in the window starting at `window` (for reports and tests).
    pub fn row(&self, budget: &str, key: &str, window: i64) -> Result<FileBudgetRow, LeaseError> {
        let _lock = self.lock()?;
        let state = self.read()?;
        Ok(state
            .rows
            .get(&row_id(budget, key, window))
            .cloned()
            .unwrap_or_default())
    }

    fn now_ms(&self) -> u64 {
        crate::backend::kill::unix_ms(self.clock.wall())
    }

    fn lock(&self) -> Result<File, LeaseError> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        f.lock().map_err(|e| io_error(&path, &e))?;
        Ok(f)
    }

    fn read(&self) -> Result<OnDisk, LeaseError> {
        let path = self.state_path();
        let bytes = fs::read(&path).map_err(|e| io_error(&path, &e))?;
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, &e))?;
        if disk.format != FORMAT {
            return Err(corrupt(
                &path,
                &format!("format `{}`, expected `{FORMAT}`", disk.format),
            ));
        }
        for (id, row) in &disk.rows {
            let held: u64 = row.grants.values().map(|g| g.units).sum();
            // What is handed out is held, spent or written off; returned units left it.
            let accounted = row
                .written_off
                .checked_add(row.spent)
                .and_then(|n| n.checked_add(held));
            if row.allocated > row.capacity || accounted != Some(row.allocated) {
                return Err(corrupt(
                    &path,
                    &format!(
                        "row `{id}`: allocated {} of capacity {}, but written off + spent + \
                         held = {accounted:?}",
                        row.allocated, row.capacity
                    ),
                ));
            }
        }
        Ok(disk)
    }

    fn write(&self, state: &OnDisk) -> Result<(), LeaseError> {
        let path = self.state_path();
        let tmp = self.dir.join(format!("{STATE}.tmp-{}", std::process::id()));
        let mut text = serde_json::to_vec_pretty(state).map_err(|e| corrupt(&path, &e))?;
        text.push(b'\n');
        let mut f = File::create(&tmp).map_err(|e| io_error(&tmp, &e))?;
        f.write_all(&text).map_err(|e| io_error(&tmp, &e))?;
        f.sync_all().map_err(|e| io_error(&tmp, &e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io_error(&path, &e))?;
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads, changes and writes the state under the lock.
    fn change<T>(&self, f: impl FnOnce(&mut OnDisk, u64) -> T) -> Result<T, LeaseError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let now = self.now_ms();
        let out = f(&mut state, now);
        self.write(&state)?;
        Ok(out)
    }
}

fn row_id(budget: &str, key: &str, window: i64) -> String {
    // Budget names are identifiers and windows numbers, so `/` cannot be forged by either; a key
    // (an agent name, a tenant) may hold `/`, which is why it is in the middle, between two
    // fields that cannot.
    format!("{budget}/{key}/{window}")
}

fn io_error(path: &Path, e: &dyn std::fmt::Display) -> LeaseError {
    LeaseError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn corrupt(path: &Path, e: &dyn std::fmt::Display) -> LeaseError {
    LeaseError::File {
        path: path.to_path_buf(),
        reason: format!("damaged ({e}): no lease is taken from it"),
    }
}

/// Whether the window of row `id` (`budget/key/start`) is over.
fn window_ended(id: &str, windows: &BTreeMap<String, u64>, now: u64) -> bool {
    let mut parts = id.rsplitn(2, '/');
    let (Some(start), Some(rest)) = (parts.next(), parts.next()) else {
        return false;
    };
    let name = rest.split('/').next().unwrap_or_default();
    match (start.parse::<u64>(), windows.get(name)) {
        (Ok(start), Some(len)) => start.saturating_add(*len) <= now,
        _ => false,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl LeaseSource for FileLeases {
    fn lease(&self, budget: &BudgetSpec, key: &str, want: u64) -> Result<Grant, LeaseError> {
        let window_ms = ms(budget.window).max(1);
        let timeout = ms(self.lease_timeout);
        self.change(|state, now| {
            let start = now - now % window_ms;
            let left = Duration::from_millis(start + window_ms - now);
            // Rows of ended windows are dropped once no live lease is left in them (what a
            // window handed out no longer matters once it is over), so the file stays small.
            state.windows_ms.insert(budget.name.clone(), window_ms);
            let windows = state.windows_ms.clone();
            state.rows.retain(|id, row| {
                !window_ended(id, &windows, now)
                    || row.grants.values().any(|g| g.expires_unix_ms >= now)
            });
            let window = i64::try_from(start).unwrap_or(i64::MAX);
            let row = state
                .rows
                .entry(row_id(&budget.name, key, window))
                .or_insert_with(|| FileBudgetRow {
                    capacity: budget.limit,
                    ..FileBudgetRow::default()
                });
            // Reclaim the leases of processes that stopped renewing: written off, never handed
            // out again.
            let dead: Vec<String> = row
                .grants
                .iter()
                .filter(|(_, g)| g.expires_unix_ms < now)
                .map(|(h, _)| h.clone())
                .collect();
            for h in dead {
                if let Some(g) = row.grants.remove(&h) {
                    row.written_off += g.units;
                }
            }
            let units = want.min(row.capacity.saturating_sub(row.allocated));
            if units > 0 {
                row.allocated += units;
                let g = row.grants.entry(self.host.clone()).or_default();
                g.units += units;
                g.expires_unix_ms = now.saturating_add(timeout);
            }
            Grant {
                units,
                window,
                window_left: left,
            }
        })
    }

    fn release(
        &self,
        budget: &BudgetSpec,
        key: &str,
        window: i64,
        unused: u64,
    ) -> Result<(), LeaseError> {
        let held = self.change(|state, _| {
            let row = state.rows.get_mut(&row_id(&budget.name, key, window))?;
            let g = row.grants.remove(&self.host)?;
            let back = unused.min(g.units);
            row.allocated -= back;
            row.returned += back;
            row.spent += g.units - back;
            Some(g.units)
        })?;
        match held {
            Some(_) => Ok(()),
            None => Err(LeaseError::Refused {
                budget: budget.name.clone(),
                reason: format!(
                    "this process's lease of `{key}` was reclaimed (it was not renewed within \
                     the lease timeout) or its window ended: its units stay written off"
                ),
            }),
        }
    }

    fn heartbeat(&self) -> Result<(), LeaseError> {
        let timeout = ms(self.lease_timeout);
        self.change(|state, now| {
            for row in state.rows.values_mut() {
                if let Some(g) = row.grants.get_mut(&self.host)
                    && g.expires_unix_ms >= now
                {
                    g.expires_unix_ms = now.saturating_add(timeout);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::lease::{Measure, Per};
    use crate::clock::ManualClock;

    fn spec(limit: u64) -> BudgetSpec {
        BudgetSpec {
            name: "calls".into(),
            per: Per::Agent,
            measure: Measure::Calls,
            limit,
            window: Duration::from_secs(3600),
            chunk: Some(10),
        }
    }

    fn open(dir: &Path, host: &str, clock: &Arc<ManualClock>) -> FileLeases {
        FileLeases::open(dir, host, Duration::from_secs(60), clock.clone() as _).unwrap()
    }

    #[test]
    fn two_processes_never_lease_more_than_the_limit_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let (a, b) = (open(dir.path(), "a", &clock), open(dir.path(), "b", &clock));
        let s = spec(25);
        let g1 = a.lease(&s, "bot", 10).unwrap();
        let g2 = b.lease(&s, "bot", 10).unwrap();
        let g3 = a.lease(&s, "bot", 10).unwrap();
        let g4 = b.lease(&s, "bot", 10).unwrap();
        assert_eq!((g1.units, g2.units, g3.units, g4.units), (10, 10, 5, 0));
        let row = a.row("calls", "bot", g1.window).unwrap();
        assert_eq!((row.allocated, row.grants["a"].units), (25, 15));
        // Unused units come back and can be leased again; the rest counts as spent.
        b.release(&s, "bot", g2.window, 4).unwrap();
        let row = a.row("calls", "bot", g1.window).unwrap();
        assert_eq!((row.allocated, row.returned, row.spent), (21, 4, 6));
        assert_eq!(a.lease(&s, "bot", 10).unwrap().units, 4);
    }

    #[test]
    fn a_lease_not_renewed_is_written_off_and_its_release_refused() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let (a, b) = (open(dir.path(), "a", &clock), open(dir.path(), "b", &clock));
        let s = spec(20);
        let g = a.lease(&s, "bot", 10).unwrap();
        clock.advance(Duration::from_secs(30));
        b.heartbeat().unwrap(); // b renews nothing of a's
        clock.advance(Duration::from_secs(31));
        let got = b.lease(&s, "bot", 20).unwrap();
        assert_eq!(
            got.units, 10,
            "a's 10 are written off, not handed out again"
        );
        let row = b.row("calls", "bot", g.window).unwrap();
        assert_eq!(row.written_off, 10);
        let e = a.release(&s, "bot", g.window, 10).unwrap_err().to_string();
        assert!(e.contains("reclaimed"), "{e}");
    }

    #[test]
    fn a_renewed_lease_survives_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let (a, b) = (open(dir.path(), "a", &clock), open(dir.path(), "b", &clock));
        let s = spec(20);
        let g = a.lease(&s, "bot", 10).unwrap();
        for _ in 0..4 {
            clock.advance(Duration::from_secs(30));
            a.heartbeat().unwrap();
        }
        assert_eq!(b.lease(&s, "bot", 20).unwrap().units, 10);
        a.release(&s, "bot", g.window, 10).unwrap();
        assert_eq!(b.row("calls", "bot", g.window).unwrap().written_off, 0);
    }

    #[test]
    fn a_damaged_or_inconsistent_state_refuses_every_lease() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let a = open(dir.path(), "a", &clock);
        let s = spec(20);
        let g = a.lease(&s, "bot", 10).unwrap();
        let path = a.state_path();
        let text = fs::read_to_string(&path).unwrap();
        // Forge more capacity: the accounting no longer adds up.
        fs::write(&path, text.replace("\"allocated\": 10", "\"allocated\": 2")).unwrap();
        let e = a.lease(&s, "bot", 10).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        fs::write(&path, b"{not json").unwrap();
        assert!(a.lease(&s, "bot", 1).is_err());
        fs::remove_file(&path).unwrap();
        assert!(a.release(&s, "bot", g.window, 1).is_err());
    }

    #[test]
    fn a_new_window_starts_full_and_old_windows_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new());
        let a = open(dir.path(), "a", &clock);
        let s = spec(10);
        let g1 = a.lease(&s, "bot", 10).unwrap();
        assert_eq!(a.lease(&s, "bot", 1).unwrap().units, 0);
        clock.advance(g1.window_left + Duration::from_millis(1));
        let g2 = a.lease(&s, "bot", 10).unwrap();
        assert_eq!(g2.units, 10);
        assert_ne!(g1.window, g2.window);
        assert_eq!(
            a.row("calls", "bot", g1.window).unwrap(),
            FileBudgetRow::default()
        );
    }
}
