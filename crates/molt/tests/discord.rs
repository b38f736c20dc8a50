//! The Discord channel against the real binary, the fake model and the fake Discord on
//! loopback: replies (chunked, typing, rate limits), pairing, exactly-once through handovers
//! and `kill -9`, `send` (once per idempotency key, and through `kill -9`), a bad token, a
//! stop in budget, and the token's secrecy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use molt_client::{Client, ClientError};
use molt_fake_discord::{FakeDiscord, Inbound, Options, Posted};
use molt_fake_model::{FakeModel, Reply};
use molt_protocol::methods::channels::{Send, SendParams, SendResult};
use serde_json::Value;

const KEY: &str = "sk-molt-test-discord-5c2a";
const TOKEN: &str = "fake-bot-token-9f3e1a77c4";
const USER: &str = "300000000000000001";

/// These tests each run a gateway, a fake model and a fake Discord, and time handovers and
/// stops: one at a time, so a loaded machine does not turn their budgets into flakes.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The fake Discord with its runtime, the fake model and a molt home wired to both.
struct World {
    discord: FakeDiscord,
    model: FakeModel,
    home: Home,
    // Last: the fake's tasks run here until the end of the test.
    _rt: tokio::runtime::Runtime,
    // Released when everything above is gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

fn world(channel_extra: &str, token_inline: bool) -> World {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let discord = rt
        .block_on(FakeDiscord::start(Options {
            token: TOKEN.into(),
            heartbeat_interval_ms: 1000,
            ..Options::default()
        }))
        .unwrap();
    let model = FakeModel::start_with_key(KEY);
    let token_line = if token_inline {
        format!("token = \"{TOKEN}\"")
    } else {
        String::new()
    };
    let extra = format!(
        "[models.providers.fake.limits]\nretry_base_ms = 100\nmax_retries = 3\n\
         [channels.discord]\n{token_line}\n{channel_extra}\n"
    );
    let home = Home::new_private(
        MOLT,
        &fake_model_config(&model.openai_base_url(), KEY, &extra),
    );
    World {
        discord,
        model,
        home,
        _rt: rt,
        _serial: serial,
    }
}

impl Drop for World {
    /// On a failure, the end of the gateway's log (lifecycle and Discord lines) goes with
    /// the panic message.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let log = self.home.state_dir().join("logs").join("gateway.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("DEBUG"))
            .filter(|l| {
                ["discord", "handover", "ERROR", "WARN", "gateway"]
                    .iter()
                    .any(|k| l.contains(k))
            })
            .collect();
        eprintln!("--- {} (last lines) ---", log.display());
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
    }
}

impl World {
    /// Spawns the gateway with `DISCORD_API_URL` on the fake and waits until it serves.
    fn start(&self) -> Gateway {
        self.start_with_env(&[])
    }

    fn start_with_env(&self, env: &[(&str, &str)]) -> Gateway {
        let api = self.discord.api_url();
        let mut g = self.home.spawn_with(&[], |c| {
            c.env("DISCORD_API_URL", &api);
            for (k, v) in env {
                c.env(k, v);
            }
        });
        g.wait_ready_within(Duration::from_secs(30), Duration::from_millis(25));
        g
    }

    /// The Discord account of `channels.status`.
    fn status(&self) -> Value {
        let s = self.home.cli_json(&["channels", "status", "--json"]);
        s["channelAccounts"]["discord"][0].clone()
    }

