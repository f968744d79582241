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
    /// Opens the state in `dir`, creating the directory and an empty state (revision 0) when
    /// they do not exist. Once created, a missing state file is an error
    /// ([`KillError::Missing`]), never "nothing suspended".
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, KillError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| KillError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = FileKillSwitch { dir };
        let _lock = store.lock()?;
        if !store.state_path().exists() {
            store.write(&KillState::default())?;
        }
        Ok(store)
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
