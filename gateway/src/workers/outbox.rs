//! What is queued for one worker connection, counted in bytes.
//!
//! Any task may queue a frame for a worker (a call to it, an answer to its
//! own call); only the connection task writes. A worker that stops reading
//! would make the queue grow with every call sent to it, so the queue has
//! a byte limit (`max_outbox_bytes`): the frame that would pass it is not
//! queued (the caller sees the connection as gone, as for a closed one) and
//! the connection is cut. Bytes are counted until the connection task takes
//! a frame to write; past that, tungstenite's write buffer holds at most
//! its buffer size plus one frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the connection task sends.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    /// Close the socket with a code and reason, then stop.
    Close(u16, String),
}

struct Counted {
    queued: AtomicUsize,
    limit: usize,
    overflow: CancellationToken,
}

/// The sending side, held by the worker's handle.
pub struct Outbox {
    sender: mpsc::UnboundedSender<Outgoing>,
    counted: Arc<Counted>,
}

/// The receiving side, held by the connection task.
pub struct OutboxReader {
    receiver: mpsc::UnboundedReceiver<Outgoing>,
    counted: Arc<Counted>,
}

/// An outbox holding at most `limit` bytes of frames not yet taken.
pub fn channel(limit: usize) -> (Outbox, OutboxReader) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let counted = Arc::new(Counted {
        queued: AtomicUsize::new(0),
        limit,
        overflow: CancellationToken::new(),
    });
    (
        Outbox {
            sender,
            counted: counted.clone(),
        },
        OutboxReader { receiver, counted },
    )
}

impl Outbox {
    /// Queues `text`; false when the connection is gone or the frame would
    /// pass the limit (which also cuts the connection).
    pub fn push(&self, text: String) -> bool {
        let len = text.len();
        let queued = self.counted.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.counted.limit {
            self.counted.queued.fetch_sub(len, Ordering::AcqRel);
            self.counted.overflow.cancel();
            return false;
        }
        if self.sender.send(Outgoing::Text(text)).is_err() {
            self.counted.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues a close frame (not counted: it ends the queue).
    pub fn close(&self, code: u16, reason: String) {
        let _ = self.sender.send(Outgoing::Close(code, reason));
    }
}

impl OutboxReader {
    /// The next frame to write.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let outgoing = self.receiver.recv().await;
        self.taken(outgoing.as_ref());
        outgoing
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let outgoing = self.receiver.try_recv().ok();
        self.taken(outgoing.as_ref());
        outgoing
    }

    fn taken(&self, outgoing: Option<&Outgoing>) {
        if let Some(Outgoing::Text(text)) = outgoing {
            self.counted.queued.fetch_sub(text.len(), Ordering::AcqRel);
        }
    }

    /// Cancelled once a frame was refused for the limit.
    pub fn overflow(&self) -> CancellationToken {
        self.counted.overflow.clone()
    }

    /// Bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.counted.queued.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.counted.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_are_counted_until_taken_and_the_limit_cuts() {
        let (outbox, mut reader) = channel(10);
        assert!(outbox.push("12345".into()));
        assert!(outbox.push("6789".into()));
        assert_eq!(reader.queued_bytes(), 9);
        assert!(!reader.overflow().is_cancelled());
        assert!(!outbox.push("ab".into()), "11 bytes would pass the limit");
        assert!(reader.overflow().is_cancelled());
        assert_eq!(reader.queued_bytes(), 9, "the refused frame is not counted");
        assert!(matches!(reader.recv().await, Some(Outgoing::Text(t)) if t == "12345"));
        assert_eq!(reader.queued_bytes(), 4);
        assert!(matches!(reader.try_recv(), Some(Outgoing::Text(t)) if t == "6789"));
        assert_eq!(reader.queued_bytes(), 0);
        drop(reader);
        assert!(
            !outbox.push("x".into()),
            "a closed connection takes nothing"
        );
    }
}
