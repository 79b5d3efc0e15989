//! Consistent checkpoints of a live dataflow: partition positions, partition clocks and the
//! window state of every view on every worker, taken at one cut of the input.
//!
//! Protocol (aligned barriers on a paused input): [`Control::start`] raises the requested
//! epoch. Each source operator, at its next activation, records its partitions' positions (the
//! next offset to read and the partition clock), sends a barrier to every worker and reads
//! nothing more until the epoch is resumed. A window operator that has received the barrier of
//! every source worker has, by the FIFO order of timely's channels, applied every record read
//! before the cut and none after it: it writes its changed vectors to the store (synchronously,
//! retried until acknowledged), hands its closed windows to the changelog sink, and then
//! snapshots its state. When every part has arrived, [`Control::wait`] returns the assembled
//! [`Checkpoint`]; the caller makes its outputs durable (flushes the changelog producer), writes
//! the checkpoint, commits the offsets and calls [`Control::resume`].
//!
//! Guarantee: restoring a checkpoint and reading each partition from its recorded position
//! rebuilds exactly the state an uninterrupted run had at the cut (lateness included, since the
//! partition clocks are restored), so every later store write and closed window is the same as
//! in an uninterrupted run. Writes made after the cut and before a crash are made again with the
//! same values (upserts), and closed windows after the cut are reported again with identical
//! values: at-least-once changelog, exactly-once store contents.
//!
//! Drift monitors are not part of a checkpoint: after a restart they build their reference anew
//! (or load it from its pinned file).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Format version written at the start of a checkpoint file.
const FORMAT_VERSION: u32 = 1;
/// Name of the checkpoint file in its directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";

/// Where one partition of a source stood at the cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// Partition id.
    pub partition: u32,
    /// Offset of the next record to read (`None`: nothing read yet, start from the beginning).
    pub next_offset: Option<u64>,
    /// The partition's clock (largest accepted event time), if any event was accepted.
    pub clock_ms: Option<u64>,
}

/// The partitions one worker reads of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePositions {
    /// Source name.
    pub source: String,
    /// Worker index.
    pub worker: usize,
    /// Positions of the worker's partitions.
    pub partitions: Vec<PartitionPosition>,
}

/// The state of one view on one worker at the cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSnapshot {
    /// Source name.
    pub source: String,
    /// View name.
    pub view: String,
    /// Worker index.
    pub worker: usize,
    /// The operator's watermark.
    pub watermark_ms: Option<u64>,
    /// Largest event time the operator has seen.
    pub t_end_ms: Option<u64>,
    /// The encoded window state.
    pub state: Vec<u8>,
}

/// One consistent checkpoint of the whole dataflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Increasing number of the checkpoint within one process run.
    pub epoch: u64,
    /// Number of workers that wrote it; a restore needs the same number.
    pub workers: usize,
    /// Positions, one entry per source and worker.
    pub sources: Vec<SourcePositions>,
    /// View states, one entry per source, view and worker.
    pub views: Vec<ViewSnapshot>,
}

/// A checkpoint could not be taken, written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a checkpoint of this format.
    #[error("checkpoint {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A dataflow thread panicked while holding the checkpoint state.
    #[error("checkpoint {epoch}: a dataflow thread panicked")]
    Poisoned {
        /// The epoch.
        epoch: u64,
    },
}

impl Checkpoint {
    /// Positions of `source`'s partitions, by partition id.
    pub fn positions(&self, source: &str) -> HashMap<u32, PartitionPosition> {
        self.sources
            .iter()
            .filter(|s| s.source == source)
            .flat_map(|s| s.partitions.iter().cloned())
            .map(|p| (p.partition, p))
            .collect()
    }

    /// The snapshot of `view` of `source` on `worker`.
    pub fn view(&self, source: &str, view: &str, worker: usize) -> Option<&ViewSnapshot> {
        self.views
            .iter()
            .find(|v| v.source == source && v.view == view && v.worker == worker)
    }

