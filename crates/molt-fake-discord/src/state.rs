//! The fake's world: channels, sessions, sockets and counters, behind one mutex.
//!
//! Every change that orders frames (a sequence number, a dispatch, attaching a session to a
//! socket) happens under the lock and pushes the frame into the socket's queue before the
//! lock is released, so frames leave in sequence order whichever thread made them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::clock;
use crate::intents;
use crate::{Inbound, Options, Posted};

/// What a socket task is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this text frame.
    Frame(String),
    /// Send a close frame with this code and reason, then end.
    Close(u16, &'static str),
    /// End without a close frame (the TCP connection just drops).
    Drop,
}

/// State shared by the handlers, the socket tasks and the test's handle.
pub(crate) struct Shared {
    pub(crate) opts: Options,
    pub(crate) port: u16,
    state: Mutex<State>,
    /// Signalled whenever a message is posted, for `wait_for_posted`.
    pub(crate) posted_signal: Condvar,
}

impl Shared {
    pub(crate) fn new(opts: Options, port: u16) -> Shared {
        Shared {
            opts,
            port,
            state: Mutex::new(State::default()),
            posted_signal: Condvar::new(),
        }
    }

    // A panicking test thread must not wedge the server for the others: ignore poisoning.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `ws://127.0.0.1:PORT`, what `GET /gateway/bot` returns.
    pub(crate) fn gateway_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The bot as a user object.
    pub(crate) fn bot_user(&self) -> Value {
        json!({
            "id": self.opts.bot_user_id,
            "username": self.opts.bot_username,
            "discriminator": "0",
            "global_name": null,
            "avatar": null,
            "bot": true,
            "verified": true,
            "flags": 0,
        })
    }
}

/// Channel types the fake uses (Discord's values).
pub(crate) const GUILD_TEXT: u8 = 0;
pub(crate) const DM: u8 = 1;
pub(crate) const PUBLIC_THREAD: u8 = 11;

#[derive(Clone, Debug)]
pub(crate) struct Channel {
    pub(crate) kind: u8,
    pub(crate) guild_id: Option<String>,
    pub(crate) parent_id: Option<String>,
    /// For a DM channel: the other user.
    pub(crate) recipient: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) seq: u64,
    /// Every dispatch sent in this session: (sequence, frame), for replay on RESUME.
    pub(crate) events: Vec<(u64, String)>,
    /// The socket it is attached to, if any.
    pub(crate) conn: Option<u64>,
    /// False once the session can no longer be resumed.
    pub(crate) valid: bool,
    pub(crate) intents: u64,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    pub(crate) session: Option<String>,
}

/// One rate-limit bucket's current window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) started: Instant,
    pub(crate) used: u32,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Guild id → its channels and threads, in the order they were added.
    pub(crate) guilds: BTreeMap<String, Vec<String>>,
    pub(crate) channels: HashMap<String, Channel>,
    /// User id → their DM channel id.
    pub(crate) dms: HashMap<String, String>,
    /// User id → username, as seen in inbound messages.
    pub(crate) usernames: HashMap<String, String>,
    pub(crate) sessions: HashMap<String, Session>,
    /// The session new dispatches go to.
    pub(crate) current: Option<String>,
    /// MESSAGE_CREATE payloads waiting for the next READY.
    pub(crate) held: Vec<Value>,
    pub(crate) conns: HashMap<u64, Conn>,
    pub(crate) next_conn: u64,
    pub(crate) sessions_made: u64,
    pub(crate) last_snowflake: u64,
    pub(crate) identifies: usize,
    pub(crate) resumes: usize,
    pub(crate) refused_resumes: usize,
    pub(crate) heartbeats: usize,
    pub(crate) post_attempts: usize,
    pub(crate) early_retries: usize,
    pub(crate) posted: Vec<Posted>,
    /// When each of `posted` was created, in the same order.
    pub(crate) posted_at: Vec<Instant>,
    pub(crate) post_requests: Vec<Value>,
    pub(crate) typing: HashMap<String, usize>,
    /// (channel id, nonce) → the message created with it.
    pub(crate) nonces: HashMap<(String, String), Value>,
    /// On-demand 429s still to give, and their `retry_after`.
    pub(crate) fail_posts: usize,
    pub(crate) fail_retry_after: Duration,
    /// Posts are refused until then (after a 429).
    pub(crate) posts_blocked_until: Option<Instant>,
    pub(crate) buckets: HashMap<String, Window>,
    pub(crate) rate_limit: u32,
    pub(crate) rate_window: Duration,
    pub(crate) echo_own: bool,
    /// Whether heartbeats are ACKed (op 11); off makes every connection a zombie.
    pub(crate) ack_heartbeats: bool,
}

