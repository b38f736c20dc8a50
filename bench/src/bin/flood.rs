//! A flood of idle TCP connections against a gateway whose open-file limit is 4,096: how fast
//! the flood gets in, how `/readyz` and the owner's `molt status` answer during it, the
//! gateway's memory, how many connections it shed, and when the last idle one is closed (the
//! default 10 s header timeout).

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use molt_bench::{Gateway, Home, bench_home, http_status, mib, ms, print_header, proc_status_kib};

const FLOOD: usize = 5_000;
const GATEWAY_NOFILE: u64 = 4_096;
const PROBES: usize = 20;
const CLI_CALLS: usize = 5;

fn spawn_limited(home: &Home) -> Gateway {
    let mut g = home.spawn_with(&[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: GATEWAY_NOFILE,
                    rlim_max: GATEWAY_NOFILE,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    g.wait_ready_within(Duration::from_secs(30), Duration::from_millis(5));
    g
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    print_header("flood");
    let (soft, _) = molt_bench::raise_nofile_limit();
    assert!(
        soft as usize > FLOOD + 100,
        "this bench needs {} open files, the limit is {soft}",
        FLOOD + 100
    );
    let home = bench_home(None);
    let gw = spawn_limited(&home);
    let base_rss = gw.rss_kib();

    let t0 = Instant::now();
    let mut idle = Vec::with_capacity(FLOOD);
    let deadline = t0 + Duration::from_secs(120);
    while idle.len() < FLOOD && Instant::now() < deadline {
        if let Ok(s) =
            TcpStream::connect_timeout(&([127, 0, 0, 1], gw.port).into(), Duration::from_secs(2))
        {
            idle.push(s);
        }
    }
    let opened = t0.elapsed();
    assert_eq!(idle.len(), FLOOD, "the flood did not get in");

    let mut probes = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let t = Instant::now();
        assert_eq!(http_status(gw.port, "/readyz"), Some(200), "readyz");
        probes.push(t.elapsed());
    }
    let mut cli = Vec::with_capacity(CLI_CALLS);
    let mut last_status = String::new();
    for _ in 0..CLI_CALLS {
        let t = Instant::now();
        let out = home
            .cmd()
            .args(["status", "--json"])
            .output()
            .expect("spawn molt status");
        cli.push(t.elapsed());
        assert!(out.status.success(), "molt status failed during the flood");
        last_status = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    let status: serde_json::Value = serde_json::from_str(&last_status).expect("status JSON");
    let flood_rss = gw.rss_kib();

    // Every idle connection is closed by the header timeout (10 s by default).
    let t_closed = Instant::now();
    let close_deadline = t_closed + Duration::from_secs(30);
    for s in &idle {
        s.set_nonblocking(true).expect("nonblocking");
    }
    while !idle.is_empty() && Instant::now() < close_deadline {
        idle.retain_mut(|s| {
            let mut b = [0u8; 1];
            matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    let all_closed = t0.elapsed();
    let peak = proc_status_kib(gw.pid(), "VmHWM:").unwrap_or(0);

    println!(
        "flood_open conns={FLOOD} secs={:.2} gateway_nofile={GATEWAY_NOFILE}",
        opened.as_secs_f64()
    );
    println!(
        "flood_readyz n={PROBES} p50_ms={} max_ms={}",
        ms(median(probes.clone())),
        ms(*probes.iter().max().expect("probes"))
    );
    println!(
        "flood_molt_status n={CLI_CALLS} p50_ms={} max_ms={}",
        ms(median(cli.clone())),
        ms(*cli.iter().max().expect("cli calls"))
    );
    println!(
        "flood_pool open={} max={} max_per_address={} shed={}",
        status["unauthenticated"]["open"],
        status["unauthenticated"]["max"],
        status["unauthenticated"]["maxPerAddress"],
        status["unauthenticated"]["shed"]
    );
    println!(
        "flood_rss_mib idle={} during={} peak={}",
        mib(base_rss),
        mib(flood_rss),
        mib(peak)
    );
    println!(
        "flood_all_closed secs_from_start={:.2} left_open={}",
        all_closed.as_secs_f64(),
        idle.len()
    );
    molt_bench::print_log_summary("flood", &home);
}