    /// Waits until the channel reports an error (`what` says which), and returns its status.
    fn wait_error(&self, what: &str) -> Value {
        wait_for_every(
            what,
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let s = self.status();
                s["lastError"].is_string().then_some(s)
            },
        )
    }

    /// Waits until the channel is connected.
    fn wait_connected(&self) -> Value {
        wait_for_every(
            "the Discord channel connects",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let s = self.status();
                (s["connected"] == true).then_some(s)
            },
        )
    }

    fn dm(&self, text: &str) -> String {
        self.dm_from(USER, "alice", text)
    }

    fn dm_from(&self, user: &str, name: &str, text: &str) -> String {
        self.discord.send_message(Inbound {
            channel_id: self.discord.dm_channel_for(user),
            guild_id: None,
            author_id: user.into(),
            author_name: name.into(),
            author_is_bot: false,
            content: text.into(),
            mentions_bot: false,
        })
    }

    /// Messages posted in `channel`, waiting until there are at least `n`.
    fn posted_in(&self, channel: &str, n: usize, timeout: Duration) -> Vec<Posted> {
        wait_for_every(
            &format!("{n} messages posted in {channel}"),
            timeout,
            Duration::from_millis(20),
            || {
                let p: Vec<Posted> = self
                    .discord
                    .posted()
                    .into_iter()
                    .filter(|p| p.channel_id == channel)
                    .collect();
                (p.len() >= n).then_some(p)
            },
        )
    }

    /// `send` over the protocol, as a client other than the CLI calls it.
    fn send(&self, to: &str, text: &str, key: &str) -> Result<SendResult, ClientError> {
        let params = SendParams {
            to: to.into(),
            message: Some(text.into()),
            channel: Some("discord".into()),
            account_id: None,
            idempotency_key: key.into(),
        };
        self._rt.block_on(async {
            let mut c = Client::connect(self.home.client_options()).await?;
            let r = c.request::<Send>(&params).await;
            c.close().await;
            r
        })
    }

    /// Messages posted with `nonce`.
    fn posted_with_nonce(&self, nonce: &str) -> usize {
        self.discord
            .posted()
            .iter()
            .filter(|p| p.nonce.as_deref() == Some(nonce))
            .count()
    }

    fn posted_count(&self, channel: &str) -> usize {
        self.discord
            .posted()
            .iter()
            .filter(|p| p.channel_id == channel)
            .count()
    }
}

/// Messages in a turn's transcript the model saw last (its request's user messages).
fn last_user_text(model: &FakeModel) -> String {
    let reqs = model.requests();
    let body = &reqs.last().expect("a model request").body;
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .next_back()
        .unwrap_or_default()
}

#[test]
fn a_dm_gets_a_reply_and_a_long_reply_comes_in_three_ordered_chunks_despite_a_429() {
    let w = world("dm_policy = \"open\"", true);
    w.model.push(Reply::text("hello from molt"));
    let _g = w.start();
    let s = w.wait_connected();
    assert_eq!(s["identifies"], 1, "{s}");
    let dm = w.discord.dm_channel_for(USER);

    let id = w.dm("hi there");
    let first = w.posted_in(&dm, 1, Duration::from_secs(30));
    assert_eq!(first[0].content, "hello from molt");
    assert_eq!(first[0].nonce.as_deref(), Some(format!("{id}.0").as_str()));
    assert!(
        last_user_text(&w.model).contains("hi there"),
        "the model saw the message"
    );
    assert!(
        w.discord.typing_count(&dm) >= 1,
        "typing while the turn ran"
    );

    // 4,500 characters in lines: three messages, in order, split at line ends; the first
    // post meets a 429 and is retried after retry_after, not before.
    let long: String = (0..90)
        .map(|i| format!("line {i:02} {}\n", "x".repeat(41)))
        .collect();
    assert_eq!(long.chars().count(), 4500);
    w.model.push(Reply::text(&long));
    w.discord.fail_next_posts_with_429(1, 300);
    let id2 = w.dm("tell me a lot");
    let all = w.posted_in(&dm, 4, Duration::from_secs(30));
    let chunks = &all[1..];
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert!(chunks.iter().all(|c| c.content.chars().count() <= 2000));
    assert!(chunks.iter().all(|c| c.content.ends_with('\n')));
    let joined: String = chunks.iter().map(|c| c.content.as_str()).collect();
    assert_eq!(joined, long, "the chunks are the reply, in order");
    let nonces: Vec<_> = chunks.iter().map(|c| c.nonce.clone().unwrap()).collect();
    assert_eq!(
        nonces,
        vec![format!("{id2}.0"), format!("{id2}.1"), format!("{id2}.2")]
    );
    assert_eq!(w.discord.early_retries(), 0, "retry_after was honoured");

    // The channel's state shows in `molt status` too.
    let st = w.home.cli_ok(&["status"]);
    assert!(st.contains("channel   discord: connected"), "{st}");
}

