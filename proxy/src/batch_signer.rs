//! `[signing] batch = true`: requests that are ready to be signed at the
//! same moment share one key signature over a Merkle tree of their
//! signature bases (kakunin_signer::httpsig::batch, docs/wire-format.md).
//!
//! Why: one P-256 signature costs more CPU than forwarding a request, and a
//! KMS Sign is a network round trip out of a quota. One task owns the key
//! calls. Requests queue their leaves; the task takes the first, lets every
//! request that is ready on the runtime run up to its own queueing (one
//! yield; a remote key's batch takes more while requests keep arriving,
//! see `gather`), then signs everything queued as one tree. Nothing ever
//! waits for a batch to fill: a lone request is a batch of one, signed at
//! once, and under load the batch is whatever arrived while the last
//! signature was being made. So a file key's cost is shared by the
//! requests that were ready together, and a KMS key makes at most two
//! calls per round trip (REMOTE_BATCHES_IN_FLIGHT) whatever the request
//! rate.

use std::sync::Arc;

use kakunin_signer::httpsig::batch::{BatchProof, MerkleTree, MAX_BATCH};
use kakunin_signer::httpsig::{BatchSignature, SigAlg};
use kakunin_signer::{KeyBackend, Locality};
use rustls::SignatureScheme;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::errors::ProxyError;
use crate::metrics::BatchMetrics;

/// Batches of a remote key (KMS, an HSM) signed at once. One would make
/// every request that arrives during a round trip wait for that round trip
/// and then its own; two let a request at low load go out at once, while
/// still bounding the key's calls to two per round trip under any load
/// (at KMS's 10-20 ms, well below its default 300 Sign/s quota).
const REMOTE_BATCHES_IN_FLIGHT: usize = 2;

/// Scheduler passes a remote key's batch gathers over at most, the first
/// included (`gather`).
const GATHER_PASSES: usize = 4;

/// A request's share of a batch signature.
#[derive(Debug)]
pub struct Share {
    pub signature: Arc<BatchSignature>,
    pub proof: BatchProof,
}

/// One request waiting for its batch.
struct Waiting {
    key: Arc<dyn KeyBackend>,
    scheme: SignatureScheme,
    leaf: Vec<u8>,
    reply: oneshot::Sender<Result<Share, ProxyError>>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("key", &self.key.describe())
            .finish_non_exhaustive()
    }
}

/// The handle requests queue through; the signing task ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct BatchSigner {
    queue: mpsc::Sender<Waiting>,
    metrics: Arc<BatchMetrics>,
}

/// Counts a request in `waiting` until it has its answer or gives up.
struct Counted(Arc<BatchMetrics>);

impl Counted {
    fn new(metrics: &Arc<BatchMetrics>) -> Counted {
        metrics.waiting.inc();
        Counted(metrics.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.waiting.dec();
    }
}

impl BatchSigner {
    /// Starts the signing task on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle, metrics: Arc<BatchMetrics>) -> BatchSigner {
        // Bounded so that a stalled key pushes back on the requests (each
        // still bounded by the proxy's concurrency limits and the key's
        // deadline) instead of growing a queue.
        let (queue, requests) = mpsc::channel(4 * MAX_BATCH);
        runtime.spawn(run(requests, metrics.clone()));
        BatchSigner { queue, metrics }
    }

