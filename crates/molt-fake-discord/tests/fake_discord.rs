//! The fake Discord over real loopback sockets: a raw `tokio-tungstenite` gateway client and
//! `reqwest` for REST, so these tests see what molt's client will see.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use molt_fake_discord::{FakeDiscord, Inbound, Options, intents};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected frame, close or condition may take.
const TIMEOUT: Duration = Duration::from_secs(10);

fn opts() -> Options {
    Options {
        heartbeat_interval_ms: 1000,
        ..Options::default()
    }
}

/// A raw gateway client.
struct Gw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Gw {
    /// Connects to `url` (adding the v10 query) and reads HELLO.
    async fn connect(url: &str) -> Gw {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}/?v=10&encoding=json"))
            .await
            .expect("the gateway accepts the WebSocket");
        let mut gw = Gw { ws };
        let hello = gw.recv().await;
        assert_eq!(hello["op"], 10, "first frame is HELLO: {hello}");
        assert_eq!(hello["d"]["heartbeat_interval"], 1000);
        gw
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send a frame");
    }

    /// The next text frame, parsed. Panics on a close, an error or the timeout.
    async fn recv(&mut self) -> Value {
        let next = tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return serde_json::from_str::<Value>(&t).expect("JSON frame");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        })
        .await;
        next.expect("a frame within the timeout")
    }

    /// The next dispatch, which must be of type `t`.
    async fn dispatch(&mut self, t: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["op"], 0, "expected a dispatch, got {frame}");
        assert_eq!(frame["t"], t, "expected {t}, got {frame}");
        frame
    }

    /// Reads until the server's close frame and returns its code.
    async fn close_code(&mut self) -> u16 {
        let code = tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        })
        .await;
        code.expect("a close within the timeout")
            .expect("the close frame has a code")
    }

    async fn identify(&mut self, token: &str, intents: u64) {
        self.send(json!({"op": 2, "d": {"token": token, "intents": intents,
            "properties": {"os": "linux", "browser": "molt", "device": "molt"}}}))
            .await;
    }

    /// IDENTIFY with the defaults; returns (READY's d, READY's seq).
    async fn ready(&mut self) -> (Value, u64) {
        self.identify("fake-bot-token", intents::MOLT_DEFAULT).await;
        let ready = self.dispatch("READY").await;
        (
            ready["d"].clone(),
            ready["s"].as_u64().expect("READY has s"),
        )
    }

    async fn resume(&mut self, session_id: &str, seq: u64) {
        self.send(json!({"op": 6, "d": {"token": "fake-bot-token", "session_id": session_id, "seq": seq}}))
            .await;
    }

    async fn close_with(&mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        self.ws
            .close(Some(frame))
            .await
            .expect("send a close frame");
    }
}

