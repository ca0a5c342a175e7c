//! One client's session: admission, the mux, the control stream, and clean-up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::RwLock;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use tunnel_mux::{settle, Incoming, LaneSlot, Lanes, Mode, MuxStream};
use tunnel_proto::handshake::{Phase, ServerEvent, ServerHandshake};
use tunnel_proto::{Hello, Message, VisitorSpec, Welcome};
use tunnel_transport::{
    drive, drive_within, Established, Transport, TransportError, TransportKind,
};

use crate::auth_failures::{self, Verdict};
use crate::credentials::certificate::CertRefusal;
use crate::handshake::{self, HandshakeError};
use crate::lane::{self, Lane};
use crate::metrics::EventKind;
use crate::registry::{ProxyKey, Refused};
use crate::stream_budget::StreamBudget;
use crate::{register, visitor, ServerError, Shared};

/// Frames on the control stream carry JSON registrations; they are bounded all the same.
pub(crate) const CONTROL_MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;

/// What the rest of the server knows about a live session.
pub(crate) struct SessionRecord {
    pub id: u64,
    pub client_id: String,
    pub instance: [u8; 16],
    pub peer: SocketAddr,
    /// Cancelled when the session ends, is replaced, or the server shuts down; its extra
    /// connections end with it.
    pub cancel: CancellationToken,
    /// The connections carrying the session's streams.
    pub lanes: Lanes,
    /// Its streams: counted in all, per proxy, and those still reading their header.
    budget: StreamBudget,
    pub connected_at: SystemTime,
    pub transport: TransportKind,
    /// The visitors the client registered (for the stats endpoint).
    pub visitors: RwLock<Vec<VisitorSpec>>,
    /// What the session holds in the cluster registry (cluster mode, once registered).
    pub cluster: parking_lot::Mutex<Option<crate::cluster::Held>>,
    /// The client was asked to reconnect (a drain, or a fence); its new session may come
    /// back here, while this one still carries streams (make-before-break).
    pub(crate) asked_to_move: std::sync::atomic::AtomicBool,
}

impl SessionRecord {
    /// Streams of this session open now, on all its connections.
    pub(crate) fn open_streams(&self) -> usize {
        self.budget.open()
    }

    /// Count one more stream of this session on `lane` (where the client opened it). The
    /// application-level cap keeps yamux's own limit (which would end the whole connection)
    /// out of reach, and gives the offender a readable error instead.
    pub(crate) fn begin_stream_on(
        self: &Arc<Self>,
        lane: Arc<Lane>,
    ) -> Result<StreamSlot, ServerError> {
        self.budget.take(None, || 0)?;
        Ok(self.slot(lane.slot(), None))
    }

    /// Count one more stream serving `proxy` (one of this session's), on the least loaded
    /// connection, unless the session is at `max_streams_per_client` or the proxy past its
    /// fair share (see [`crate::stream_budget`]); `proxies` counts the session's proxies.
    pub(crate) fn begin_stream_for(
        self: &Arc<Self>,
        proxy: &ProxyKey,
        proxies: impl FnOnce() -> usize,
    ) -> Result<StreamSlot, ServerError> {
        self.budget.take(Some(proxy), proxies)?;
        Ok(self.slot(self.lanes.place(), Some(proxy.clone())))
    }

    fn slot(self: &Arc<Self>, lane: LaneSlot, proxy: Option<ProxyKey>) -> StreamSlot {
        StreamSlot {
            session: self.clone(),
            lane,
            proxy,
        }
    }

    /// Count one more stream of this client still reading its header, unless the client
    /// already has `per_client` or all clients together hold every `global` permit: a
    /// hostile client must not make the server hold a partial header on each of its streams.
    pub(crate) fn begin_header(
        self: &Arc<Self>,
        global: &Arc<Semaphore>,
        per_client: usize,
    ) -> Result<HeaderSlot, ServerError> {
        self.budget
            .begin_header(per_client)
            .map_err(|held| ServerError::HeadersPerClient { held })?;
        match global.clone().try_acquire_owned() {
            Ok(permit) => Ok(HeaderSlot {
                session: self.clone(),
                _permit: permit,
            }),
            Err(_) => {
                self.budget.end_header();
                Err(ServerError::HeadersServerWide)
            }
        }
    }

    /// Close every connection of the session and abort its streams now.
    fn close_all(&self) {
        self.lanes.close_all();
    }
}

