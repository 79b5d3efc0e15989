//! Sources: partition readers, event-time clocks and lateness.
//!
//! Each partition (a file, a Kafka partition, a generator) is read in order. Its clock is the
//! max event time of the events accepted from it. An event whose time is below its partition's
//! clock minus the allowed lateness is *late*: it is counted, follows the late policy and never
//! reaches a window. The worker's head is the minimum clock over its partitions that are not
//! idle (silent for longer than the idle timeout); the watermark is head − allowed lateness.
//! Records that fail to decode are counted and sent to the dead-letter sink with their reason.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use freshet_core::event::{Decoded, Rejection};
use freshet_core::spec::LatePolicy;

use crate::plan::SourcePlan;

/// What a partition reader has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// More records may be read right away.
    More,
    /// Nothing to read now; try again later.
    Idle,
    /// The partition is exhausted (end of a file, end of a bounded generator).
    End,
    /// Nothing was read because the source could not be reached (a broker outage): records may
    /// be waiting. Unlike silence, this does not count towards the partition's idle timeout.
    Unreachable,
}

/// Reads raw records of one partition, in order.
pub trait PartitionReader: Send {
    /// Hands up to `max_records` records to `record` as (offset, bytes).
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, &[u8]),
    ) -> io::Result<ReadState>;

    /// The offset of the next record this reader will hand out, for readers that can be
    /// restarted there (Kafka); `None` for inputs read from the start each time.
    fn position(&self) -> Option<u64> {
        None
    }
}

/// A JSON-lines file; offsets are 1-based line numbers.
pub struct FileReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
}

impl FileReader {
    /// Opens a JSON-lines file.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            buf: Vec::with_capacity(512),
        })
    }
}

impl PartitionReader for FileReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, &[u8]),
    ) -> io::Result<ReadState> {
        for _ in 0..max_records {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
            if n == 0 {
                return Ok(ReadState::End);
            }
            self.line += 1;
            let line = self.buf.trim_ascii();
            if !line.is_empty() {
                record(self.line, line);
            }
        }
        Ok(ReadState::More)
    }
}

/// A record that failed to decode or arrived late, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Source name.
    pub source: String,
    /// Partition within the source.
    pub partition: u32,
    /// Offset within the partition (line number for files).
    pub offset: u64,
    /// Why it was not processed.
    pub reason: Rejection,
    /// The original bytes.
    pub record: Vec<u8>,
}

/// Per-partition clock and reader.
pub(crate) struct Partition {
    pub(crate) id: u32,
    reader: Box<dyn PartitionReader>,
    clock: Option<u64>,
    last_event: Instant,
    pub(crate) done: bool,
    batch: LineBatch,
}

impl Partition {
    pub(crate) fn new(id: u32, reader: Box<dyn PartitionReader>) -> Self {
        Self {
            id,
            reader,
            clock: None,
            last_event: Instant::now(),
            done: false,
            batch: LineBatch::default(),
        }
    }
}

/// Outcome of classifying one record.
pub(crate) enum Classified {
    Accepted(Decoded),
    Late(DeadLetter),
    Rejected(DeadLetter),
}

/// Raw records of one read, in partition order: offsets and byte ranges into one buffer.
#[derive(Default)]
pub(crate) struct LineBatch {
    bytes: Vec<u8>,
    records: Vec<(u64, usize, usize)>,
}

/// Below this many records a batch is decoded on the calling thread alone.
const PARALLEL_DECODE_MIN_RECORDS: usize = 1024;

/// Reads up to `max_records` from a partition, decodes them (on `decode_threads` threads when
/// the batch is large: decoding needs no order) and then classifies them one by one in
/// partition order, which is what lateness depends on.
pub(crate) fn poll_partition(
    plan: &SourcePlan,
    part: &mut Partition,
    max_records: usize,
    decode_threads: usize,
    out: &mut dyn FnMut(Classified),
) -> io::Result<ReadState> {
    let batch = &mut part.batch;
    batch.bytes.clear();
    batch.records.clear();
    let state = part.reader.read(max_records, &mut |offset, bytes| {
        let start = batch.bytes.len();
        batch.bytes.extend_from_slice(bytes);
        batch.records.push((offset, start, batch.bytes.len()));
    })?;
    let decode = |records: &[(u64, usize, usize)]| -> Vec<Result<Decoded, Rejection>> {
        records
            .iter()
            .map(|(_, start, end)| plan.schema.decode(&batch.bytes[*start..*end]))
            .collect()
    };
    let threads = decode_threads.max(1);
    let decoded: Vec<Result<Decoded, Rejection>> =
        if threads == 1 || batch.records.len() < PARALLEL_DECODE_MIN_RECORDS {
            decode(&batch.records)
        } else {
            let chunk = batch.records.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let mut chunks = batch.records.chunks(chunk);
                let first = chunks.next().unwrap_or(&[]);
                let helpers: Vec<_> = chunks.map(|c| scope.spawn(move || decode(c))).collect();
                let mut all = decode(first);
                for helper in helpers {
                    match helper.join() {
                        Ok(part) => all.extend(part),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                all
            })
        };
    let lateness = plan.lateness_ms;
    let mut any = false;
    for ((offset, start, end), result) in batch.records.iter().zip(decoded) {
        let letter = |reason| DeadLetter {
            source: plan.name.clone(),
            partition: part.id,
            offset: *offset,
            reason,
            record: batch.bytes[*start..*end].to_vec(),
        };
        match result {
            Err(reason) => out(Classified::Rejected(letter(reason))),
            Ok(event) => match part.clock {
                Some(c) if event.ts_ms.saturating_add(lateness) < c => {
                    out(Classified::Late(letter(Rejection::Late {
                        ts_ms: event.ts_ms,
                        clock_ms: c,
                        lateness_ms: lateness,
                    })));
                }
                _ => {
                    part.clock = Some(part.clock.map_or(event.ts_ms, |c| c.max(event.ts_ms)));
                    any = true;
                    out(Classified::Accepted(event));
                }
            },
        }
    }
    if any || state == ReadState::Unreachable {
        part.last_event = Instant::now();
    }
    if state == ReadState::End {
        part.done = true;
    }
    Ok(state)
}

