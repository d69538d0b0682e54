//! The channel from the notification thread to the poller (announced execs, exit codes):
//! bounded by count, with memory that follows what is queued.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates its whole capacity up front and writes every
//! slot's stamp, so its pages are resident at once: the two 65,536-slot feeds were ~3.5 MB of
//! the Defender's RSS while empty. An unbounded `mpsc::channel` grows and shrinks by blocks of a
//! few dozen slots; the count kept beside it bounds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// The sending half; `try_send` refuses once `capacity` items are queued.
pub(crate) struct FeedSender<T> {
    tx: mpsc::Sender<T>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

/// The receiving half.
pub struct FeedReceiver<T> {
    rx: mpsc::Receiver<T>,
    queued: Arc<AtomicUsize>,
}

/// A feed holding at most `capacity` items.
pub(crate) fn feed<T>(capacity: usize) -> (FeedSender<T>, FeedReceiver<T>) {
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        FeedSender {
            tx,
            queued: queued.clone(),
            capacity,
        },
        FeedReceiver { rx, queued },
    )
}

impl<T> FeedSender<T> {
    /// Queues `item` unless the feed is full or its receiver is gone; says whether it did.
    pub(crate) fn try_send(&self, item: T) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl<T> FeedReceiver<T> {
    /// The next queued item, if any (never blocks).
    pub fn try_recv(&self) -> Option<T> {
        let item = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_freed_as_received() {
        let (tx, rx) = feed(3);
        assert!(tx.try_send(1) && tx.try_send(2) && tx.try_send(3));
        assert!(!tx.try_send(4), "full");
        assert_eq!(rx.try_recv(), Some(1));
        assert!(tx.try_send(5), "room again");
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(rest, [2, 3, 5]);
        drop(rx);
        assert!(!tx.try_send(6), "receiver gone");
    }
}