    /// Waits for the batch that signs `leaf` (the request's
    /// [`kakunin_signer::httpsig::UnsignedRequest::leaf_hash`]) with `key`,
    /// asked for `scheme`.
    pub async fn sign(
        &self,
        key: Arc<dyn KeyBackend>,
        scheme: SignatureScheme,
        leaf: Vec<u8>,
    ) -> Result<Share, ProxyError> {
        let _waiting = Counted::new(&self.metrics);
        let gone = || ProxyError::signer_unavailable("the batch signing task has stopped");
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting {
                key,
                scheme,
                leaf,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(mut requests: mpsc::Receiver<Waiting>, metrics: Arc<BatchMetrics>) {
    let remote_slots = Arc::new(Semaphore::new(REMOTE_BATCHES_IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        // Every request task that is ready now runs to its queueing before
        // this one resumes: that is the whole of the batching, and costs a
        // lone request one pass of the scheduler.
        tokio::task::yield_now().await;
        let remote = first.key.locality() != Locality::InProcess;
        if remote {
            gather(&requests, tokio::task::yield_now).await;
        }
        // A remote key's batch waits for a free slot before it closes, so
        // that what arrives meanwhile joins it.
        let slot = if remote {
            match remote_slots.clone().acquire_owned().await {
                Ok(slot) => Some(slot),
                Err(_) => return, // never closed
            }
        } else {
            None
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(waiting) => batch.push(waiting),
                Err(_) => break,
            }
        }
        let metrics = metrics.clone();
        let signing = async move {
            // A rotation can put two keys in one batch: each key signs its
            // own requests.
            while let Some(key) = batch.first().map(|w| w.key.clone()) {
                let (same, rest) = batch.drain(..).partition(|w| Arc::ptr_eq(&w.key, &key));
                batch = rest;
                metrics.size.observe(same.len() as f64);
                sign_group(key, same).await;
            }
            drop(slot);
        };
        // A key in memory signs here, on the runtime's thread, one batch
        // after another (the CPU is the limit, and the next batch gathers
        // meanwhile). A remote key's call runs beside the next batch's.
        if remote {
            drop(tokio::spawn(signing));
        } else {
            signing.await;
        }
    }
}

/// A remote key's batch takes further passes of the scheduler while the
/// last one brought more requests (`GATHER_PASSES` in all at most, and not
/// past a full batch). After a batch is answered, its agents' next requests
/// come back over several turns of the event loop; a pass costs
/// microseconds against a round trip of milliseconds, and every request it
/// adds saves a share of a call to the key's quota. Measured with the KMS
/// stand-in: ×1.11 throughput, ×0.87 CPU per request. A key in memory does
/// not gather: there the passes cost about what the larger batches save
/// (bench/README.md).
async fn gather<T, P, F>(requests: &mpsc::Receiver<T>, mut pass: P)
where
    P: FnMut() -> F,
    F: std::future::Future<Output = ()>,
{
    let mut queued = requests.len();
    for _ in 1..GATHER_PASSES {
        // `queued` waits beside the first request, which is not counted.
        if queued == 0 || queued + 1 >= MAX_BATCH {
            return;
        }
        pass().await;
        let now = requests.len();
        if now == queued {
            return;
        }
        queued = now;
    }
}

async fn sign_group(key: Arc<dyn KeyBackend>, group: Vec<Waiting>) {
    let Some(scheme) = group.first().map(|w| w.scheme) else {
        return;
    };
    let alg = SigAlg::for_key(key.algorithm());
    let (leaves, replies): (Vec<_>, Vec<_>) = group.into_iter().map(|w| (w.leaf, w.reply)).unzip();
    let Some(tree) = MerkleTree::new(alg, leaves) else {
        return; // 1..=MAX_BATCH requests, by the loop above
    };
    let signed = crate::signing::key_signature(key.clone(), scheme, &tree.signed_message())
        .await
        .and_then(|der| {
            BatchSignature::new(key.as_ref(), alg, der).map_err(|e| {
                ProxyError::signer_unavailable(format!("the batch signature is unusable: {e}"))
            })
        });
    match signed {
        Ok(signature) => {
            let signature = Arc::new(signature);
            for (index, reply) in replies.into_iter().enumerate() {
                let share = tree
                    .proof(index)
                    .map(|proof| Share {
                        signature: signature.clone(),
                        proof,
                    })
                    .ok_or_else(|| {
                        ProxyError::signer_unavailable("no proof for the request's leaf")
                    });
                // A request whose agent hung up has nobody to answer.
                let _ = reply.send(share);
            }
        }
        Err(err) => {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `gather` over a queue that holds `queued` requests, where pass
    /// `i` brings `arrivals[i]` more (none past the list's end). Returns
    /// the passes it took.
    async fn passes(queued: usize, arrivals: &[usize]) -> usize {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        for _ in 0..queued {
            tx.try_send(()).unwrap();
        }
        let mut taken = 0;
        gather(&rx, || {
            for _ in 0..arrivals.get(taken).copied().unwrap_or(0) {
                tx.try_send(()).unwrap();
            }
            taken += 1;
            std::future::ready(())
        })
        .await;
        taken
    }

    #[tokio::test]
    async fn a_remote_batch_gathers_while_requests_keep_coming() {
        // A lone request goes at once.
        assert_eq!(passes(0, &[5]).await, 0);
        // One pass brings two, the next none: the batch closes there.
        assert_eq!(passes(1, &[2, 0, 4]).await, 2);
        // Requests that never stop coming do not hold it open.
        assert_eq!(passes(1, &[1; 10]).await, GATHER_PASSES - 1);
        // A batch that is full with the first request does not wait, and
        // one that fills up while gathering stops.
        assert_eq!(passes(MAX_BATCH - 1, &[1]).await, 0);
        assert_eq!(passes(MAX_BATCH - 3, &[2, 5]).await, 1);
    }
}