impl Default for State {
    fn default() -> State {
        State {
            guilds: BTreeMap::new(),
            channels: HashMap::new(),
            dms: HashMap::new(),
            usernames: HashMap::new(),
            sessions: HashMap::new(),
            current: None,
            held: Vec::new(),
            conns: HashMap::new(),
            next_conn: 1,
            sessions_made: 0,
            last_snowflake: 0,
            identifies: 0,
            resumes: 0,
            refused_resumes: 0,
            heartbeats: 0,
            post_attempts: 0,
            early_retries: 0,
            posted: Vec::new(),
            posted_at: Vec::new(),
            post_requests: Vec::new(),
            typing: HashMap::new(),
            nonces: HashMap::new(),
            fail_posts: 0,
            fail_retry_after: Duration::ZERO,
            posts_blocked_until: None,
            buckets: HashMap::new(),
            rate_limit: 50,
            rate_window: Duration::from_secs(1),
            echo_own: true,
            ack_heartbeats: true,
        }
    }
}

impl State {
    pub(crate) fn snowflake(&mut self) -> String {
        self.last_snowflake = clock::next_snowflake(self.last_snowflake);
        self.last_snowflake.to_string()
    }

    /// Adds a guild text channel (or retypes nothing if it exists). Returns whether the
    /// guild is new, and whether the channel is.
    pub(crate) fn add_channel(
        &mut self,
        guild_id: &str,
        channel: &str,
        ch: Channel,
    ) -> (bool, bool) {
        let new_guild = !self.guilds.contains_key(guild_id);
        let list = self.guilds.entry(guild_id.to_owned()).or_default();
        let new_channel = !self.channels.contains_key(channel);
        if new_channel {
            list.push(channel.to_owned());
            self.channels.insert(channel.to_owned(), ch);
        }
        (new_guild, new_channel)
    }

    /// The DM channel with `user_id`, created on first use.
    pub(crate) fn dm_channel(&mut self, user_id: &str) -> String {
        if let Some(id) = self.dms.get(user_id) {
            return id.clone();
        }
        let id = self.snowflake();
        self.dms.insert(user_id.to_owned(), id.clone());
        self.channels.insert(
            id.clone(),
            Channel {
                kind: DM,
                guild_id: None,
                parent_id: None,
                recipient: Some(user_id.to_owned()),
            },
        );
        id
    }

    pub(crate) fn user_object(&self, user_id: &str) -> Value {
        let name = self
            .usernames
            .get(user_id)
            .cloned()
            .unwrap_or_else(|| format!("user{user_id}"));
        json!({"id": user_id, "username": name, "discriminator": "0", "global_name": null, "avatar": null})
    }

    /// The channel object REST returns and GUILD_CREATE lists.
    pub(crate) fn channel_object(&self, id: &str) -> Option<Value> {
        let ch = self.channels.get(id)?;
        let mut v = json!({"id": id, "type": ch.kind, "flags": 0});
        match ch.kind {
            DM => {
                let recipient = ch.recipient.as_deref().unwrap_or_default();
                v["recipients"] = json!([self.user_object(recipient)]);
                v["last_message_id"] = Value::Null;
            }
            _ => {
                v["name"] = json!(format!("channel-{id}"));
                v["guild_id"] = json!(ch.guild_id);
                v["position"] = json!(0);
                v["permission_overwrites"] = json!([]);
                if let Some(parent) = &ch.parent_id {
                    v["parent_id"] = json!(parent);
                }
                if ch.kind == PUBLIC_THREAD {
                    v["thread_metadata"] = json!({"archived": false, "locked": false,
                        "auto_archive_duration": 1440, "archive_timestamp": clock::iso8601(clock::unix_ms())});
                    v["owner_id"] = json!("1");
                    v["message_count"] = json!(0);
                    v["member_count"] = json!(1);
                }
            }
        }
        Some(v)
    }