/// One counted stream of a session, and the connection that carries it; uncounted on drop.
pub(crate) struct StreamSlot {
    session: Arc<SessionRecord>,
    lane: LaneSlot,
    proxy: Option<ProxyKey>,
}

impl StreamSlot {
    pub(crate) fn lane(&self) -> &Arc<Lane> {
        self.lane.lane()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.session.budget.give_back(self.proxy.as_ref());
    }
}

/// One stream of a session still reading its header; uncounted on drop.
pub(crate) struct HeaderSlot {
    session: Arc<SessionRecord>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for HeaderSlot {
    fn drop(&mut self) {
        self.session.budget.end_header();
    }
}

/// Serve one accepted TCP connection from handshake to disconnect. `own_address`: the TCP
/// peer is the client itself (not the proxy in front of `ws_bind`), so it gets a per-source
/// share of the pre-authentication slots.
pub(crate) async fn handle_connection(
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    tcp: TcpStream,
    peer: SocketAddr,
    own_address: bool,
) {
    let refusals = &shared.metrics.preauth_refused;
    if shared.auth_failures.is_blocked(peer.ip(), Instant::now()) {
        // Still guessing keys: not worth a TLS handshake. Logged when the block began.
        refusals.blocked.fetch_add(1, Ordering::Relaxed);
        shared.metrics.event(
            EventKind::LoginRefused,
            peer.ip(),
            None,
            "address blocked after repeated wrong auth keys",
        );
        return;
    }
    let permit = match shared
        .pre_auth
        .admit(own_address.then_some(peer.ip()), refusals)
    {
        Ok(p) => p,
        Err(turned) => {
            match shared.pre_auth.should_warn() {
                Some(more) => warn!(
                    %peer,
                    "connection closed before TLS: {turned}{more}"
                ),
                None => debug!(%peer, "connection closed before TLS: {turned}"),
            }
            return;
        }
    };
    // An idle connection gives its slot back after first_byte_timeout, not handshake_timeout.
    let mut first = [0u8];
    let first_byte = tokio::time::timeout(shared.cfg.first_byte_timeout(), tcp.peek(&mut first));
    let first_byte = tokio::select! {
        r = first_byte => r,
        () = shared.shutdown.cancelled() => return,
    };
    match first_byte {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return, // closed (or failed) without a word
        Err(_) => {
            refusals.first_byte_timeout.fetch_add(1, Ordering::Relaxed);
            debug!(
                %peer,
                "closed: sent nothing within {}s (first_byte_timeout)",
                shared.cfg.first_byte_timeout
            );
            return;
        }
    }
    tunnel_transport::tune_tcp(&tcp);
    let mut nonce = [0u8; 32];
    if let Err(e) = tunnel_transport::fill_random(&mut nonce) {
        warn!(%peer, "cannot draw a random nonce: {e}");
        return;
    }
    // The client's address as the transport reports it: behind a proxy on ws_bind, the one the
    // proxy forwarded rather than the proxy's own (which must not collect others' failures).
    let mut client_addr = peer;
    // Which phase a timeout cut: TLS (with the HTTP/2 or WebSocket request) or authentication.
    let mut authenticating = false;
    let handshake = async {
        let mut est = transport.accept(tcp, peer).await?;
        authenticating = true;
        client_addr = est.peer;
        if est.peer != peer
            && shared
                .auth_failures
                .is_blocked(est.peer.ip(), Instant::now())
        {
            return Err(HandshakeError::Blocked);
        }
        let binding = est.binding.map(|b| b.to_vec()).unwrap_or_default();
        let mut machine = ServerHandshake::new(
            shared.credentials.shared_key().unwrap_or_default(),
            nonce,
            &binding,
        );
        let (hello, login) = handshake::authenticate(
            &mut est.stream,
            &mut machine,
            &shared.credentials,
            &shared.auth_failures,
            est.peer.ip(),
            est.peer_cert.as_ref(),
            shared.cfg.require_client_cert,
        )
        .await?;
        Ok::<_, HandshakeError>((est, machine, hello, login))
    };
    let started = Instant::now();
    // Boxed, like the other short-lived big futures of a session (`accept_first`,
    // `register::apply`): this task lives as long as the session, and an async fn's future is
    // sized for its largest await state, so inline they would cost every idle session their
    // size (about 1 KiB in all) for its whole life.
    let handshake = Box::pin(tokio::time::timeout(
        shared.cfg.handshake_timeout(),
        handshake,
    ));
    let result = tokio::select! {
        r = handshake => r,
        // Shutting down: a connection still in its handshake has no stream to drain, and
        // waiting out its handshake_timeout would hold the whole shutdown up.
        () = shared.shutdown.cancelled() => {
            debug!(%peer, "closed during its handshake: the server is shutting down");
            return;
        }
    };
    drop(permit);
    let peer = client_addr;
    match result {
        Ok(Ok((est, machine, hello, login))) => {
            shared
                .metrics
                .observe_handshake(started.elapsed(), est.resumed);
            run(shared, est, machine, hello, login).await
        }
        Ok(Err(HandshakeError::Certificate { id, refusal })) => {
            // Anyone can claim an id without a certificate; only a holder of one of our
            // certificates gets further.
            let stranger = matches!(
                refusal,
                CertRefusal::Missing | CertRefusal::CertificateOnly(_)
            );
            crate::credentials::audit::refused_certificate(
                &shared,
                peer.ip(),
                Some(&id),
                &refusal,
                stranger,
            );
        }
        Ok(Err(HandshakeError::Transport(TransportError::ClientCertificate { reason }))) => {
            crate::credentials::audit::refused_certificate(&shared, peer.ip(), None, &reason, true);
        }
        Ok(Err(HandshakeError::Blocked)) => {
            // Logged when the block began.
            let n = &shared.metrics.auth_refused_blocked;
            n.fetch_add(1, Ordering::Relaxed);
            shared.metrics.event(
                EventKind::LoginRefused,
                peer.ip(),
                None,
                "address blocked after repeated wrong auth keys",
            );
        }
        Ok(Err(HandshakeError::Rate { warn })) => {
            shared
                .metrics
                .auth_refused_rate
                .fetch_add(1, Ordering::Relaxed);
            shared.metrics.event(
                EventKind::LoginRefused,
                peer.ip(),
                None,
                "too many wrong auth keys server-wide (max_auth_failures_per_second)",
            );
            if warn {
                warn!(
                    %peer,
                    "more than {} wrong auth keys in the last second server-wide: refusing \
                     logins for a moment (max_auth_failures_per_second)",
                    shared.cfg.max_auth_failures_per_second
                );
            }
        }
        Ok(Err(HandshakeError::BadKey(verdict))) => {
            shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            let reason = if matches!(verdict, Verdict::Blocked) {
                "wrong auth key; address now blocked for a while"
            } else {
                "wrong auth key"
            };
            shared
                .metrics
                .event(EventKind::AuthFailure, peer.ip(), None, reason);
            match verdict {
                Verdict::Log => warn!(%peer, "client rejected: wrong auth key"),
                Verdict::Quiet => debug!(%peer, "client rejected: wrong auth key"),
                Verdict::Blocked => warn!(
                    %peer,
                    "{} wrong auth keys from this address; refusing it for {}s",
                    auth_failures::MAX_FAILURES,
                    auth_failures::WINDOW.as_secs()
                ),
            }
        }
        Ok(Err(HandshakeError::SharedKeyForOwnId(id))) => {
            crate::credentials::audit::refused_shared_key(&shared, peer.ip(), &id);
        }
        Ok(Err(e)) => info!(%peer, "handshake failed: {e}"),
        Err(_) => info!(
            %peer,
            "handshake timed out after {}s during {}; closed",
            shared.cfg.handshake_timeout,
            if authenticating { Phase::Authentication } else { Phase::Tls }
        ),
    }
}

/// Not an `async fn`: one would hold its arguments and the span a second time beside the
/// instrumented block that owns them, for the session's whole life.
fn run(
    shared: Arc<Shared>,
    est: Established,
    mut machine: ServerHandshake,
    hello: Hello,
    login: crate::credentials::certificate::Login,
) -> impl Future<Output = ()> {
    let id = shared.next_connection_id();
    let span = info_span!("session", id, client = %hello.client_id, peer = %est.peer);
    async move {
        let Established {
            mut stream,
            peer,
            transport,
            ..
        } = est;
        let hb = shared.cfg.heartbeat();
        let welcome = Welcome {
            connection_id: id,
            heartbeat_ms: u32::try_from(hb.interval.as_millis()).unwrap_or(u32::MAX),
        };
        machine.admit(handshake::id_state(&shared, &hello), welcome);
        match drive(&mut stream, &mut machine).await {
            Ok(_welcomed) => {}
            Err(TransportError::Setup(e)) => {
                warn!("client rejected: {e}");
                return;
            }
            Err(e) => {
                info!("client left before the session started: {e}");
                return;
            }
        }
        let (control, mut incoming) = tunnel_mux::start(stream, Mode::Server, &shared.mux_config());
        let first = tokio::select! {
            // Boxed: short-lived (see `handle_connection`).
            s = Box::pin(accept_first(&shared, &mut incoming, &mut machine)) => s,
            () = shared.hard_stop.cancelled() => return,
        };
        let ctrl = match first {
            Ok((s, ServerEvent::JoinRequested(target))) => {
                return Box::pin(lane::join(
                    &shared, id, &hello, control, incoming, s, machine, target,
                ))
                .await;
            }
            Ok((s, ServerEvent::Control)) => s,
            Ok((_, other)) => {
                info!("no control stream: the setup went on to {other:?}");
                control.close();
                return;
            }
            Err(e) => {
                info!("no control stream: {e}");
                control.close();
                return;
            }
        };
        let (first_lane, mut channel) = lane::accept(&shared, id, control, ctrl);
        let session = Arc::new(SessionRecord {
            id,
            client_id: hello.client_id.clone(),
            instance: hello.instance,
            peer,
            cancel: shared.hard_stop.child_token(),
            lanes: Lanes::new(first_lane, shared.cfg.max_connections_per_client),
            budget: StreamBudget::new(crate::credentials::max_streams(&shared, &hello.client_id)),
            connected_at: SystemTime::now(),
            transport,
            visitors: RwLock::new(Vec::new()),
            cluster: parking_lot::Mutex::new(None),
            asked_to_move: std::sync::atomic::AtomicBool::new(false),
        });
        let isolated = shared.isolated.load(std::sync::atomic::Ordering::Acquire);
        if shared.logins.is_cancelled() || isolated {
            // Draining, or cut off from the registry its peers reach: the client was told
            // to go elsewhere (or came as that began). Turned away before `install`, which
            // would replace a same-instance session that still serves.
            let why = if isolated { ISOLATED } else { DRAINING };
            info!("client turned away: {why}");
            let msg = Message::Rejected(tunnel_proto::Rejected::new(
                tunnel_proto::RejectCode::Internal,
                why,
            ));
            if channel.sender.send(msg).await.is_ok() {
                let _ = tokio::time::timeout(REFUSAL_GRACE, &mut channel.ended).await;
            }
            channel.ended.abort();
            session.close_all();
            return;
        }
        if let Err(e) = install(&shared, &session) {
            warn!("client rejected: {e}");
            Box::pin(tell_refused(&mut channel, &rejection(&e))).await;
            channel.ended.abort();
            session.close_all();
            return;
        }
        info!(%transport, "client connected");
        let shared_key = login.shared_key.clone();
        shared.credentials.logged_in(&session.client_id, login);
        crate::credentials::audit::login(&shared, &session);
        if shared_key.is_some_and(|k| shared.credentials.shared_key().as_ref() != Some(&k)) {
            // A reload changed the shared key after this login checked it, and may have
            // looked at the sessions before this one was installed.
            let why = crate::rules::SHARED_KEY_CHANGED;
            crate::credentials::reload::revoke(&shared, &session, &[], why);
        }
        let end = serve(&shared, &session, incoming, channel).await;
        // Not cut by us (replaced, or the server stopping) but closed by the peer or lost.
        let by_peer = !session.cancel.is_cancelled();
        let released = cleanup(&shared, &session, by_peer).await;
        crate::cluster::login::release_session(&shared, &session);
        let client = &session.client_id;
        match end {
            // A client that shuts down says goodbye: nothing failed.
            End::Goodbye => info!(proxies_released = released, "client {client} disconnected"),
            End::Other(why) => {
                info!(
                    proxies_released = released,
                    "client {client} disconnected: {why}"
                );
            }
        }
    }
    .instrument(span)
}

/// Record the session under its client id; a stale session of the same instance hands its
/// proxies over in the same step, so public ports keep serving.
///
/// The registry applies the admission rule again here, atomically. Refused (another process
/// took the id, or the server filled up, since the machine admitted the client):
/// [`ServerError::IdTakenMeanwhile`] or [`ServerError::FullMeanwhile`], for the operator's log;
/// [`rejection`] is what the client is told.
fn install(shared: &Shared, session: &Arc<SessionRecord>) -> Result<(), ServerError> {
    let installed = shared
        .registry
        .install_session(session.clone(), shared.cfg.max_clients)
        .map_err(|refused| match refused {
            Refused::IdInUse { .. } => ServerError::IdTakenMeanwhile {
                id: session.client_id.clone(),
            },
            Refused::Full { clients } => ServerError::FullMeanwhile { clients },
        })?;
    if let Some(old) = installed.replaced {
        if old.asked_to_move.load(std::sync::atomic::Ordering::Acquire) {
            // The client moved as asked and came back here: the old session is alive and
            // may carry users' streams; they finish there (its proxies are this one's now).
            info!(
                old_session = old.id,
                proxies = installed.moved,
                "takes over from the session that was asked to move"
            );
            retire(shared, &old);
        } else {
            info!(
                old_session = old.id,
                proxies = installed.moved,
                "replaces a stale session of the same client"
            );
            old.cancel.cancel();
            old.close_all();
        }
    }
    Ok(())
}

/// The error the handshake machine would have turned the client away with, for an
/// [`install`] refused after it admitted the client.
fn rejection(e: &ServerError) -> tunnel_proto::HandshakeError {
    match e {
        ServerError::IdTakenMeanwhile { id } => {
            tunnel_proto::HandshakeError::IdInUse { id: id.clone() }
        }
        ServerError::FullMeanwhile { clients } => {
            tunnel_proto::HandshakeError::Full { clients: *clients }
        }
        // `install` refuses with nothing else; the machine's nearest words for "not now".
        _ => tunnel_proto::HandshakeError::Full { clients: 0 },
    }
}

/// What a client logging in to a server cut off from the registry reads (see
/// `cluster::fence`); it retries, on another server if it can.
pub(crate) const ISOLATED: &str =
    "this server cannot reach the cluster registry; connect to another server";

/// What a client logging in during a drain reads; it retries, on another server if it can.
pub(crate) const DRAINING: &str =
    "this server is draining (shutting down); connect to another server";

/// How often a retiring session looks whether its streams have finished.
const RETIRE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Close a session whose client opened a newer one on another server (make-before-break):
/// its proxies leave the local registry now, so no new stream comes here, while the streams
/// it carries finish, for at most `shutdown_grace`; then it closes.
pub(crate) fn retire(shared: &Shared, session: &Arc<SessionRecord>) {
    let released = shared
        .registry
        .release_except(session.id, &std::collections::HashSet::new());
    debug!(
        session = session.id,
        proxies = released.len(),
        open_streams = session.open_streams(),
        "retiring: no new streams; closing once the open ones finish"
    );
    let deadline = tokio::time::Instant::now() + shared.cfg.shutdown_grace;
    let session = session.clone();
    let task = async move {
        while session.open_streams() > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = session.cancel.cancelled() => return,
                () = tokio::time::sleep(RETIRE_POLL) => {}
            }
        }
        session.cancel.cancel();
    };
    shared.tasks.spawn(task.in_current_span());
}