fn dm(channel_id: &str, content: &str) -> Inbound {
    Inbound {
        channel_id: channel_id.into(),
        author_id: "500".into(),
        author_name: "alice".into(),
        content: content.into(),
        ..Inbound::default()
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("an HTTP client")
}

const AUTH: &str = "Bot fake-bot-token";

/// POSTs `body` to `url` as the bot and returns the JSON answer.
async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    client
        .post(url)
        .header("authorization", AUTH)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after the timeout.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn identify_gets_ready_and_guild_create_then_messages_with_increasing_sequence_numbers() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    discord.add_thread("200", "300", "301");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, s) = gw.ready().await;
    assert_eq!(s, 1);
    assert_eq!(ready["user"]["id"], "100000000000000001");
    assert_eq!(ready["user"]["bot"], true);
    assert_eq!(ready["application"]["id"], "100000000000000002");
    assert_eq!(ready["guilds"], json!([{"id": "200", "unavailable": true}]));
    let session_id = ready["session_id"].as_str().unwrap();
    assert!(!session_id.is_empty());
    let resume_url = ready["resume_gateway_url"].as_str().unwrap();
    assert!(
        resume_url.starts_with(&discord.gateway_url()),
        "{resume_url}"
    );

    let guild = gw.dispatch("GUILD_CREATE").await;
    assert_eq!(guild["s"], 2);
    assert_eq!(guild["d"]["id"], "200");
    assert_eq!(guild["d"]["channels"][0]["id"], "300");
    assert_eq!(guild["d"]["channels"][0]["type"], 0);
    assert_eq!(guild["d"]["threads"][0]["id"], "301");
    assert_eq!(guild["d"]["threads"][0]["type"], 11);
    assert_eq!(guild["d"]["threads"][0]["parent_id"], "300");

    let first = discord.send_message(Inbound {
        channel_id: "300".into(),
        guild_id: Some("200".into()),
        author_id: "400".into(),
        author_name: "alice".into(),
        content: "hello <@100000000000000001>".into(),
        mentions_bot: true,
        ..Inbound::default()
    });
    let channel = discord.dm_channel_for("500");
    let second = discord.send_message(dm(&channel, "psst"));
    assert!(
        second.parse::<u64>().unwrap() > first.parse::<u64>().unwrap(),
        "ids increase"
    );

    let m1 = gw.dispatch("MESSAGE_CREATE").await;
    assert_eq!(m1["s"], 3);
    assert_eq!(m1["d"]["id"], first.as_str());
    assert_eq!(m1["d"]["channel_id"], "300");
    assert_eq!(m1["d"]["guild_id"], "200");
    assert_eq!(
        m1["d"]["author"],
        json!({"id": "400", "username": "alice", "discriminator": "0",
        "global_name": null, "avatar": null})
    );
    assert_eq!(m1["d"]["content"], "hello <@100000000000000001>");
    assert_eq!(m1["d"]["mentions"][0]["id"], "100000000000000001");
    assert_eq!(m1["d"]["type"], 0);
    assert!(m1["d"]["timestamp"].as_str().unwrap().ends_with("+00:00"));

    let m2 = gw.dispatch("MESSAGE_CREATE").await;
    assert_eq!(m2["s"], 4);
    assert_eq!(m2["d"]["id"], second.as_str());
    assert_eq!(m2["d"]["channel_id"], channel.as_str());
    assert!(
        m2["d"].get("guild_id").is_none(),
        "a DM has no guild_id: {m2}"
    );
    assert_eq!(m2["d"]["mentions"], json!([]));
    assert_eq!(discord.identify_count(), 1);
    assert_eq!(discord.live_connections(), 1);
    assert_eq!(discord.current_session(), Some((session_id.to_owned(), 4)));
}

#[tokio::test]
async fn a_dropped_socket_resumes_and_gets_the_missed_messages_in_order_then_resumed() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let channel = discord.dm_channel_for("500");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, _) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();
    let resume_url = ready["resume_gateway_url"].as_str().unwrap().to_owned();
    discord.send_message(dm(&channel, "seen"));
    let seen = gw.dispatch("MESSAGE_CREATE").await;
    let last_seq = seen["s"].as_u64().unwrap();

    // The TCP connection ends without a close frame.
    drop(gw);
    wait_until("the fake notices the drop", || {
        discord.live_connections() == 0
    })
    .await;
    let missed: Vec<String> = (1..=3)
        .map(|i| discord.send_message(dm(&channel, &format!("missed {i}"))))
        .collect();

    let mut gw = Gw::connect(&resume_url).await;
    gw.resume(&session_id, last_seq).await;
    for (i, id) in missed.iter().enumerate() {
        let m = gw.dispatch("MESSAGE_CREATE").await;
        assert_eq!(m["s"].as_u64(), Some(last_seq + 1 + i as u64));
        assert_eq!(m["d"]["id"], id.as_str());
        assert_eq!(m["d"]["content"], format!("missed {}", i + 1));
    }
    let resumed = gw.dispatch("RESUMED").await;
    assert_eq!(resumed["s"].as_u64(), Some(last_seq + 4));

    // Live again: a new message comes straight through, and nothing was identified again.
    let after = discord.send_message(dm(&channel, "after"));
    let m = gw.dispatch("MESSAGE_CREATE").await;
    assert_eq!(m["d"]["id"], after.as_str());
    assert_eq!(m["s"].as_u64(), Some(last_seq + 5));
    assert_eq!(discord.identify_count(), 1);
    assert_eq!(discord.resume_count(), 1);
}

