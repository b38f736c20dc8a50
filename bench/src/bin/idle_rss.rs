//! Resident memory of an idle gateway: start it, leave it alone for 10 s, read VmRSS.

use std::time::Duration;

use molt_bench::{
    bench_home, fd_count, mib, print_header, print_log_summary, proc_status_field, proc_status_kib,
    start,
};

const IDLE: Duration = Duration::from_secs(10);

fn main() {
    print_header("idle_rss");
    let home = bench_home(None);
    let mut gw = start(&home);
    let at_ready = gw.rss_kib();
    std::thread::sleep(IDLE);
    let pid = gw.pid();
    let rss = gw.rss_kib();
    let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    let threads = proc_status_field(pid, "Threads:").unwrap_or_default();
    let fds = fd_count(pid).unwrap_or(0);
    println!(
        "idle_rss_mib value={} after_s={} (at_ready={} peak_hwm={} threads={threads} fds={fds})",
        mib(rss),
        IDLE.as_secs(),
        mib(at_ready),
        mib(hwm),
    );
    let (code, _) = molt_bench::stop(&mut gw);
    assert_eq!(code, Some(0), "exit code; log:\n{}", home.stderr_log());
    print_log_summary("idle_rss", &home);
}