/// How long a client refused at install time gets to read why before the connection closes.
const REFUSAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Tell a client the registry refused at install time (its Welcome and control stream are
/// already through) with the `Rejected` the machine would have sent at admission; it reads it
/// in place of its registration verdict. Best effort: waits briefly for the client to go.
async fn tell_refused(
    channel: &mut tunnel_mux::ControlChannel,
    refusal: &tunnel_proto::HandshakeError,
) {
    let Some(code) = refusal.reject_code() else {
        return;
    };
    let msg = Message::Rejected(tunnel_proto::Rejected::new(code, refusal.wire_reason()));
    if channel.sender.send(msg).await.is_ok() {
        let _ = tokio::time::timeout(REFUSAL_GRACE, &mut channel.ended).await;
    }
}

/// How a session ended.
pub(crate) enum End {
    /// The client closed it on purpose (it shut down).
    Goodbye,
    /// Anything else, with the reason: lost, timed out, closed by the server.
    Other(String),
}

impl End {
    /// How `channel` ended, once its `ended` has resolved into `why`.
    pub(crate) fn of(
        channel: &tunnel_mux::ControlChannel,
        why: Result<String, tokio::task::JoinError>,
    ) -> End {
        match why {
            Ok(_) if channel.closed_by_peer() => End::Goodbye,
            Ok(why) => End::Other(why),
            Err(e) => End::Other(e.to_string()),
        }
    }

    /// When the connection closed under the streams: the control reader has seen it too, or
    /// is about to, and knows whether the peer said goodbye. A second is plenty for that.
    pub(crate) async fn after_close(channel: &mut tunnel_mux::ControlChannel) -> End {
        const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);
        match tokio::time::timeout(SETTLE, &mut channel.ended).await {
            Ok(why) => End::of(channel, why),
            Err(_) => End::Other("the connection closed".to_string()),
        }
    }
}

