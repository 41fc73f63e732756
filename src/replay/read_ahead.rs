//! Reading a capture on a thread of its own, a batch of frames ahead of the engine.
//!
//! Reading (system calls, copies, record headers) is about an eighth of a replay's
//! time; on its own core it overlaps the judging. The engine still sees every frame
//! in capture order on one thread, so a replay's results do not change.

use crate::engine::LinkType;
use crate::replay::capture::{CaptureError, CaptureReader, Frame};
use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Frames per batch, and the bytes after which a batch is sent even if shorter.
const BATCH_FRAMES: usize = 1024;
const BATCH_BYTES: usize = 1 << 18;
/// Batches in flight: the reader is at most this many batches ahead.
const IN_FLIGHT: usize = 3;

struct Record {
    number: u64,
    ts_ns: u64,
    link: Result<LinkType, u32>,
    wire_len: u32,
    start: usize,
    len: usize,
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Set on the last batch: why reading ended (`Ok` at the end of the file).
    end: Option<Result<(), CaptureError>>,
}

/// Calls `each` with every frame of `reader`, in order, reading on another thread.
/// Returns the error that ended reading early, after the frames before it.
pub fn for_each_frame<R: Read + Send>(
    mut reader: CaptureReader<R>,
    mut each: impl FnMut(Frame<'_>),
) -> Result<(), CaptureError> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(IN_FLIGHT);
    let (free_tx, free_rx) = mpsc::sync_channel::<Batch>(IN_FLIGHT + 1);
    // `move`: the receiver is dropped when this closure ends, even by a panic in
    // `each`, so a reader blocked on a full channel stops and the scope can join it.
    std::thread::scope(move |s| {
        std::thread::Builder::new()
            .name("replay-read".into())
            .spawn_scoped(s, move || read_batches(&mut reader, &full_tx, &free_rx))
            .expect("spawn the capture reader thread");
        for batch in full_rx.iter() {
            for r in &batch.records {
                each(Frame {
                    number: r.number,
                    ts_ns: r.ts_ns,
                    link: r.link,
                    data: &batch.bytes[r.start..r.start + r.len],
                    wire_len: r.wire_len,
                });
            }
            let mut batch = batch;
            if let Some(end) = batch.end.take() {
                return end;
            }
            // A full free list only means the reader made a batch of its own.
            let _ = free_tx.try_send(batch);
        }
        Ok(())
    })
}

fn read_batches<R: Read>(
    reader: &mut CaptureReader<R>,
    full: &SyncSender<Batch>,
    free: &Receiver<Batch>,
) {
    loop {
        let mut batch = free.try_recv().unwrap_or_default();
        batch.bytes.clear();
        batch.records.clear();
        while batch.records.len() < BATCH_FRAMES && batch.bytes.len() < BATCH_BYTES {
            match reader.next_frame() {
                Some(Ok(f)) => {
                    batch.records.push(Record {
                        number: f.number,
                        ts_ns: f.ts_ns,
                        link: f.link,
                        wire_len: f.wire_len,
                        start: batch.bytes.len(),
                        len: f.data.len(),
                    });
                    batch.bytes.extend_from_slice(f.data);
                }
                Some(Err(e)) => {
                    batch.end = Some(Err(e));
                    break;
                }
                None => {
                    batch.end = Some(Ok(()));
                    break;
                }
            }
        }
        let last = batch.end.is_some();
        // The consumer stopped (it only does after the last batch): nothing to do.
        if full.send(batch).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(frames: &[&[u8]]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&101u32.to_le_bytes()); // raw IP
        for (i, d) in frames.iter().enumerate() {
            f.extend_from_slice(&(i as u32).to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&(d.len() as u32).to_le_bytes());
            f.extend_from_slice(&(d.len() as u32).to_le_bytes());
            f.extend_from_slice(d);
        }
        f
    }

    type Frames = Vec<(u64, u64, Vec<u8>)>;

    fn collect(file: &[u8]) -> (Frames, Result<(), CaptureError>) {
        let reader = CaptureReader::new(file).unwrap();
        let mut got = Vec::new();
        let end = for_each_frame(reader, |f| got.push((f.number, f.ts_ns, f.data.to_vec())));
        (got, end)
    }

    #[test]
    fn every_frame_arrives_in_order_across_batches() {
        let payloads: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| vec![(i % 251) as u8; (i % 97) as usize])
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let (got, end) = collect(&pcap(&refs));
        assert!(end.is_ok());
        assert_eq!(got.len(), 3000);
        for (i, (number, ts, data)) in got.iter().enumerate() {
            assert_eq!(*number, i as u64 + 1);
            assert_eq!(*ts, i as u64 * 1_000_000_000);
            assert_eq!(data, &payloads[i]);
        }
    }

    #[test]
    fn a_truncated_record_ends_reading_after_the_frames_before_it() {
        let mut file = pcap(&[&[1, 2, 3], &[4, 5, 6, 7]]);
        file.truncate(file.len() - 2);
        let (got, end) = collect(&file);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2, vec![1, 2, 3]);
        assert!(
            matches!(end, Err(CaptureError::Truncated { frame: 2, .. })),
            "{end:?}"
        );
    }
}