/// The head over a worker's partitions: the minimum clock of those not idle; `None` while a
/// partition that is not idle has seen no event yet, or when every partition is idle.
pub(crate) fn head(plan: &SourcePlan, parts: &[Partition]) -> Option<u64> {
    let now = Instant::now();
    let mut head: Option<u64> = None;
    for p in parts {
        let idle = now.duration_since(p.last_event) >= plan.idle_timeout;
        if idle {
            continue;
        }
        let c = p.clock?;
        head = Some(head.map_or(c, |h| h.min(c)));
    }
    head
}

/// Whether the late policy keeps late events as dead letters.
pub(crate) fn keep_late(plan: &SourcePlan) -> bool {
    plan.late_policy == LatePolicy::DeadLetter
}

impl Partition {
    /// The partition's clock: max event time accepted so far.
    pub(crate) fn clock(&self) -> Option<u64> {
        self.clock
    }

    /// Restarts the partition's idle timer, as if it had just delivered an event.
    #[cfg(test)]
    fn not_idle_now(&mut self) {
        self.last_event = Instant::now();
    }

    /// Sets the clock a checkpoint recorded for this partition.
    pub(crate) fn restore_clock(&mut self, clock_ms: Option<u64>) {
        self.clock = clock_ms;
    }

    /// The next offset the reader hands out, if it knows.
    pub(crate) fn position(&self) -> Option<u64> {
        self.reader.position()
    }
}

/// JSON lines held in memory (benchmarks, tests, embedded inputs); offsets are line numbers.
pub struct BytesReader {
    bytes: std::sync::Arc<[u8]>,
    pos: usize,
    line: u64,
}

impl BytesReader {
    /// Reads the newline-separated records of `bytes`.
    pub fn new(bytes: std::sync::Arc<[u8]>) -> Self {
        Self {
            bytes,
            pos: 0,
            line: 0,
        }
    }
}

impl PartitionReader for BytesReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, &[u8]),
    ) -> io::Result<ReadState> {
        for _ in 0..max_records {
            if self.pos >= self.bytes.len() {
                return Ok(ReadState::End);
            }
            let rest = &self.bytes[self.pos..];
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            self.pos += end + 1;
            self.line += 1;
            let line = rest[..end].trim_ascii();
            if !line.is_empty() {
                record(self.line, line);
            }
        }
        Ok(ReadState::More)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::path::Path;
    use std::time::Duration;

    use freshet_core::spec::PipelineSpec;

    use super::*;

    /// Hands out its scripted answers, one per read.
    struct Scripted(VecDeque<(ReadState, Vec<String>)>);

    impl PartitionReader for Scripted {
        fn read(
            &mut self,
            _max_records: usize,
            record: &mut dyn FnMut(u64, &[u8]),
        ) -> io::Result<ReadState> {
            let (state, lines) = self.0.pop_front().unwrap_or((ReadState::Idle, Vec::new()));
            for (offset, line) in lines.iter().enumerate() {
                record(offset as u64, line.as_bytes());
            }
            Ok(state)
        }

        fn position(&self) -> Option<u64> {
            None
        }
    }

    fn event(ts: u64) -> String {
        format!(r#"{{"k":"a","ts":{ts}}}"#)
    }

    /// A partition whose brokers are unreachable keeps holding the head back however long the
    /// outage lasts; a silent one stops holding it after the idle timeout.
    #[test]
    fn an_unreachable_partition_is_not_idle() {
        let spec = PipelineSpec::from_toml(
            "[[source]]\nname = \"s\"\nentity = \"k\"\nevent_time = \"ts\"\nidle_timeout = \"50ms\"\n",
            Path::new("p.toml"),
        )
        .expect("pipeline");
        let plan = crate::plan::compile(&spec).remove(0);
        let script = |second: ReadState| {
            Box::new(Scripted(VecDeque::from([
                (ReadState::More, vec![event(1_000)]),
                (second, Vec::new()),
                (second, Vec::new()),
            ])))
        };
        for (second, held) in [(ReadState::Unreachable, true), (ReadState::Idle, false)] {
            let mut parts = vec![
                Partition::new(0, Box::new(Scripted(VecDeque::new()))),
                Partition::new(1, script(second)),
            ];
            parts[0].restore_clock(Some(9_000));
            poll_partition(&plan, &mut parts[1], 10, 1, &mut |_| {}).expect("read");
            assert_eq!(head(&plan, &parts), Some(1_000));
            for _ in 0..2 {
                std::thread::sleep(Duration::from_millis(40));
                poll_partition(&plan, &mut parts[1], 10, 1, &mut |_| {}).expect("read");
                // partition 0 keeps delivering
                parts[0].not_idle_now();
            }
            let expected = if held { Some(1_000) } else { Some(9_000) };
            assert_eq!(head(&plan, &parts), expected, "{second:?}");
        }
    }
}
