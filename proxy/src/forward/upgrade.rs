//! Protocol switches (WebSocket and other `Upgrade`s): after both sides agree on `101`, the
//! two connections are spliced byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::send::in_flight::InFlight;
use crate::upstream::breaker::Admission;
use crate::upstream::http1::Upgraded;

/// Splices the downstream connection, once hyper hands it over, with the upstream one. The
/// request stays in flight until either side closes.
pub fn tunnel(downstream: OnUpgrade, upstream: Upgraded, in_flight: InFlight, admission: Admission) {
    tokio::spawn(async move {
        let _counted = (in_flight, admission);
        let Upgraded { stream: mut up, leftover, guard: _guard } = upstream;
        let mut down = match downstream.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, "downstream upgrade did not complete");
                return;
            }
        };
        // Bytes the upstream sent right after its 101 head belong to the new protocol.
        if !leftover.is_empty()
            && let Err(e) = down.write_all(&leftover).await
        {
            tracing::debug!(error = %e, "upgraded connection closed early");
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