/// The pairing code in the DM a stranger got.
fn pairing_code(dm: &Posted) -> String {
    dm.content
        .split_whitespace()
        .find(|t| {
            t.len() == 8
                && t.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .unwrap_or_else(|| panic!("no code in {:?}", dm.content))
        .to_owned()
}

#[test]
fn a_stranger_gets_a_pairing_code_and_is_answered_after_approval_or_kept_out_by_dismissal() {
    let w = world("", true);
    let _g = w.start();
    w.wait_connected();
    let stranger = "300000000000000077";
    let dm = w.discord.dm_channel_for(stranger);
    w.dm_from(stranger, "mallory", "let me in");
    let got = w.posted_in(&dm, 1, Duration::from_secs(30));
    let code = pairing_code(&got[0]);
    assert!(!code.contains(['0', 'O', '1', 'I']), "{code}");
    assert_eq!(w.model.request_count(), 0, "no turn ran for the stranger");

    let list = w.home.cli_json(&["pairing", "list", "--json"]);
    assert_eq!(list["requests"][0]["requestId"], code.as_str(), "{list}");
    assert_eq!(list["requests"][0]["senderId"], stranger);
    assert_eq!(list["limits"]["pendingPerAccount"], 3);

    // A second stranger's request is dismissed: they stay out, and their code is spent.
    let other = "300000000000000078";
    let other_dm = w.discord.dm_channel_for(other);
    w.dm_from(other, "trudy", "me too");
    let got = w.posted_in(&other_dm, 1, Duration::from_secs(30));
    let other_code = pairing_code(&got[0]);
    let out = w
        .home
        .cli_ok(&["pairing", "dismiss", &other_code.to_lowercase()]);
    assert!(out.contains("dismissed") && out.contains(other), "{out}");
    let list = w.home.cli_json(&["pairing", "list", "--json"]);
    assert_eq!(list["requests"].as_array().unwrap().len(), 1, "{list}");
    let out = w.home.cli(&["pairing", "approve", &other_code]);
    assert!(!out.status.success(), "a dismissed code cannot be approved");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pending pairing request"),
        "{out:?}"
    );

    let out = w.home.cli_ok(&["pairing", "approve", &code]);
    assert!(out.contains("approved"), "{out}");
    let list = w.home.cli_json(&["pairing", "list", "--json"]);
    assert_eq!(list["requests"].as_array().unwrap().len(), 0, "{list}");

    w.model.push(Reply::text("welcome, mallory"));
    w.dm_from(stranger, "mallory", "hello again");
    let got = w.posted_in(&dm, 2, Duration::from_secs(30));
    assert_eq!(got[1].content, "welcome, mallory");
    assert_eq!(w.model.request_count(), 1);
    assert!(last_user_text(&w.model).contains("hello again"));
    assert!(
        !w.model
            .requests()
            .iter()
            .any(|r| r.body.to_string().contains("let me in")),
        "the message sent before approval was never processed"
    );
}

#[test]
fn ten_handovers_while_messages_arrive_every_200ms_answer_each_exactly_once() {
    let w = world("dm_policy = \"open\"", true);
    let _first = w.start();
    w.wait_connected();
    let dm = w.discord.dm_channel_for(USER);
    let mut sent = Vec::new();
    let t0 = Instant::now();
    let mut handovers = 0;
    let mut pid = readyz_pid(w.home.port).expect("a serving pid");
    // 100 messages, one every 200 ms; a SIGHUP every tenth message.
    for i in 0..100 {
        let due = t0 + Duration::from_millis(200 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(w.dm(&format!("message {i}")));
        if i % 10 == 5 {
            // SAFETY: SIGHUP to the gateway this test started (or its successor).
            unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            handovers += 1;
            let old = pid;
            // The handover's own bound is 30 s (handover_timeout_ms).
            pid = wait_for("the successor serves", Duration::from_secs(40), || {
                readyz_pid(w.home.port).filter(|p| *p != old)
            });
        }
    }
    assert_eq!(handovers, 10);
    w.posted_in(&dm, sent.len(), Duration::from_secs(60));
    // Let stragglers (a duplicate, if there were one) arrive before counting.
    std::thread::sleep(Duration::from_millis(1500));
    let posted: Vec<Posted> = w
        .discord
        .posted()
        .into_iter()
        .filter(|p| p.channel_id == dm)
        .collect();
    let mut by_message: BTreeMap<String, usize> = BTreeMap::new();
    for p in &posted {
        let nonce = p.nonce.clone().expect("every reply has a nonce");
        let message = nonce.trim_end_matches(".0").to_owned();
        *by_message.entry(message).or_default() += 1;
    }
    let want: BTreeSet<String> = sent.iter().cloned().collect();
    let got: BTreeSet<String> = by_message.keys().cloned().collect();
    assert_eq!(got, want, "every message answered");
    assert!(
        by_message.values().all(|n| *n == 1),
        "no reply posted twice: {:?}",
        by_message
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
    assert_eq!(posted.len(), 100);
    assert_eq!(w.model.request_count(), 100, "one model call per message");
    assert_eq!(w.discord.identify_count(), 1, "one IDENTIFY");
    assert_eq!(w.discord.resume_count(), 10, "a RESUME per handover");
    let s = w.wait_connected();
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(s["pendingReplies"], 0, "{s}");
}

#[test]
fn kill_9_during_a_turn_then_the_turn_completes_and_its_reply_is_posted_once() {
    let w = world("dm_policy = \"open\"", true);
    // The first answer streams slowly, so the kill lands mid-turn; the resumed turn gets
    // the second.
    w.model.push(
        Reply::text_chunks((0..50).map(|i| format!("slow{i} ")))
            .interval(Duration::from_millis(100)),
    );
    w.model.push(Reply::text("answered after the crash"));
    let mut g = w.start();
    w.wait_connected();
    let dm = w.discord.dm_channel_for(USER);
    let id = w.dm("are you there?");
    assert!(
        w.model.wait_for_chunks(3, Duration::from_secs(20)),
        "the turn is streaming"
    );
    g.signal(libc::SIGKILL);
    g.wait_exit(Duration::from_secs(10));
    assert_eq!(w.posted_count(&dm), 0, "nothing posted before the crash");

    let _g2 = w.start();
    let got = w.posted_in(&dm, 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1000));
    let got_now = w.posted_count(&dm);
    assert_eq!(got_now, 1, "posted once");
    assert_eq!(got[0].content, "answered after the crash");
    assert_eq!(got[0].nonce.as_deref(), Some(format!("{id}.0").as_str()));
    assert_eq!(
        w.discord.identify_count(),
        1,
        "the crash resumed, not identified"
    );
    assert_eq!(w.discord.resume_count(), 1);
}

#[test]
fn a_bad_token_shows_a_clear_error_in_channels_status_and_the_gateway_keeps_serving() {
    let w = world("token_env = \"MOLT_TEST_DISCORD_TOKEN\"", false);
    let wrong = "not-the-bot-token-2b7d";
    let _g = w.start_with_env(&[("MOLT_TEST_DISCORD_TOKEN", wrong)]);
    let s = w.wait_error("the channel reports the bad token");
    let err = s["lastError"].as_str().unwrap();
    assert!(err.contains("token"), "{err}");
    assert!(!err.contains(wrong), "the token is never shown: {err}");
    assert_eq!(s["connected"], false);
    assert_eq!(s["fatal"], true, "no retry loop on a bad token");
    assert_eq!(s["tokenSource"], "env:MOLT_TEST_DISCORD_TOKEN");
    // The gateway serves on.
    let st = w.home.cli_ok(&["status"]);
    assert!(st.contains("serving"), "{st}");
    let attempts = w.discord.identify_count();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.discord.identify_count(), attempts, "it does not retry");
}

#[test]
fn a_stop_with_a_turn_in_flight_stays_within_the_stop_budget() {
    let w = world("dm_policy = \"open\"", true);
    w.model.push(
        Reply::text_chunks((0..200).map(|i| format!("w{i} "))).interval(Duration::from_millis(100)),
    );
    let mut g = w.start();
    w.wait_connected();
    w.dm("a long answer please");
    assert!(
        w.model.wait_for_chunks(2, Duration::from_secs(20)),
        "the turn is streaming"
    );
    let (code, took) = g
        .terminate(Duration::from_secs(15))
        .expect("the gateway exits");
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_millis(4000 + 1000),
        "stop took {took:?}"
    );
    // The session was let go without ending it: the next start resumes.
    w.model.push(Reply::text("finished later"));
    let _g2 = w.start();
    let dm = w.discord.dm_channel_for(USER);
    let got = w.posted_in(&dm, 1, Duration::from_secs(30));
    assert_eq!(got.len(), 1);
    assert_eq!(w.discord.identify_count(), 1);
    assert_eq!(w.discord.resume_count(), 1);
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_token_never_reaches_logs_or_state_and_a_readable_config_holding_it_is_refused() {
    let w = world("dm_policy = \"open\"", true);
    w.model.push(Reply::text("secret-free"));
    let mut g = w.start_with_env(&[("MOLT_LOG", "debug")]);
    w.wait_connected();
    let dm = w.discord.dm_channel_for(USER);
    w.dm("hello");
    w.posted_in(&dm, 1, Duration::from_secs(30));
    g.terminate(Duration::from_secs(15));
    for f in files(&w.home.state_dir())
        .into_iter()
        .chain([w.home.log_path()])
    {
        let bytes = std::fs::read(&f).unwrap_or_default();
        let hit = bytes
            .windows(TOKEN.len())
            .any(|win| win == TOKEN.as_bytes());
        assert!(!hit, "the token is in {}", f.display());
    }

    // The config holds the token and others may read it: the channel refuses to start and
    // says how to fix it; the gateway serves on.
    let cfg = std::fs::read_to_string(w.home.config_path()).unwrap();
    // Without the model key, so only the channel's check applies.
    let cfg = cfg.replace(
        &format!("api_key = \"{KEY}\""),
        "api_key_env = \"MOLT_TEST_MODEL_KEY\"",
    );
    std::fs::write(w.home.config_path(), cfg).unwrap();
    std::fs::set_permissions(w.home.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let _g2 = w.start();
    let s = w.wait_error("the channel refuses the readable config");
    let err = s["lastError"].as_str().unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(s["connected"], false);
    assert_eq!(
        w.discord.identify_count(),
        1,
        "no connection from the refused start"
    );
}

/// Session keys from `molt sessions list`.
fn session_keys(home: &Home) -> BTreeSet<String> {
    let list = home.cli_json(&["sessions", "list", "--json"]);
    list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["key"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn guild_channels_and_threads_route_to_their_sessions_behind_the_allowlist_and_mentions() {
    const GUILD: &str = "200000000000000001";
    const CHANNEL: &str = "210000000000000001";
    const THREAD: &str = "220000000000000001";
    const OTHER_GUILD: &str = "200000000000000009";
    let w = world(
        &format!("[channels.discord.guilds.\"{GUILD}\"]\nusers = []\n"),
        true,
    );
    w.discord.add_guild_channel(GUILD, CHANNEL);
    w.discord.add_thread(GUILD, CHANNEL, THREAD);
    w.discord
        .add_guild_channel(OTHER_GUILD, "210000000000000009");
    w.model.set_default(Reply::text("noted"));
    let _g = w.start();
    w.wait_connected();
    let msg = |channel: &str, guild: &str, text: &str, mention: bool, bot: bool| {
        w.discord.send_message(Inbound {
            channel_id: channel.into(),
            guild_id: Some(guild.into()),
            author_id: USER.into(),
            author_name: "alice".into(),
            author_is_bot: bot,
            content: text.into(),
            mentions_bot: mention,
        })
    };
    // Ignored: no mention (require_mention defaults to true), a guild not on the allowlist,
    // a bot.
    msg(CHANNEL, GUILD, "chatter without a mention", false, false);
    msg("210000000000000009", OTHER_GUILD, "elsewhere", true, false);
    msg(CHANNEL, GUILD, "a bot speaks", true, true);
    // Answered: a mention in the channel, and one in its thread.
    msg(CHANNEL, GUILD, "hey molt, in the channel", true, false);
    let in_channel = w.posted_in(CHANNEL, 1, Duration::from_secs(30));
    msg(THREAD, GUILD, "hey molt, in the thread", true, false);
    let in_thread = w.posted_in(THREAD, 1, Duration::from_secs(30));
    assert_eq!(
        (
            in_channel[0].content.as_str(),
            in_thread[0].content.as_str()
        ),
        ("noted", "noted")
    );
    assert_eq!(
        w.model.request_count(),
        2,
        "only the two mentions ran turns"
    );
    let keys = session_keys(&w.home);
    assert!(
        keys.contains(&format!("agent:main:discord:channel:{CHANNEL}")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!(
            "agent:main:discord:channel:{CHANNEL}:thread:{THREAD}"
        )),
        "{keys:?}"
    );
    assert_eq!(w.posted_count("210000000000000009"), 0);
    let texts: Vec<String> = w
        .model
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        texts
            .iter()
            .all(|t| !t.contains("chatter") && !t.contains("a bot speaks"))
    );

    // `molt message send` posts to a channel target.
    let out = w.home.cli_ok(&[
        "message",
        "send",
        "--channel",
        "discord",
        "--to",
        CHANNEL,
        "from the operator",
    ]);
    assert!(out.contains("sent"), "{out}");
    let got = w.posted_in(CHANNEL, 2, Duration::from_secs(10));
    assert_eq!(got[1].content, "from the operator");
}

#[test]
fn per_peer_dms_get_their_own_session_and_an_allowlist_ignores_everyone_else() {
    let w = world(
        &format!("dm_policy = \"allowlist\"\ndm_scope = \"per-peer\"\nallow_from = [\"{USER}\"]"),
        true,
    );
    w.model.set_default(Reply::text("hi alice"));
    let _g = w.start();
    w.wait_connected();
    let other = "300000000000000055";
    w.dm_from(other, "eve", "am I allowed?");
    w.dm("hello");
    let dm = w.discord.dm_channel_for(USER);
    w.posted_in(&dm, 1, Duration::from_secs(30));
    assert_eq!(
        w.model.request_count(),
        1,
        "only the allowed sender ran a turn"
    );
    assert_eq!(
        w.posted_count(&w.discord.dm_channel_for(other)),
        0,
        "no reply and no pairing code under allowlist"
    );
    let keys = session_keys(&w.home);
    assert!(
        keys.contains(&format!("agent:main:direct:{USER}")),
        "{keys:?}"
    );
    assert!(!keys.contains("agent:main:main"), "{keys:?}");
}

/// A world with one guild channel, its gateway started and connected to the fake.
fn connected_with_channel(guild: &str, channel: &str) -> (World, Gateway) {
    let w = world("", true);
    w.discord.add_guild_channel(guild, channel);
    let g = w.start();
    w.wait_connected();
    (w, g)
}

#[test]
fn message_send_posts_once_and_a_send_with_the_same_key_posts_nothing_new() {
    const CHANNEL: &str = "210000000000000002";
    let (w, _g) = connected_with_channel("200000000000000002", CHANNEL);
    // 2,500 characters in lines: two messages.
    let text: String = (0..50)
        .map(|i| format!("note {i:02} {}\n", "y".repeat(41)))
        .collect();
    let key = "operator-send-1";
    let t0 = Instant::now();
    let out = w.home.cli_ok(&[
        "message",
        "send",
        "--to",
        CHANNEL,
        "--idempotency-key",
        key,
        &text,
    ]);
    let posted = w.posted_in(CHANNEL, 2, Duration::from_secs(10));
    assert_eq!(posted.len(), 2, "{posted:?}");
    let ids: Vec<String> = posted.iter().map(|p| p.id.clone()).collect();
    assert!(
        out.contains(&format!("messages {}, {}", ids[0], ids[1])),
        "the CLI prints the ids: {out}"
    );
    let joined: String = posted.iter().map(|p| p.content.as_str()).collect();
    assert_eq!(joined, text);
    let nonces: Vec<String> = posted.iter().map(|p| p.nonce.clone().unwrap()).collect();
    assert!(
        nonces[0].ends_with(".0") && nonces[1].ends_with(".1"),
        "{nonces:?}"
    );
    eprintln!("send of two chunks took {:?}", t0.elapsed());

    // The same key over the protocol: the same ids, nothing posted.
    let again = w.send(CHANNEL, &text, key).expect("send with the same key");
    assert_eq!(again.message_ids, ids);
    assert_eq!(again.message_id, ids[0]);
    assert_eq!(again.channel_id, CHANNEL);
    assert_eq!(w.posted_count(CHANNEL), 2, "nothing new was posted");
    assert_eq!(w.discord.post_attempts(), 2, "and nothing was even tried");
    let s = w.status();
    assert_eq!(s["pendingReplies"], 0, "{s}");
}

#[test]
fn a_send_cut_by_kill_9_is_posted_once_after_the_restart_and_a_retry_gets_its_ids() {
    const CHANNEL: &str = "210000000000000003";
    let (w, mut g) = connected_with_channel("200000000000000003", CHANNEL);
    // The first post gets a 429 with an 8 s retry_after: the gateway holds the post while
    // it waits, and is killed meanwhile.
    w.discord.fail_next_posts_with_429(1, 8000);
    let key = "durable-send-1";
    let text = "posted exactly once";
    let mut cli = w
        .home
        .cmd()
        .args([
            "message",
            "send",
            "--to",
            CHANNEL,
            "--idempotency-key",
            key,
            text,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn molt message send");
    wait_for(
        "the gateway tries the post",
        Duration::from_secs(20),
        || (w.discord.post_attempts() >= 1).then_some(()),
    );
    g.signal(libc::SIGKILL);
    g.wait_exit(Duration::from_secs(10));
    let t_kill = Instant::now();
    assert_eq!(w.posted_count(CHANNEL), 0, "nothing posted before the kill");
    let nonce = w.discord.post_requests()[0]["nonce"]
        .as_str()
        .expect("the post has a nonce")
        .to_owned();

    // The CLI lost its gateway: it fails and names the key to retry with.
    let ended = poll(Duration::from_secs(60), Duration::from_millis(25), || {
        cli.try_wait().expect("poll the CLI")
    });
    if ended.is_none() {
        let _ = cli.kill();
        panic!("the CLI did not end within 60 s of the kill");
    }
    let out = cli.wait_with_output().expect("the CLI's output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("--idempotency-key {key}")), "{said}");

    let _g2 = w.start();
    w.wait_connected();
    // The key names the queued message: another text under it is refused, not queued.
    let err = w
        .send(CHANNEL, "something else", key)
        .expect_err("a key names one message");
    assert!(err.to_string().contains("already used"), "{err}");
    // A retry with the same key finds the queued message and waits for its post.
    let r = w.send(CHANNEL, text, key).expect("the retry gets the ids");
    eprintln!("posted {:?} after the kill", t_kill.elapsed());
    let posted = w.posted_in(CHANNEL, 1, Duration::from_secs(10));
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(r.message_ids, vec![posted[0].id.clone()]);
    assert_eq!(posted[0].content, text);
    assert_eq!(posted[0].nonce.as_deref(), Some(nonce.as_str()));
    assert_eq!(w.posted_with_nonce(&nonce), 1, "posted exactly once");
    // Once more: the same ids, nothing new.
    let again = w.send(CHANNEL, text, key).expect("send with the same key");
    assert_eq!(again.message_ids, r.message_ids);
    assert_eq!(w.posted_with_nonce(&nonce), 1);
    assert_eq!(w.posted_count(CHANNEL), 1);
    let s = w.status();
    assert_eq!(s["pendingReplies"], 0, "{s}");
}
