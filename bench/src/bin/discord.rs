//! The Discord channel with the fake Discord and the fake model on loopback:
//! - **Latency**: one DM at a time; from the fake dispatching MESSAGE_CREATE to the reply's
//!   post arriving at the fake, minus the model's time (its request received → its last SSE
//!   chunk sent). What remains is molt's: gateway read, access check, the commit that
//!   records the message and creates the turn, the turn's own steps, queueing and posting
//!   the reply. All `Instant`s come from this process (both fakes run in it).
//! - **Burst**: 100 messages across 10 guild channels sent at once; none may be lost, and
//!   the time to drain is from the first send to the 100th reply posted.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use molt_bench::{agent_home, dist_fields, ms, print_header};
use molt_fake_discord::{FakeDiscord, Inbound, Options};
use molt_fake_model::{FakeModel, Reply};

const WARMUP: usize = 5;
const MESSAGES: usize = 200;
const BURST: usize = 100;
const CHANNELS: usize = 10;
const USER: &str = "300000000000000001";
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    print_header("discord");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let discord = rt
        .block_on(FakeDiscord::start(Options {
            heartbeat_interval_ms: 5000,
            ..Options::default()
        }))
        .expect("start the fake Discord");
    let model = FakeModel::start_with_key(molt_bench::AGENT_KEY);
    model.set_default(Reply::text("ok, noted."));
    model.record_chunk_times(true);
    let home = agent_home(
        &model.openai_base_url(),
        &format!(
            "[channels.discord]\ntoken = \"{}\"\ndm_policy = \"open\"\ngroup_policy = \"open\"\nrequire_mention = false\n",
            Options::default().token
        ),
    );
    let api = discord.api_url();
    let mut gw = home.spawn_with(&[], |c| {
        c.env("DISCORD_API_URL", &api);
    });
    gw.wait_ready_within(Duration::from_secs(30), Duration::from_millis(2));
    let dm = discord.dm_channel_for(USER);
    // Messages come faster than Discord's per-channel limits allow; molt would (rightly)
    // wait for the buckets. Lift them so the figure is molt's own time.
    discord.set_rate_limit(100_000, Duration::from_secs(1));
    let mut overhead = Vec::with_capacity(MESSAGES);
    let mut total = Vec::with_capacity(MESSAGES);
    for i in 0..WARMUP + MESSAGES {
        let before = discord.posted().len();
        let request = model.request_count() + 1;
        let sent = Instant::now();
        discord.send_message(Inbound {
            channel_id: dm.clone(),
            guild_id: None,
            author_id: USER.into(),
            author_name: "alice".into(),
            author_is_bot: false,
            content: format!("message {i}"),
            mentions_bot: false,
        });
        assert!(
            discord.wait_for_posted(before + 1, TIMEOUT),
            "no reply to message {i} within {TIMEOUT:?}"
        );
        let posted_at = discord.posted_timed()[before].1;
        if i < WARMUP {
            continue;
        }
        let req = &model.requests()[request - 1];
        let last_chunk = model
            .chunk_times()
            .iter()
            .filter(|c| c.request == request)
            .map(|c| c.at)
            .max()
            .expect("the model's chunks were recorded");
        let model_time = last_chunk.saturating_duration_since(req.received_at);
        let whole = posted_at.saturating_duration_since(sent);
        total.push(whole);
        overhead.push(whole.saturating_sub(model_time));
    }
    model.clear_chunk_times();
    println!(
        "discord_reply messages={MESSAGES} {} {}",
        dist_fields("overhead", &mut overhead, "ms"),
        dist_fields("total", &mut total, "ms")
    );

    // The burst: 100 messages over 10 guild channels, all sent at once.
    let guild = "200000000000000001";
    let channels: Vec<String> = (0..CHANNELS)
        .map(|i| format!("2100000000000000{i:02}"))
        .collect();
    for c in &channels {
        discord.add_guild_channel(guild, c);
    }
    let before = discord.posted().len();
    let t0 = Instant::now();
    let mut ids = BTreeSet::new();
    for i in 0..BURST {
        ids.insert(discord.send_message(Inbound {
            channel_id: channels[i % CHANNELS].clone(),
            guild_id: Some(guild.into()),
            author_id: format!("3000000000000001{:02}", i % 50),
            author_name: format!("user{i}"),
            author_is_bot: false,
            content: format!("burst {i}"),
            mentions_bot: false,
        }));
    }
    let drained = discord.wait_for_posted(before + BURST, Duration::from_secs(120));
    let drain = t0.elapsed();
    // Let a late duplicate show before counting.
    std::thread::sleep(Duration::from_millis(500));
    let replies: Vec<_> = discord.posted()[before..].to_vec();
    let answered: BTreeSet<String> = replies
        .iter()
        .filter_map(|p| p.nonce.as_deref())
        .map(|n| n.trim_end_matches(".0").to_owned())
        .collect();
    let lost = ids.difference(&answered).count();
    println!(
        "discord_burst messages={BURST} channels={CHANNELS} drained={drained} replies={} lost={lost} duplicates={} drain_ms={}",
        replies.len(),
        replies.len().saturating_sub(answered.len()),
        ms(drain)
    );
    println!(
        "# fake discord: identifies={} resumes={} post_attempts={} early_retries={}",
        discord.identify_count(),
        discord.resume_count(),
        discord.post_attempts(),
        discord.early_retries()
    );
    molt_bench::stop_and_print(&mut gw);
}
