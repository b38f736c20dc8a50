//! [`FakeDiscord`]: the handle a test holds, and the server thread behind it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::rest;
use crate::state::{Channel, GUILD_TEXT, Out, PUBLIC_THREAD, Shared};
use crate::{Inbound, Options, Posted};

/// A fake Discord on `127.0.0.1` (see the [crate docs](crate) for what it speaks).
///
/// It runs on its own thread with its own tokio runtime, so it keeps serving while a test
/// blocks, whatever runtime the test uses. Dropping it stops the server and drops every
/// socket.
pub struct FakeDiscord {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeDiscord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the options: they hold the token.
        f.debug_struct("FakeDiscord")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeDiscord {
    /// Starts a fake Discord on `127.0.0.1` with a free port; it accepts connections as soon
    /// as this returns.
    ///
    /// # Errors
    /// If the port cannot be bound or the server's runtime or thread cannot start.
    pub async fn start(opts: Options) -> io::Result<FakeDiscord> {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-discord")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(opts, addr.port()));
        let app = Router::new()
            .fallback(rest::handle)
            .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
            .with_state(Arc::clone(&shared));

        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-discord".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => panic!("fake discord: cannot register the listener: {e}"),
                    };
                    // Gateway frames are small: without NODELAY, Nagle would hold them back.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app).into_future() => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels the socket tasks: every connection drops.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(FakeDiscord {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The REST base, `http://127.0.0.1:PORT/api/v10`: the value for `DISCORD_API_URL`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// The gateway url `GET /gateway/bot` returns, `ws://127.0.0.1:PORT`.
    pub fn gateway_url(&self) -> String {
        self.shared.gateway_url()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a text channel to a guild, creating the guild on first use. The current
    /// session, if any, gets GUILD_CREATE for a new guild or CHANNEL_CREATE for a new
    /// channel of a known one.
    pub fn add_guild_channel(&self, guild_id: &str, channel_id: &str) {
        let ch = Channel {
            kind: GUILD_TEXT,
            guild_id: Some(guild_id.to_owned()),
            parent_id: None,
            recipient: None,
        };
        let mut st = self.shared.lock();
        let (new_guild, new_channel) = st.add_channel(guild_id, channel_id, ch);
        if new_guild {
            let guild = st.guild_object(guild_id);
            st.dispatch_current("GUILD_CREATE", &guild);
        } else if new_channel {
            if let Some(obj) = st.channel_object(channel_id) {
                st.dispatch_current("CHANNEL_CREATE", &obj);
            }
        }
    }

    /// Adds a public thread under `parent_id` (added as a text channel if unknown). The
    /// current session, if any, gets THREAD_CREATE (or GUILD_CREATE for a new guild).
    pub fn add_thread(&self, guild_id: &str, parent_id: &str, thread_id: &str) {
        self.add_guild_channel(guild_id, parent_id);
        let ch = Channel {
            kind: PUBLIC_THREAD,
            guild_id: Some(guild_id.to_owned()),
            parent_id: Some(parent_id.to_owned()),
            recipient: None,
        };
        let mut st = self.shared.lock();
        let (_, new_thread) = st.add_channel(guild_id, thread_id, ch);
        if new_thread {
            if let Some(mut obj) = st.channel_object(thread_id) {
                obj["newly_created"] = json!(true);
                st.dispatch_current("THREAD_CREATE", &obj);
            }
        }
    }

    /// The id of the DM channel between the bot and `user_id`, created on first use (the
    /// same one `POST /users/@me/channels` returns).
    pub fn dm_channel_for(&self, user_id: &str) -> String {
        self.shared.lock().dm_channel(user_id)
    }

    /// Dispatches MESSAGE_CREATE for `m` to the current session: straight to its socket
    /// when one is attached, else kept for replay on RESUME; with no current session, held
    /// until the next READY. Returns the new message's id.
    pub fn send_message(&self, m: Inbound) -> String {
        let bot = self.shared.bot_user();
        let mut st = self.shared.lock();
        let d = st.inbound_message(&m, &bot);
        let id = d["id"].as_str().unwrap_or_default().to_owned();
        st.dispatch_message(&self.shared.opts.bot_user_id, d, true);
        id
    }

    /// IDENTIFYs accepted so far (a rejected token or intents does not count).
    pub fn identify_count(&self) -> usize {
        self.shared.lock().identifies
    }

    /// RESUMEs accepted so far (one answered with INVALID_SESSION does not count).
    pub fn resume_count(&self) -> usize {
        self.shared.lock().resumes
    }

    /// RESUMEs refused with INVALID_SESSION (unknown or ended session) so far.
    pub fn refused_resume_count(&self) -> usize {
        self.shared.lock().refused_resumes
    }

    /// Heartbeats (op 1) received so far, over every socket.
    pub fn heartbeat_count(&self) -> usize {
        self.shared.lock().heartbeats
    }

    /// Every message created by `POST /channels/{id}/messages`, in order (a post answered
    /// with an earlier message because of its nonce creates nothing and is not listed).
    pub fn posted(&self) -> Vec<Posted> {
        self.shared.lock().posted.clone()
    }

    /// Every posted message with when the fake created it (after the request was read,
    /// before the response was written), for latency measurements.
    pub fn posted_timed(&self) -> Vec<(Posted, Instant)> {
        let st = self.shared.lock();
        st.posted
            .iter()
            .cloned()
            .zip(st.posted_at.iter().copied())
            .collect()
    }

    /// Blocks until at least `n` messages have been posted; false if `timeout` passed
    /// first. It only blocks the calling thread (the fake serves from its own).
    pub fn wait_for_posted(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.posted.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = match self.shared.posted_signal.wait_timeout(st, left) {
                Ok((st, _)) => st,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// The JSON body of every `POST /channels/{id}/messages`, in order, including the ones
    /// answered with 401, 429, 400 or a nonce's earlier message (`null` if not JSON).
    pub fn post_requests(&self) -> Vec<Value> {
        self.shared.lock().post_requests.clone()
    }

    /// How many `POST /channels/{channel_id}/typing` calls succeeded.
    pub fn typing_count(&self, channel_id: &str) -> usize {
        self.shared
            .lock()
            .typing
            .get(channel_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every `POST /channels/{id}/messages` received, including 429s and posts
    /// deduplicated by nonce.
    pub fn post_attempts(&self) -> usize {
        self.shared.lock().post_attempts
    }

    /// Message posts that came back while a 429's `retry_after` was still running (each
    /// got another 429).
    pub fn early_retries(&self) -> usize {
        self.shared.lock().early_retries
    }

    /// Answers the next `n` message posts with 429 and `retry_after` of `retry_after_ms`.
    /// After each, posts are refused with 429 until that time has passed.
    pub fn fail_next_posts_with_429(&self, n: usize, retry_after_ms: u64) {
        let mut st = self.shared.lock();
        st.fail_posts = n;
        st.fail_retry_after = Duration::from_millis(retry_after_ms);
    }

    /// Sets every bucket's limit: `limit` requests per `window` per route and channel
    /// (default 50 per second). A request over it gets a real 429.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        let mut st = self.shared.lock();
        st.rate_limit = limit;
        st.rate_window = window;
        st.buckets.clear();
    }

    /// Whether messages the bot posts come back over the gateway as MESSAGE_CREATE, as on
    /// Discord (default `true`).
    pub fn set_echo_own_messages(&self, on: bool) {
        self.shared.lock().echo_own = on;
    }

    /// Whether heartbeats get their ACK (op 11; default `true`). Off, every socket turns
    /// into a zombie as a half-dead network path would: frames still flow, but a client that
    /// tracks ACKs should drop the socket and RESUME.
    pub fn set_heartbeat_acks(&self, on: bool) {
        self.shared.lock().ack_heartbeats = on;
    }

    /// Drops every live socket without a close frame, as a network failure would. Their
    /// sessions stay resumable, and dispatches made meanwhile wait for the RESUME.
    pub fn disconnect_all(&self) {
        let mut st = self.shared.lock();
        let conns: Vec<_> = st.conns.drain().collect();
        for (_, conn) in conns {
            if let Some(session) = conn.session.and_then(|id| st.sessions.get_mut(&id)) {
                session.conn = None;
            }
            let _ = conn.tx.send(Out::Drop);
        }
    }

    /// Ends every session: the next RESUME gets op 9 INVALID_SESSION (`d: false`), and a
    /// socket still attached to a session gets op 9 now and may IDENTIFY again on it.
    pub fn invalidate_sessions(&self) {
        let mut st = self.shared.lock();
        let ids: Vec<String> = st.sessions.keys().cloned().collect();
        for id in ids {
            st.end_session(&id);
        }
        let invalid = json!({"op": 9, "t": null, "s": null, "d": false}).to_string();
        for conn in st.conns.values_mut() {
            if conn.session.take().is_some() {
                let _ = conn.tx.send(Out::Frame(invalid.clone()));
            }
        }
        for session in st.sessions.values_mut() {
            session.conn = None;
        }
    }

    /// Sends op 7 RECONNECT to every socket with a session: a client should reconnect and
    /// RESUME. The sockets stay open until the client closes them.
    pub fn request_reconnect(&self) {
        let st = self.shared.lock();
        let reconnect = json!({"op": 7, "t": null, "s": null, "d": null}).to_string();
        for conn in st.conns.values().filter(|c| c.session.is_some()) {
            let _ = conn.tx.send(Out::Frame(reconnect.clone()));
        }
    }

    /// Closes every live socket with a close frame of `code` (for example 4000 to make a
    /// client resume, or 4004 as if the token had been revoked). Sessions stay as they
    /// are: resumable unless ended some other way.
    pub fn close_all_with(&self, code: u16) {
        let mut st = self.shared.lock();
        let conns: Vec<_> = st.conns.drain().collect();
        for (_, conn) in conns {
            if let Some(session) = conn.session.and_then(|id| st.sessions.get_mut(&id)) {
                session.conn = None;
            }
            let _ = conn.tx.send(Out::Close(code, "Closed by the test."));
        }
    }

    /// Gateway sockets currently open.
    pub fn live_connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// The current session's id and last sequence number, if there is one.
    pub fn current_session(&self) -> Option<(String, u64)> {
        let st = self.shared.lock();
        let id = st.current.clone()?;
        let seq = st.sessions.get(&id)?.seq;
        Some((id, seq))
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported; don't panic in drop.
            let _ = thread.join();
        }
    }
}
