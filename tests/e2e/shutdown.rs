//! Graceful shutdown: stop accepting, finish what is in flight, exit.

use std::time::Duration;

use crate::harness::{Proxy, backends, get, text};

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let b = backends(1).await;
    let config = format!(
        "[runtime]\ndrain_timeout = \"5s\"\n[[routes]]\nname = \"r\"\nservice = \"s\"\n[[services]]\nname = \"s\"\nendpoints = [{{ address = \"{}\" }}]\n",
        b[0].addr
    );
    let mut proxy = Proxy::start(&config).await;
    let url = proxy.url("/delay/1500");
    let in_flight = tokio::spawn(async move {
        let resp = get(&url).await.expect("in-flight request");
        (resp.status(), text(resp).await)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(&proxy.url("/")).await.is_err(), "new connections are refused while draining");

    let (status, body) = in_flight.await.expect("task");
    assert_eq!(status, 200);
    assert_eq!(body, "backend b0\n");
    let code = proxy.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(code, Some(0), "exit after drain:\n{}", proxy.log());
}