#[tokio::test]
async fn disconnect_all_keeps_the_session_resumable_and_a_resume_from_seq_zero_replays_everything()
{
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, _) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();
    gw.dispatch("GUILD_CREATE").await;

    discord.disconnect_all();
    assert_eq!(discord.live_connections(), 0);
    // The client sees the connection end, without a close frame.
    let end = tokio::time::timeout(TIMEOUT, gw.ws.next())
        .await
        .expect("the socket ends");
    assert!(
        !matches!(end, Some(Ok(Message::Close(_)))),
        "no close frame: {end:?}"
    );
    let id = discord.send_message(dm(&discord.dm_channel_for("500"), "while away"));

    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, 0).await;
    assert_eq!(gw.dispatch("READY").await["s"], 1);
    assert_eq!(gw.dispatch("GUILD_CREATE").await["s"], 2);
    assert_eq!(gw.dispatch("MESSAGE_CREATE").await["d"]["id"], id.as_str());
    gw.dispatch("RESUMED").await;
}

#[tokio::test]
async fn a_bad_token_closes_the_gateway_with_4004_and_rest_answers_401() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.identify("not-the-token", intents::MOLT_DEFAULT).await;
    assert_eq!(gw.close_code().await, 4004);
    assert_eq!(discord.identify_count(), 0);

    let response = http()
        .get(format!("{}/users/@me", discord.api_url()))
        .header("authorization", "Bot not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"message": "401: Unauthorized", "code": 0}));
    let response = http()
        .get(format!("{}/gateway/bot", discord.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "no Authorization header at all");
}

#[tokio::test]
async fn missing_intents_close_the_gateway_with_4014() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.identify(
        "fake-bot-token",
        intents::GUILDS | intents::GUILD_MESSAGES | intents::DIRECT_MESSAGES,
    )
    .await;
    assert_eq!(gw.close_code().await, 4014);
    assert_eq!(discord.identify_count(), 0);

    // More intents than required are fine (OpenClaw asks for reactions and more).
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.identify("fake-bot-token", intents::MOLT_DEFAULT | 1 << 10 | 1 << 13)
        .await;
    gw.dispatch("READY").await;
}

#[tokio::test]
async fn heartbeats_are_acknowledged_and_counted() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    // Before IDENTIFY too, as Discord allows.
    gw.send(json!({"op": 1, "d": null})).await;
    assert_eq!(gw.recv().await["op"], 11);
    let (_, seq) = gw.ready().await;
    gw.send(json!({"op": 1, "d": seq})).await;
    assert_eq!(gw.recv().await["op"], 11);
    assert_eq!(discord.heartbeat_count(), 2);
}

#[tokio::test]
async fn a_429_carries_retry_after_an_early_retry_gets_another_and_a_retry_after_it_succeeds() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    discord.fail_next_posts_with_429(1, 500);
    let url = format!("{}/channels/300/messages", discord.api_url());
    let client = http();
    let post = || {
        client
            .post(&url)
            .header("authorization", AUTH)
            .json(&json!({"content": "hi"}))
            .send()
    };

    let started = Instant::now();
    let response = post().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["retry_after"], 0.5);
    assert_eq!(body["global"], false);

    // Straight back: still limited (unless this machine took 500 ms to get here).
    let early = post().await.unwrap();
    if started.elapsed() < Duration::from_millis(500) {
        assert_eq!(early.status(), 429);
        assert_eq!(discord.early_retries(), 1);
        let wait = early.json::<Value>().await.unwrap()["retry_after"]
            .as_f64()
            .unwrap();
        assert!(wait > 0.0 && wait <= 0.5, "{wait}");
        // What a client does with retry_after: wait it out, then try again.
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        let response = post().await.unwrap();
        assert_eq!(response.status(), 200);
    } else {
        assert_eq!(early.status(), 200);
    }
    assert_eq!(discord.posted().len(), 1);
    assert_eq!(discord.posted()[0].content, "hi");
    assert_eq!(discord.post_attempts(), 2 + discord.early_retries());
}

#[tokio::test]
async fn the_same_nonce_twice_with_enforce_nonce_creates_one_message() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    let url = format!("{}/channels/300/messages", discord.api_url());
    let client = http();
    let body = json!({"content": "reply", "nonce": "n-1", "enforce_nonce": true});
    let a = post_json(&client, &url, &body).await;
    let b = post_json(&client, &url, &body).await;
    assert_eq!(
        a["id"], b["id"],
        "the second post returns the first message"
    );
    assert_eq!(a["nonce"], "n-1");
    assert_eq!(a["author"]["id"], "100000000000000001");
    assert_eq!(discord.posted().len(), 1);
    assert_eq!(discord.posted()[0].nonce.as_deref(), Some("n-1"));
    assert_eq!(discord.post_attempts(), 2);

    // Without enforce_nonce, Discord creates a second message even with the same nonce.
    let c = post_json(&client, &url, &json!({"content": "reply", "nonce": "n-1"})).await;
    assert_ne!(c["id"], a["id"]);
    assert_eq!(discord.posted().len(), 2);
    assert_eq!(discord.post_requests().len(), 3);
}

