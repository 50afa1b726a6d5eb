//! Protocol switches (WebSocket and other `Upgrade`s): after both sides agree on `101`, the
//! two connections are spliced byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::response::InFlight;

/// Splices the downstream and upstream connections once both have switched. The request
/// stays in flight until either side closes.
pub fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
}