    /// Writes the checkpoint to `dir/checkpoint.bin` atomically (a temporary file, fsync,
    /// rename, fsync of the directory): a crash leaves the previous checkpoint or this one.
    pub fn write(&self, dir: &Path) -> Result<(), CheckpointError> {
        let path = dir.join(CHECKPOINT_FILE);
        let io = |source| CheckpointError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let body = postcard::to_allocvec(self).map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(b"FRSHCKPT").map_err(io)?;
        file.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().map_err(io)?;
        }
        Ok(())
    }

    /// Reads `dir/checkpoint.bin`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, CheckpointError> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        let Some(body) = bytes.strip_prefix(b"FRSHCKPT") else {
            return Err(corrupt("not a freshet checkpoint".into()));
        };
        let (version, body) = body
            .split_at_checked(4)
            .ok_or_else(|| corrupt("truncated".into()))?;
        let version = u32::from_le_bytes(
            version
                .try_into()
                .map_err(|_| corrupt("truncated".into()))?,
        );
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        postcard::from_bytes(body)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }
}

#[derive(Default)]
struct Pending {
    epoch: u64,
    sources: Vec<SourcePositions>,
    views: Vec<ViewSnapshot>,
}

/// Shared between the process that drives checkpoints and the dataflow operators.
#[derive(Default)]
pub struct Control {
    requested: AtomicU64,
    resumed: AtomicU64,
    stopping: AtomicBool,
    expected: Mutex<(usize, usize, usize)>,
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Control {
    /// A control for a live run: inputs never end by themselves; a stop goes through
    /// [`Control::stop`] and a final checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Called by the dataflow: `workers`, source operators and view operators per checkpoint.
    pub(crate) fn expect(&self, workers: usize, sources: usize, views: usize) {
        if let Ok(mut e) = self.expected.lock() {
            *e = (workers, sources, views);
        }
    }

    /// The epoch a source must cut at, when it has not yet.
    pub(crate) fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Whether sources may read past the cut of `epoch`.
    pub(crate) fn resumed(&self, epoch: u64) -> bool {
        self.resumed.load(Ordering::Acquire) >= epoch
    }

    /// Whether sources release their inputs after the current checkpoint (a live stop).
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn deliver_source(&self, part: SourcePositions) {
        if let Ok(mut p) = self.pending.lock() {
            p.sources.push(part);
        }
        self.ready.notify_all();
    }

    pub(crate) fn deliver_view(&self, part: ViewSnapshot) {
        if let Ok(mut p) = self.pending.lock() {
            p.views.push(part);
        }
        self.ready.notify_all();
    }

    /// Starts a checkpoint: the sources cut their inputs at their next activation. Returns its
    /// epoch; collect it with [`Control::wait`]. Sources stay paused after the cut until
    /// [`Control::resume`] with that epoch.
    pub fn start(&self) -> u64 {
        let Ok(mut p) = self.pending.lock() else {
            return self.requested();
        };
        p.epoch += 1;
        p.sources.clear();
        p.views.clear();
        self.requested.store(p.epoch, Ordering::Release);
        p.epoch
    }

    /// Waits up to `timeout` for every operator's part of the current checkpoint; `Ok(None)`
    /// when some are still missing (call again: a store that is down delays the parts).
    pub fn wait(&self, timeout: Duration) -> Result<Option<Checkpoint>, CheckpointError> {
        let (workers, want_sources, want_views) =
            self.expected.lock().map(|e| *e).unwrap_or_default();
        let start = Instant::now();
        let mut p = self.pending.lock().map_err(|_| self.poisoned())?;
        while p.sources.len() < want_sources || p.views.len() < want_views {
            let waited = start.elapsed();
            if waited >= timeout {
                return Ok(None);
            }
            p = self
                .ready
                .wait_timeout(p, timeout - waited)
                .map_err(|_| self.poisoned())?
                .0;
        }
        let mut sources = std::mem::take(&mut p.sources);
        let mut views = std::mem::take(&mut p.views);
        sources.sort_by(|a, b| (&a.source, a.worker).cmp(&(&b.source, b.worker)));
        views.sort_by(|a, b| (&a.source, &a.view, a.worker).cmp(&(&b.source, &b.view, b.worker)));
        Ok(Some(Checkpoint {
            epoch: p.epoch,
            workers,
            sources,
            views,
        }))
    }

    /// Lets the sources read past the cut of `epoch`.
    pub fn resume(&self, epoch: u64) {
        self.resumed.store(epoch, Ordering::Release);
    }

    /// Makes the sources release their inputs at the next resume: the dataflow then ends
    /// without end-of-input (no window is closed early); take a checkpoint, then resume.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn poisoned(&self) -> CheckpointError {
        CheckpointError::Poisoned {
            epoch: self.requested(),
        }
    }
}
