//! The files backend of the kill switch: `kill-switch.json` in a directory every process of the
//! host shares, replaced atomically (written to a temporary file, synced, renamed over the old
//! one, directory synced) while holding an exclusive lock on `kill-switch.lock`, so concurrent
//! changes from several processes serialise and a reader never sees half a file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Applied, KillChange, KillError, KillState, KillSwitchStore, KillWatch, unix_ms};

const STATE: &str = "kill-switch.json";
const LOCK: &str = "kill-switch.lock";
/// Written once, right after the first state file, and never removed by tollgate: its presence
/// says a state was created here, so a missing state file is a loss, not a first start.
const CREATED: &str = "kill-switch.created";
const FORMAT: &str = "tollgate-kill-switch/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    format: String,
    state: KillState,
}

/// The kill-switch state in a file shared by the processes of one host.
#[derive(Debug, Clone)]
pub struct FileKillSwitch {
    dir: PathBuf,
}

impl FileKillSwitch {
    /// Opens the state in `dir`, creating the directory and an empty state (revision 0) the
    /// first time only.
    ///
    /// The first creation leaves a marker beside the state, `kill-switch.created`, which
    /// tollgate never removes. Once it is there, a missing state file is never created again:
    /// the store opens, and reading it is an error ([`KillError::Missing`]), never "nothing
    /// suspended", so followers keep their guards suspended (`kill-switch-stale`) instead of
    /// resuming a suspended fleet at revision 0. (A follower also refuses any state whose
    /// revision is lower than the one it applied, whatever recreated it.) To start over
    /// deliberately after a loss, remove the marker too; running followers stay suspended until
    /// restarted or until the revision is back where they were.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KillError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| KillError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = FileKillSwitch { dir };
        let _lock = store.lock()?;
        let created = store.marker_path();
        let exists = |p: &Path| {
            p.try_exists().map_err(|source| KillError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        match (exists(&store.state_path())?, exists(&created)?) {
            // A state from before the marker existed (or a crash between the two writes).
            (true, false) => store.mark_created()?,
            (true, true) => {}
            // The first start in this directory.
            (false, false) => {
                store.write(&KillState::default())?;
                store.mark_created()?;
            }
            // The state was created once and is gone: left missing (reads fail closed).
            (false, true) => tracing::error!(
                path = %store.state_path().display(),
                "kill switch: the state file is missing although it was created (see {CREATED}); \
                 not recreated: followers keep their guards suspended"
            ),
        }
        Ok(store)
    }

    /// The marker of the first creation (see [`open`](Self::open)).
    pub fn marker_path(&self) -> PathBuf {
        self.dir.join(CREATED)
    }

    fn mark_created(&self) -> Result<(), KillError> {
        let path = self.marker_path();
        let io = |source| KillError::Io {
            path: path.clone(),
            source,
        };
        let mut f = File::create(&path).map_err(io)?;
        f.write_all(
            format!(
                "{FORMAT}: a kill-switch state was created in this directory at {} ms since the \
                 Unix epoch. While this file exists a missing {STATE} is an error, never \
                 recreated empty.\n",
                unix_ms(SystemTime::now())
            )
            .as_bytes(),
        )
        .map_err(io)?;
        f.sync_all().map_err(io)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(STATE)
    }

    fn lock(&self) -> Result<File, KillError> {
        let path = self.dir.join(LOCK);
        let io = |source| KillError::Io {
            path: path.clone(),
            source,
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    fn write(&self, state: &KillState) -> Result<(), KillError> {
        let path = self.state_path();
        let tmp = self.dir.join(format!("{STATE}.tmp-{}", std::process::id()));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KillError::Io { path: p, source }
        };
        let mut text = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT.to_owned(),
            state: state.clone(),
        })
        .map_err(|e| KillError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn read(&self) -> Result<KillState, KillError> {
        let path = self.state_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KillError::Missing(path.display().to_string()));
            }
            Err(source) => return Err(KillError::Io { path, source }),
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| KillError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if disk.format != FORMAT {
            return Err(KillError::Corrupt {
                path,
                reason: format!("format `{}`, expected `{FORMAT}`", disk.format),
            });
        }
        Ok(disk.state)
    }
}

impl KillSwitchStore for FileKillSwitch {
    fn load(&self) -> Result<KillState, KillError> {
        self.read()
    }

    fn apply(&self, change: &KillChange) -> Result<Applied, KillError> {
        let _lock = self.lock()?;
        let mut state = self.read()?;
        let changed = state.apply(change, unix_ms(SystemTime::now()));
        if changed {
            self.write(&state)?;
        }
        Ok(Applied { state, changed })
    }

    fn watch(&self) -> Box<dyn KillWatch> {
        Box::new(FileWatch {
            store: self.clone(),
            first: true,
        })
    }
}

/// Polls the file: a small read per poll interval (no notification mechanism is portable).
struct FileWatch {
    store: FileKillSwitch,
    first: bool,
}

impl KillWatch for FileWatch {
    fn next(&mut self, wait: Duration) -> Result<KillState, KillError> {
        if !std::mem::take(&mut self.first) {
            std::thread::sleep(wait);
        }
        self.store.read()
    }
}