async fn serve(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    mut incoming: Incoming,
    mut channel: tunnel_mux::ControlChannel,
) -> End {
    let end = loop {
        tokio::select! {
            () = session.cancel.cancelled() => break End::Other("closed by the server".into()),
            why = &mut channel.ended => break End::of(&channel, why),
            msg = channel.inbox.recv() => match msg {
                Some(Message::Register(req)) => {
                    // Boxed: rare and short-lived (see `handle_connection`).
                    let reply = match Box::pin(register::apply(shared, session, req)).await {
                        Ok(reply) => Message::RegisterReply(reply),
                        // Refused as a whole (cluster mode): the client reads why in place
                        // of its verdicts, and the session ends.
                        Err(rejected) => {
                            let why = rejected.reason.clone();
                            if channel.sender.send(Message::Rejected(rejected)).await.is_ok() {
                                let _ = tokio::time::timeout(REFUSAL_GRACE, &mut channel.ended).await;
                            }
                            break End::Other(format!("registration refused: {why}"));
                        }
                    };
                    if channel.sender.send(reply).await.is_err() {
                        break End::after_close(&mut channel).await;
                    }
                }
                // The client's new session (on another server) serves: this one retires.
                Some(Message::Moved) => retire(shared, session),
                Some(other) => {
                    break End::Other(format!("unexpected {} on the control stream", other.name()));
                }
                // The control reader stopped: its reason (a heartbeat timeout, say) is in
                // `ended`, which resolves at once; "closed" alone would hide it.
                None => break End::after_close(&mut channel).await,
            },
            s = incoming.accept() => match s {
                Some(stream) => {
                    let lane = session.lanes.first().clone();
                    let task = visitor::serve_stream(shared.clone(), session.clone(), lane, stream);
                    shared.streams.spawn(task.in_current_span());
                }
                None => break End::after_close(&mut channel).await,
            },
        }
    };
    channel.ended.abort();
    end
}

