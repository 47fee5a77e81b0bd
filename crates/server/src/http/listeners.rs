//! The sockets a server answers on: the main listener and, with `http.management_bind`, a management listener
//! that alone serves `/metrics` and the health checks, so that they can stay off the public network.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::ServiceRequest;
use anyhow::Context as _;
use crm_auth_core::routes;

use crate::settings::Settings;

/// The routes the management listener serves, and the main listener then does not.
pub const MANAGEMENT_ROUTES: [&str; 3] = [routes::METRICS, routes::HEALTH_LIVE, routes::HEALTH_READY];

/// The listeners of one server.
#[derive(Debug)]
pub struct Listeners {
    /// The API, and the operator routes when there is no management listener.
    pub main: TcpListener,
    /// Only [`MANAGEMENT_ROUTES`], when they are served apart.
    pub management: Option<TcpListener>,
}

impl Listeners {
    /// Binds `http.bind` and, if set, `http.management_bind`.
    pub fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
        let main = settings.bind_addr()?;
        let main = TcpListener::bind(main).with_context(|| format!("http.bind: cannot listen on {main}"))?;
        let management = settings
            .management_addr()?
            .map(|addr| {
                TcpListener::bind(addr)
                    .with_context(|| format!("http.management_bind: cannot listen on {addr}"))
            })
            .transpose()?;
        Ok(Listeners { main, management })
    }

    /// Handles on these listeners' sockets through which shutdown refuses new connections before the server
    /// closes the listeners (see [`Gates`]).
    pub fn gates(&self) -> std::io::Result<Gates> {
        let listeners = std::iter::once(&self.main).chain(&self.management);
        Ok(Gates(
            listeners
                .map(|l| l.try_clone().map(socket2::Socket::from))
                .collect::<std::io::Result<_>>()?,
        ))
    }
}

/// Everything on one listener, as without `http.management_bind`.
impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Listeners {
        Listeners {
            main,
            management: None,
        }
    }
}

/// Which listener serves which routes; decided per request from the address of the listener that accepted
/// its connection, since one actix server (one set of workers, one shutdown) runs both. The default serves
/// everything on every listener.
#[derive(Clone, Copy, Debug, Default)]
pub struct Split {
    /// The management listener's address, if there is one.
    management: Option<SocketAddr>,
}

impl Split {
    /// The split for these listeners.
    pub fn of(listeners: &Listeners) -> std::io::Result<Split> {
        Ok(Split {
            management: listeners
                .management
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        })
    }

    /// Whether the listener `req` arrived on serves `route` (the matched pattern, `None` for no route): the
    /// management routes on the management listener only, everything else on the main listener only.
    pub fn serves(&self, req: &ServiceRequest, route: Option<&str>) -> bool {
        let Some(management) = self.management else {
            return true;
        };
        let on_management = req.app_config().local_addr() == management;
        let management_route = route.is_some_and(|route| MANAGEMENT_ROUTES.contains(&route));
        on_management == management_route
    }
}

/// Copies of the listening sockets, held by shutdown until the server closes the originals.
///
/// Closing a listening socket resets every connection the kernel has completed but the server not yet
/// accepted, and the server drops those it accepted but had not started to serve: a client that connected a
/// moment before the close sees its request fail. So shutdown first [closes the gates](Gates::shut): the
/// kernel stops answering new connection attempts (their SYNs are dropped; the client retries and, the
/// listener gone by then, is refused, which tells it the request never started), while handshakes already
/// under way complete and are served. Only once the queue has been taken in does the server close.
#[derive(Debug)]
pub struct Gates(Vec<socket2::Socket>);

impl Gates {
    /// No gates: the listeners close at once (servers in tests).
    pub fn none() -> Gates {
        Gates(Vec::new())
    }

    /// Stops the kernel from starting new connections on the listeners, with a socket filter that drops
    /// packets carrying SYN without ACK (the first packet of a connection) and lets every other through.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn shut(&self) {
        use socket2::SockFilter;
        // Classic BPF over the TCP header (where a TCP socket's filter starts): byte 13 holds the flags.
        const LOAD_FLAGS: SockFilter = SockFilter::new(0x30, 0, 0, 13); // ldb [13]
        const SYN_AND_ACK: SockFilter = SockFilter::new(0x54, 0, 0, 0x12); // and #0x12
        const IF_SYN_ALONE: SockFilter = SockFilter::new(0x15, 0, 1, 0x02); // jeq #0x02, next, skip one
        const DROP: SockFilter = SockFilter::new(0x06, 0, 0, 0); // ret #0
        const KEEP: SockFilter = SockFilter::new(0x06, 0, 0, u32::MAX); // ret #-1: the whole packet
        for socket in &self.0 {
            if let Err(e) = socket.attach_filter(&[LOAD_FLAGS, SYN_AND_ACK, IF_SYN_ALONE, DROP, KEEP]) {
                log::warn!(error:% = e; "shutdown: cannot refuse new connections before closing the listener");
            }
        }
    }

    /// Nothing to do where socket filters are not available: the listeners close at once.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn shut(&self) {}
}