#[tokio::test]
async fn a_1000_close_invalidates_the_session_and_a_4000_close_does_not() {
    let discord = FakeDiscord::start(opts()).await.unwrap();

    // Another code: resumable.
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, seq) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();
    gw.close_with(4000).await;
    wait_until("the fake sees the close", || {
        discord.live_connections() == 0
    })
    .await;
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, seq).await;
    gw.dispatch("RESUMED").await;
    assert_eq!(discord.resume_count(), 1);

    // 1000: the session is over, and the closing handshake completes.
    gw.close_with(1000).await;
    let reply = tokio::time::timeout(TIMEOUT, gw.ws.next()).await.unwrap();
    assert!(
        matches!(&reply, Some(Ok(Message::Close(_)))),
        "the fake answers the close: {reply:?}"
    );
    wait_until("the fake sees the close", || {
        discord.live_connections() == 0
    })
    .await;
    let held = discord.send_message(dm(&discord.dm_channel_for("500"), "after the close"));
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, seq).await;
    let invalid = gw.recv().await;
    assert_eq!(invalid["op"], 9);
    assert_eq!(invalid["d"], false);
    assert_eq!(discord.resume_count(), 1, "a refused RESUME does not count");
    assert_eq!(discord.refused_resume_count(), 1);
    assert_eq!(discord.current_session(), None);

    // The socket stays open for a new IDENTIFY, which gets the held message after READY.
    let (ready, _) = gw.ready().await;
    assert_ne!(ready["session_id"].as_str().unwrap(), session_id);
    assert_eq!(
        gw.dispatch("MESSAGE_CREATE").await["d"]["id"],
        held.as_str()
    );
    assert_eq!(discord.identify_count(), 2);
}

#[tokio::test]
async fn invalidate_sessions_sends_op_9_to_a_live_socket_and_refuses_the_next_resume() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, seq) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();
    discord.invalidate_sessions();
    let invalid = gw.recv().await;
    assert_eq!(
        (invalid["op"].clone(), invalid["d"].clone()),
        (json!(9), json!(false))
    );
    drop(gw);

    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, seq).await;
    assert_eq!(gw.recv().await["op"], 9);
    assert_eq!(discord.resume_count(), 0);
    assert_eq!(discord.refused_resume_count(), 1);
}

#[tokio::test]
async fn a_resume_while_the_old_socket_is_open_closes_it_and_moves_the_session() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let channel = discord.dm_channel_for("500");
    let mut old = Gw::connect(&discord.gateway_url()).await;
    let (ready, seq) = old.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();

    let mut new = Gw::connect(&discord.gateway_url()).await;
    new.resume(&session_id, seq).await;
    new.dispatch("RESUMED").await;
    let code = old.close_code().await;
    assert!((4000..5000).contains(&code), "{code}");
    // The old socket's close (it echoes 4000) must not end or detach the moved session.
    wait_until("the old socket is gone", || discord.live_connections() == 1).await;
    let id = discord.send_message(dm(&channel, "to the new socket"));
    assert_eq!(new.dispatch("MESSAGE_CREATE").await["d"]["id"], id.as_str());
}

#[tokio::test]
async fn messages_sent_before_the_first_identify_arrive_after_ready() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    let channel = discord.dm_channel_for("500");
    let a = discord.send_message(dm(&channel, "early 1"));
    let b = discord.send_message(dm(&channel, "early 2"));
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.ready().await;
    gw.dispatch("GUILD_CREATE").await;
    assert_eq!(gw.dispatch("MESSAGE_CREATE").await["d"]["id"], a.as_str());
    assert_eq!(gw.dispatch("MESSAGE_CREATE").await["d"]["id"], b.as_str());
}

