//! Kubernetes Events, written in the background. A reconcile hands its Event over and goes on,
//! as with client-go's recorder: an Event costs the API server about as much as the Secret write
//! itself, so a burst of a thousand new credentials would otherwise queue its Secrets behind its
//! Events. One writer keeps them in order; the queue is bounded, and only when it is full does a
//! reconcile wait for room, so no Event is dropped and memory stays bounded.

use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::api::TurnCredential;

/// Events waiting to be written before a reconcile waits for room: enough for a burst of a few
/// thousand new credentials (a few MiB at most), so that the Events trail the Secrets rather
/// than hold them back.
const QUEUE_LENGTH: usize = 8192;

/// Where reconciles publish Events.
#[derive(Clone)]
pub struct Events {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    event: Event,
    regarding: ObjectReference,
}

/// The task that writes queued Events; it ends once every `Events` is dropped and the queue is
/// empty.
pub struct Writer(JoinHandle<()>);

pub fn start(recorder: Recorder) -> (Events, Writer) {
    let (queue, mut pending) = mpsc::channel::<Pending>(QUEUE_LENGTH);
    let writer = tokio::spawn(async move {
        while let Some(item) = pending.recv().await {
            if let Err(error) = recorder.publish(&item.event, &item.regarding).await {
                let regarding = &item.regarding;
                warn!(namespace = regarding.namespace, turncredential = regarding.name, reason = item.event.reason, %error, "could not publish an Event");
            }
        }
    });
    (Events { queue }, Writer(writer))
}

impl Events {
    pub async fn publish(&self, tc: &TurnCredential, type_: EventType, reason: &str, note: String) {
        let pending = Pending {
            event: Event {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            },
            regarding: tc.object_ref(&()),
        };
        if self.queue.send(pending).await.is_err() {
            warn!(reason, "Event not published: the writer has stopped");
        }
    }
}

impl Writer {
    /// Waits until the queued Events are written, at most `limit`. Call after the last `Events`
    /// is dropped (else it waits the whole limit). False if the limit was reached first.
    pub async fn finish(self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.0).await.is_ok()
    }
}