    /// GUILD_CREATE's payload for a guild: its channels and its threads.
    pub(crate) fn guild_object(&self, guild_id: &str) -> Value {
        let ids = self
            .guilds
            .get(guild_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (mut channels, mut threads) = (Vec::new(), Vec::new());
        for id in ids {
            let Some(obj) = self.channel_object(id) else {
                continue;
            };
            if self
                .channels
                .get(id)
                .is_some_and(|c| c.kind == PUBLIC_THREAD)
            {
                threads.push(obj);
            } else {
                channels.push(obj);
            }
        }
        json!({
            "id": guild_id,
            "name": format!("guild-{guild_id}"),
            "unavailable": false,
            "owner_id": "1",
            "member_count": 2,
            "large": false,
            "joined_at": clock::iso8601(clock::unix_ms()),
            "roles": [],
            "emojis": [],
            "members": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "channels": channels,
            "threads": threads,
        })
    }

    /// Sends a dispatch in `session_id` (sequence it, keep it for replay, and queue it on
    /// the attached socket if any). Returns its sequence number.
    pub(crate) fn dispatch_in(
        &mut self,
        session_id: &str,
        t: &str,
        d: &Value,
        keep: bool,
    ) -> Option<u64> {
        let session = self.sessions.get_mut(session_id)?;
        session.seq += 1;
        let seq = session.seq;
        let frame = json!({"op": 0, "t": t, "s": seq, "d": d}).to_string();
        if let Some(conn) = session.conn.and_then(|c| self.conns.get(&c)) {
            let _ = conn.tx.send(Out::Frame(frame.clone()));
        }
        if keep {
            session.events.push((seq, frame));
        }
        Some(seq)
    }

    /// Dispatches a MESSAGE_CREATE to the current session if its intents allow it, or
    /// holds it for the next READY when `hold` and there is no current session.
    pub(crate) fn dispatch_message(&mut self, bot_id: &str, d: Value, hold: bool) {
        let Some(current) = self.current.clone() else {
            if hold {
                self.held.push(d);
            }
            return;
        };
        let Some(intents) = self.sessions.get(&current).map(|s| s.intents) else {
            return;
        };
        if let Some(d) = filter_for_intents(d, intents, bot_id) {
            self.dispatch_in(&current, "MESSAGE_CREATE", &d, true);
        }
    }

    /// Dispatches a non-message event to the current session, if there is one.
    pub(crate) fn dispatch_current(&mut self, t: &str, d: &Value) {
        if let Some(current) = self.current.clone() {
            self.dispatch_in(&current, t, d, true);
        }
    }

    /// Ends a session: it can no longer be resumed, and it is no longer current.
    pub(crate) fn end_session(&mut self, session_id: &str) {
        if let Some(s) = self.sessions.get_mut(session_id) {
            s.valid = false;
        }
        if self.current.as_deref() == Some(session_id) {
            self.current = None;
        }
    }

    /// The MESSAGE_CREATE payload for an inbound message, registering its channel and
    /// author as needed.
    pub(crate) fn inbound_message(&mut self, m: &Inbound, bot: &Value) -> Value {
        self.usernames
            .insert(m.author_id.clone(), m.author_name.clone());
        let mut guild_id = m.guild_id.clone();
        match self.channels.get(&m.channel_id) {
            Some(ch) => {
                if guild_id.is_none() {
                    guild_id = ch.guild_id.clone();
                }
            }
            None => match &guild_id {
                Some(g) => {
                    let ch = Channel {
                        kind: GUILD_TEXT,
                        guild_id: Some(g.clone()),
                        parent_id: None,
                        recipient: None,
                    };
                    self.add_channel(g, &m.channel_id, ch);
                }
                None => {
                    self.channels.insert(
                        m.channel_id.clone(),
                        Channel {
                            kind: DM,
                            guild_id: None,
                            parent_id: None,
                            recipient: Some(m.author_id.clone()),
                        },
                    );
                    self.dms
                        .entry(m.author_id.clone())
                        .or_insert_with(|| m.channel_id.clone());
                }
            },
        }
        let id = self.snowflake();
        let mut author = json!({"id": m.author_id, "username": m.author_name, "discriminator": "0",
            "global_name": null, "avatar": null});
        if m.author_is_bot {
            author["bot"] = json!(true);
        }
        let mentions = if m.mentions_bot {
            vec![bot.clone()]
        } else {
            Vec::new()
        };
        let mut d = json!({
            "id": id,
            "channel_id": m.channel_id,
            "author": author,
            "content": m.content,
            "timestamp": clock::iso8601(clock::unix_ms()),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": 0,
            "flags": 0,
        });
        if let Some(g) = guild_id {
            d["guild_id"] = json!(g);
            d["member"] = json!({"roles": [], "joined_at": clock::iso8601(clock::unix_ms()), "deaf": false, "mute": false});
        }
        d
    }

    /// Counts a request against `bucket`'s window. `Err(wait)` when the window is used up.
    pub(crate) fn take_rate(&mut self, bucket: &str, now: Instant) -> Result<RateInfo, RateInfo> {
        let (limit, window) = (self.rate_limit, self.rate_window);
        let w = self.buckets.entry(bucket.to_owned()).or_insert(Window {
            started: now,
            used: 0,
        });
        if now.duration_since(w.started) >= window {
            *w = Window {
                started: now,
                used: 0,
            };
        }
        let reset_after = window.saturating_sub(now.duration_since(w.started));
        if w.used >= limit {
            return Err(RateInfo {
                limit,
                remaining: 0,
                reset_after,
            });
        }
        w.used += 1;
        Ok(RateInfo {
            limit,
            remaining: limit - w.used,
            reset_after,
        })
    }
}

/// What the rate-limit headers of one response say.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateInfo {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) reset_after: Duration,
}

/// A MESSAGE_CREATE as a session with `intents` sees it, or `None` when it gets none.
fn filter_for_intents(mut d: Value, intents: u64, bot_id: &str) -> Option<Value> {
    let in_guild = d.get("guild_id").is_some();
    let needed = if in_guild {
        intents::GUILD_MESSAGES
    } else {
        intents::DIRECT_MESSAGES
    };
    if intents & needed == 0 {
        return None;
    }
    let from_bot = d["author"]["id"].as_str() == Some(bot_id);
    let mentions_bot = d["mentions"]
        .as_array()
        .is_some_and(|m| m.iter().any(|u| u["id"].as_str() == Some(bot_id)));
    if in_guild && intents & intents::MESSAGE_CONTENT == 0 && !from_bot && !mentions_bot {
        d["content"] = json!("");
    }
    Some(d)
}