#[tokio::test]
async fn the_bots_own_posts_come_back_over_the_gateway_with_the_bot_as_author() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.ready().await;
    gw.dispatch("GUILD_CREATE").await;
    let messages = format!("{}/channels/300/messages", discord.api_url());
    let posted = post_json(&http(), &messages, &json!({"content": "my reply"})).await;
    let echo = gw.dispatch("MESSAGE_CREATE").await;
    assert_eq!(echo["d"]["id"], posted["id"]);
    assert_eq!(echo["d"]["author"]["id"], "100000000000000001");
    assert_eq!(echo["d"]["author"]["bot"], true);
    assert_eq!(echo["d"]["guild_id"], "200");

    discord.set_echo_own_messages(false);
    post_json(&http(), &messages, &json!({"content": "quiet"})).await;
    let id = discord.send_message(dm(&discord.dm_channel_for("500"), "next"));
    assert_eq!(
        gw.dispatch("MESSAGE_CREATE").await["d"]["id"],
        id.as_str(),
        "no echo in between"
    );
}

#[tokio::test]
async fn rest_serves_the_gateway_the_bot_channels_dms_typing_and_rate_limit_headers() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    discord.add_thread("200", "300", "301");
    let api = discord.api_url();
    assert!(
        api.starts_with("http://127.0.0.1:") && api.ends_with("/api/v10"),
        "{api}"
    );
    let client = http();
    let get = |path: &str| {
        client
            .get(format!("{api}{path}"))
            .header("authorization", AUTH)
            .send()
    };

    let response = get("/gateway/bot").await.unwrap();
    assert_eq!(response.status(), 200);
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
    ] {
        assert!(response.headers().contains_key(name), "{name} missing");
    }
    let gateway: Value = response.json().await.unwrap();
    assert_eq!(gateway["url"], discord.gateway_url());
    assert_eq!(gateway["shards"], 1);
    assert!(gateway["session_start_limit"]["max_concurrency"].is_number());

    let me: Value = get("/users/@me").await.unwrap().json().await.unwrap();
    assert_eq!(
        (me["id"].as_str(), me["bot"].as_bool()),
        (Some("100000000000000001"), Some(true))
    );

    let text: Value = get("/channels/300").await.unwrap().json().await.unwrap();
    assert_eq!(
        (text["type"].as_u64(), text["guild_id"].as_str()),
        (Some(0), Some("200"))
    );
    let thread: Value = get("/channels/301").await.unwrap().json().await.unwrap();
    assert_eq!(
        (thread["type"].as_u64(), thread["parent_id"].as_str()),
        (Some(11), Some("300"))
    );
    assert_eq!(get("/channels/999").await.unwrap().status(), 404);

    let dm = post_json(
        &client,
        &format!("{api}/users/@me/channels"),
        &json!({"recipient_id": "500"}),
    )
    .await;
    assert_eq!(dm["type"], 1);
    assert_eq!(dm["recipients"][0]["id"], "500");
    assert_eq!(
        dm["id"],
        discord.dm_channel_for("500").as_str(),
        "one DM channel per user"
    );
    let fetched: Value = get(&format!("/channels/{}", dm["id"].as_str().unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["type"], 1);

    let typing = client
        .post(format!("{api}/channels/300/typing"))
        .header("authorization", AUTH)
        .send()
        .await
        .unwrap();
    assert_eq!(typing.status(), 204);
    assert_eq!(discord.typing_count("300"), 1);
    assert_eq!(discord.typing_count("301"), 0);

    let post = |body: Value| {
        client
            .post(format!("{api}/channels/301/messages"))
            .header("authorization", AUTH)
            .json(&body)
            .send()
    };
    let long = post(json!({"content": "x".repeat(2001)})).await.unwrap();
    assert_eq!(long.status(), 400);
    assert_eq!(long.json::<Value>().await.unwrap()["code"], 50035);
    // 2000 characters is the limit in characters, not bytes.
    let full = post(json!({"content": "é".repeat(2000)})).await.unwrap();
    assert_eq!(full.status(), 200);
    let remaining: u32 = full.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let limit: u32 = full.headers()["x-ratelimit-limit"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < limit);
    assert_eq!(post(json!({"content": ""})).await.unwrap().status(), 400);
    assert_eq!(discord.posted().len(), 1);
    assert_eq!(discord.posted()[0].channel_id, "301");
    assert_eq!(discord.post_attempts(), 3);
}

