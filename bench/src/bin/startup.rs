//! Cold start: time from exec of `molt gateway run` to `/readyz` 200, 20 times, each in a
//! fresh HOME (new state dir, new database). Each gateway is stopped with SIGTERM after.

use std::time::Duration;

use molt_bench::{bench_home, log_counts, ms, percentile, print_header, start};

const STARTS: usize = 20;

fn main() {
    print_header("startup");
    // One uncounted start so the binary is in the page cache; every counted start still
    // creates its state dir and database from nothing.
    {
        let home = bench_home(None);
        let _gw = start(&home);
    }
    let mut ready = Vec::with_capacity(STARTS);
    let mut stop = Vec::with_capacity(STARTS);
    let (mut warns, mut errors) = (0, 0);
    for i in 0..STARTS {
        let home = bench_home(None);
        let mut gw = home.spawn(&[]);
        gw.wait_ready_within(Duration::from_secs(30), Duration::from_millis(2));
        let took = gw.spawned_at().elapsed();
        let (code, stopped) = molt_bench::stop(&mut gw);
        assert_eq!(
            code,
            Some(0),
            "start {i}: exit code after SIGTERM; log:\n{}",
            home.stderr_log()
        );
        assert!(
            home.path().join(".local/state/molt/molt.db").is_file(),
            "start {i}: no database was created"
        );
        let (_, w, e, first) = log_counts(&home);
        warns += w;
        errors += e;
        for l in first {
            println!("# start {i}: {l}");
        }
        ready.push(took);
        stop.push(stopped);
    }
    ready.sort();
    stop.sort();
    println!(
        "startup_to_ready_ms median={} p90={} min={} max={} n={STARTS}",
        ms(percentile(&ready, 50.0)),
        ms(percentile(&ready, 90.0)),
        ms(ready[0]),
        ms(ready[STARTS - 1]),
    );
    println!(
        "idle_sigterm_to_exit_ms median={} p90={} max={} n={STARTS}",
        ms(percentile(&stop, 50.0)),
        ms(percentile(&stop, 90.0)),
        ms(stop[STARTS - 1]),
    );
    println!("# gateway logs over {STARTS} starts: {warns} WARN, {errors} ERROR");
}
