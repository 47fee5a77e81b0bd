//! Graceful shutdown. On SIGTERM or SIGINT the server first drains: `/health/ready` answers `UNAVAILABLE` at
//! once, so that load balancers take the node out, while every request is still served, each answer closing
//! its connection so that kept-alive clients reconnect elsewhere. After `http.shutdown_drain_seconds` the
//! [gates](Gates) shut, so that the kernel completes no new connection, the listeners close [`GATE_SETTLE`]
//! later, and requests in flight get `http.shutdown_timeout_seconds` to finish.
//!
//! Without the drain a load balancer would go on sending requests to a closed port until its next health
//! check; without `Connection: close` a client could send a request on an idle kept-alive connection just as
//! the server closes it, and see it fail; without the gates the close would reset connections the kernel had
//! completed but the server not yet taken in.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::ServerHandle;

use crate::http::listeners::Gates;
use crate::settings::HttpSettings;

/// How long the closed gates leave the server to take in the connections the kernel completed before they
/// closed (handshakes under way need one round trip), before the listeners close.
pub const GATE_SETTLE: Duration = Duration::from_millis(250);

/// Whether the server is draining; shared by every worker through `AppState`.
#[derive(Debug, Default)]
pub struct Drain {
    started: AtomicBool,
}

impl Drain {
    /// A server that is not draining.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// Starts draining; whether this call started it.
    pub fn start(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    /// Whether the server is draining (or has stopped).
    pub fn is_draining(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

/// Drains for `http.shutdown_drain_seconds` (or until `cut_short` completes), then shuts `gates` and closes
/// the listeners, and waits for the requests in flight, at most `http.shutdown_timeout_seconds` (the server's
/// own setting).
pub async fn drain_and_stop(
    handle: &ServerHandle,
    drain: &Drain,
    settings: &HttpSettings,
    gates: Gates,
    cut_short: impl Future<Output = ()>,
) {
    drain.start();
    let period = Duration::from_secs(settings.shutdown_drain_seconds);
    log::info!(
        drain_seconds = settings.shutdown_drain_seconds;
        "shutdown: draining: /health/ready answers UNAVAILABLE, requests are still served and their connections \
         closed"
    );
    tokio::select! {
        () = tokio::time::sleep(period) => {}
        () = cut_short => log::info!("shutdown: drain cut short"),
    }
    log::info!("shutdown: drain over; new connections go unanswered");
    gates.shut();
    tokio::time::sleep(GATE_SETTLE).await;
    log::info!(
        timeout_seconds = settings.shutdown_timeout_seconds;
        "shutdown: closing the listeners; requests in flight have until the timeout to finish"
    );
    // `stop` sends its command when called: the server's own copies of the listeners close now, and these
    // must not keep the sockets open.
    let stopped = handle.stop(true);
    drop(gates);
    stopped.await;
}

/// On the first signal, drains and stops the server; a second signal ends the drain at once.
pub async fn stop_on(
    mut signals: Signals,
    handle: ServerHandle,
    drain: std::sync::Arc<Drain>,
    settings: HttpSettings,
    gates: Gates,
) {
    let name = signals.next().await;
    log::info!(signal = name; "shutdown: signal received");
    let again = async {
        let name = signals.next().await;
        log::info!(signal = name; "shutdown: signal received again");
    };
    drain_and_stop(&handle, &drain, &settings, gates, again).await;
}

/// The signals that stop the server: SIGTERM and SIGINT (Ctrl-C elsewhere).
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    terminate: actix_web::rt::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: actix_web::rt::signal::unix::Signal,
}

impl Signals {
    /// Replaces the signals' default action (ending the process) with a queue read by [`stop_on`]; call it
    /// inside the runtime, before serving, so that no signal can end the server abruptly after it answered.
    #[cfg(unix)]
    pub fn listen() -> std::io::Result<Signals> {
        use actix_web::rt::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Nothing to register ahead: Ctrl-C is caught when [`stop_on`] waits for it.
    #[cfg(not(unix))]
    pub fn listen() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    /// The next signal's name.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// The next Ctrl-C.
    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = actix_web::rt::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