#[tokio::test]
async fn going_over_the_bucket_gets_a_real_429_until_the_window_resets() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    discord.add_guild_channel("200", "300");
    discord.add_guild_channel("200", "310");
    discord.set_rate_limit(2, Duration::from_secs(60));
    let client = http();
    let post = |channel: &str| {
        client
            .post(format!("{}/channels/{channel}/messages", discord.api_url()))
            .header("authorization", AUTH)
            .json(&json!({"content": "hi"}))
            .send()
    };
    let first = post("300").await.unwrap();
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(
        post("300").await.unwrap().headers()["x-ratelimit-remaining"],
        "0"
    );
    let over = post("300").await.unwrap();
    assert_eq!(over.status(), 429);
    assert!(
        over.json::<Value>().await.unwrap()["retry_after"]
            .as_f64()
            .unwrap()
            > 50.0
    );
    // Another channel has its own window, under the same bucket id.
    let other = post("310").await.unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(
        other.headers()["x-ratelimit-bucket"],
        first.headers()["x-ratelimit-bucket"]
    );
    assert_eq!(discord.posted().len(), 3);
}

#[tokio::test]
async fn a_session_without_message_content_gets_guild_messages_without_content_unless_mentioned() {
    let discord = FakeDiscord::start(Options {
        required_intents: 0,
        ..opts()
    })
    .await
    .unwrap();
    discord.add_guild_channel("200", "300");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.identify("fake-bot-token", intents::GUILDS | intents::GUILD_MESSAGES)
        .await;
    gw.dispatch("READY").await;
    gw.dispatch("GUILD_CREATE").await;
    let guild = |content: &str, mentions_bot: bool| Inbound {
        channel_id: "300".into(),
        guild_id: Some("200".into()),
        author_id: "400".into(),
        author_name: "bob".into(),
        content: content.into(),
        mentions_bot,
        ..Inbound::default()
    };
    discord.send_message(guild("secret", false));
    discord.send_message(dm(&discord.dm_channel_for("500"), "a DM, not subscribed"));
    discord.send_message(guild("hey bot", true));
    assert_eq!(gw.dispatch("MESSAGE_CREATE").await["d"]["content"], "");
    assert_eq!(
        gw.dispatch("MESSAGE_CREATE").await["d"]["content"],
        "hey bot"
    );
}

#[tokio::test]
async fn channels_added_after_ready_are_announced() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.ready().await;
    discord.add_guild_channel("200", "300");
    assert_eq!(
        gw.dispatch("GUILD_CREATE").await["d"]["channels"][0]["id"],
        "300"
    );
    discord.add_guild_channel("200", "310");
    assert_eq!(gw.dispatch("CHANNEL_CREATE").await["d"]["id"], "310");
    discord.add_thread("200", "300", "301");
    let thread = gw.dispatch("THREAD_CREATE").await;
    assert_eq!(
        (
            thread["d"]["id"].as_str(),
            thread["d"]["parent_id"].as_str()
        ),
        (Some("301"), Some("300"))
    );
}

#[tokio::test]
async fn protocol_errors_close_with_discords_codes() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(gw.close_code().await, 4002);

    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.send(json!({"op": 3, "d": {}})).await;
    assert_eq!(gw.close_code().await, 4003, "presence before IDENTIFY");

    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.ready().await;
    gw.identify("fake-bot-token", intents::MOLT_DEFAULT).await;
    assert_eq!(gw.close_code().await, 4005);

    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.send(json!({"op": 42, "d": null})).await;
    assert_eq!(gw.close_code().await, 4001);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}/?v=9", discord.gateway_url()))
        .await
        .unwrap();
    let frame = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    assert!(
        matches!(&frame, Some(Ok(Message::Close(Some(f)))) if u16::from(f.code) == 4012),
        "{frame:?}"
    );
}