/// The client's first stream must be a control stream, or ask to join a session; `machine`
/// answers a control stream and reports a join for the caller to answer.
async fn accept_first(
    shared: &Shared,
    incoming: &mut Incoming,
    machine: &mut ServerHandshake,
) -> Result<(MuxStream, ServerEvent), TransportError> {
    let wait = shared.cfg.handshake_timeout();
    let accepted = tokio::time::timeout(wait, incoming.accept())
        .await
        .map_err(|_| tunnel_transport::timed_out(Phase::FirstStream, wait))?;
    let mut s = accepted.ok_or(TransportError::Setup(
        tunnel_proto::HandshakeError::Closed {
            waiting_for: "the first stream",
        },
    ))?;
    let event = drive_within(&mut s, machine, wait).await?;
    Ok((s, event))
}

/// Release everything the session holds. Returns how many proxies it released. With `settle`
/// (the peer closed the session), open streams get a moment to finish before they are cut.
async fn cleanup(shared: &Shared, session: &SessionRecord, by_peer: bool) -> usize {
    session.cancel.cancel();
    // One step (see `install`): a successor of the same client has either taken our
    // proxies over already, leaving none to release, or does not exist.
    let released = shared.registry.release_session(session.id);
    for key in &released {
        debug!(proxy = %key, "proxy released");
    }
    // Ends the muxes first: streams still waiting on them fail at once, finished ones read EOF.
    let lanes = session.lanes.all();
    for lane in &lanes {
        lane.close();
    }
    if by_peer {
        settle(|| session.open_streams() > 0).await;
    }
    for lane in &lanes {
        lane.aborts.abort_all();
    }
    released.len()
}