#[tokio::test]
async fn dropping_the_fake_ends_its_sockets_and_stops_listening() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let url = discord.gateway_url();
    let mut gw = Gw::connect(&url).await;
    gw.ready().await;
    drop(discord);
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match gw.ws.next().await {
                Some(Ok(Message::Text(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the socket ends when the fake is dropped");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))));
    assert!(
        tokio_tungstenite::connect_async(format!("{url}/?v=10"))
            .await
            .is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn reconnect_on_demand_and_a_server_close_leave_the_session_resumable() {
    let discord = FakeDiscord::start(opts()).await.unwrap();
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, seq) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();

    discord.request_reconnect();
    assert_eq!(gw.recv().await["op"], 7);
    gw.close_with(4000).await;
    wait_until("the fake sees the close", || {
        discord.live_connections() == 0
    })
    .await;
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, seq).await;
    gw.dispatch("RESUMED").await;

    discord.close_all_with(4000);
    assert_eq!(gw.close_code().await, 4000);
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    gw.resume(&session_id, seq).await;
    gw.dispatch("RESUMED").await;
    assert_eq!(discord.resume_count(), 2);
    assert_eq!(discord.identify_count(), 1);
}

#[tokio::test]
async fn wait_for_posted_returns_once_enough_messages_are_posted_and_times_are_recorded() {
    let discord = std::sync::Arc::new(FakeDiscord::start(opts()).await.unwrap());
    discord.add_guild_channel("200", "300");
    let waiter = {
        let discord = std::sync::Arc::clone(&discord);
        tokio::task::spawn_blocking(move || discord.wait_for_posted(2, TIMEOUT))
    };
    let before = Instant::now();
    let client = http();
    for content in ["one", "two"] {
        let response = client
            .post(format!("{}/channels/300/messages", discord.api_url()))
            .header("authorization", AUTH)
            .json(&json!({ "content": content }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(waiter.await.unwrap(), "two posts seen");
    let timed = discord.posted_timed();
    assert_eq!(timed.len(), 2);
    assert!(before <= timed[0].1 && timed[0].1 <= timed[1].1);
    assert_eq!(timed[1].0.content, "two");
    // Not enough posts: it gives up at the timeout.
    assert!(!discord.wait_for_posted(3, Duration::from_millis(50)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_resumes_while_messages_stream_in_lose_nothing_and_duplicate_nothing() {
    const MESSAGES: usize = 400;
    let discord = std::sync::Arc::new(FakeDiscord::start(opts()).await.unwrap());
    let channel = discord.dm_channel_for("500");
    let mut gw = Gw::connect(&discord.gateway_url()).await;
    let (ready, mut last_seq) = gw.ready().await;
    let session_id = ready["session_id"].as_str().unwrap().to_owned();
    let resume_url = ready["resume_gateway_url"].as_str().unwrap().to_owned();

    // A sender on its own thread, racing the reconnects below.
    let sender = {
        let discord = std::sync::Arc::clone(&discord);
        std::thread::spawn(move || {
            (0..MESSAGES)
                .map(|i| {
                    std::thread::yield_now();
                    discord.send_message(dm(&channel, &format!("m{i}")))
                })
                .collect::<Vec<String>>()
        })
    };

    let mut received = Vec::new();
    for cycle in 0..10 {
        // Read a few, then lose the connection: alternately from the client's side and
        // the fake's, so that frames in flight on the dead socket are lost either way.
        for _ in 0..20 {
            let frame = gw.recv().await;
            assert_eq!(frame["op"], 0, "{frame}");
            let s = frame["s"].as_u64().unwrap();
            // A gap is fine only where a RESUMED was missed (it is not replayed).
            assert!(
                s > last_seq,
                "sequence numbers increase: {s} after {last_seq}"
            );
            last_seq = s;
            if frame["t"] == "MESSAGE_CREATE" {
                received.push(frame["d"]["id"].as_str().unwrap().to_owned());
            }
        }
        if cycle % 2 == 0 {
            drop(gw);
        } else {
            discord.disconnect_all();
            drop(gw);
        }
        gw = Gw::connect(&resume_url).await;
        gw.resume(&session_id, last_seq).await;
    }
    let sent = sender.join().unwrap();
    while received.len() < sent.len() {
        let frame = gw.recv().await;
        let s = frame["s"].as_u64().unwrap();
        assert!(
            s > last_seq,
            "sequence numbers increase: {s} after {last_seq}"
        );
        last_seq = s;
        if frame["t"] == "MESSAGE_CREATE" {
            received.push(frame["d"]["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, sent, "every message exactly once, in order");
    assert_eq!(discord.identify_count(), 1);
    assert_eq!(discord.resume_count(), 10);
}
