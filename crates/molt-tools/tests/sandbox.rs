//! The sandbox on real processes: writes confined, reads of system directories allowed,
//! the gateway's home out of reach, TCP denied on request, no_new_privs set.
//!
//! These tests need Landlock (ABI 4 or later for the network ones); the machines this
//! project runs on have it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use molt_tools::sandbox::{self, SandboxSpec, Support};

struct Dirs {
    _tmp: tempfile::TempDir,
    ws: PathBuf,
    tmp: PathBuf,
    /// Stands for the gateway's home: outside the workspace, holding a secret.
    home: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ws = tmp.path().join("ws");
    let t = tmp.path().join("tmp");
    let home = tmp.path().join("home");
    for d in [&ws, &t, &home] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::fs::write(home.join("secret"), "token\n").expect("write secret");
    Dirs {
        ws,
        tmp: t,
        home,
        _tmp: tmp,
    }
}

fn landlock_abi() -> u32 {
    match sandbox::support() {
        Support::Available { abi } => abi,
        other => panic!("these tests need Landlock: {other}"),
    }
}

/// Runs `sh -c script` with `args` as $1…, in `cwd`, under `spec`.
fn run_sandboxed(spec: &SandboxSpec, cwd: &Path, script: &str, args: &[&str]) -> Output {
    let prepared = sandbox::prepare(spec).expect("prepare");
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .current_dir(cwd);
    prepared.install(&mut cmd);
    cmd.output().expect("spawn")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}, stdout {:?}, stderr {:?}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_permission_denied(out: &Output) {
    assert!(!out.status.success(), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{}", text(out));
}

#[test]
fn support_reports_the_abi() {
    let abi = landlock_abi();
    assert!(abi >= 1);
    assert_eq!(sandbox::support().abi(), Some(abi));
    assert!(sandbox::support().to_string().contains("ABI"));
}

#[test]
fn writes_are_confined_to_the_workspace_and_tmp() {
    landlock_abi();
    let d = dirs();
    let spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);

    let target = Path::new("/etc/molt-test");
    let out = run_sandboxed(&spec, &d.ws, "echo x > /etc/molt-test", &[]);
    let existed = target.exists();
    if existed {
        let _ = std::fs::remove_file(target);
    }
    assert_permission_denied(&out);
    assert!(!existed, "/etc/molt-test was created");

    let home_file = d.home.join("planted");
    let out = run_sandboxed(
        &spec,
        &d.ws,
        "echo x > \"$1\"",
        &[&home_file.to_string_lossy()],
    );
    assert_permission_denied(&out);
    assert!(!home_file.exists());

    let out = run_sandboxed(
        &spec,
        &d.ws,
        "echo in-ws > f && mkdir -p sub/dir && echo in-tmp > \"$1/t\" && rm f && echo kept > sub/dir/k",
        &[&d.tmp.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(d.tmp.join("t")).expect("read"),
        "in-tmp\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.ws.join("sub/dir/k")).expect("read"),
        "kept\n"
    );
    // Device files stay usable.
    let out = run_sandboxed(&spec, &d.ws, "echo gone > /dev/null", &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn system_directories_are_readable_and_the_home_is_not() {
    landlock_abi();
    let d = dirs();
    let spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);

    let out = run_sandboxed(&spec, &d.ws, "cat /etc/passwd >/dev/null && ls /usr", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("bin"));

    let secret = d.home.join("secret");
    let out = run_sandboxed(&spec, &d.ws, "cat \"$1\"", &[&secret.to_string_lossy()]);
    assert_permission_denied(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("token"));
    let out = run_sandboxed(&spec, &d.ws, "ls \"$1\"", &[&d.home.to_string_lossy()]);
    assert_permission_denied(&out);
}

#[test]
fn hidden_paths_inside_a_readable_directory_stay_hidden() {
    landlock_abi();
    let d = dirs();
    let shared = d.home.join("shared");
    std::fs::create_dir_all(shared.join("state")).expect("mkdir");
    std::fs::write(shared.join("state/key"), "key\n").expect("write");
    std::fs::write(shared.join("public"), "pub\n").expect("write");
    let mut spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);
    spec.readable.push(shared.clone());
    spec.hide_readable(&[shared.join("state")]).expect("hide");

    let out = run_sandboxed(
        &spec,
        &d.ws,
        "cat \"$1/public\"",
        &[&shared.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = run_sandboxed(
        &spec,
        &d.ws,
        "cat \"$1/state/key\"",
        &[&shared.to_string_lossy()],
    );
    assert_permission_denied(&out);
}

/// Connects to `port` on loopback from a sandboxed bash (its /dev/tcp), then reports
/// whether the listener has the connection queued.
fn connect_from_sandbox(deny_network: bool) -> (Output, bool) {
    let d = dirs();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);
    spec.deny_network = deny_network;
    let prepared = sandbox::prepare(&spec).expect("prepare");
    let mut cmd = Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
        .current_dir(&d.ws);
    prepared.install(&mut cmd);
    let out = cmd.output().expect("spawn bash");
    // The child has exited: a completed connection is already in the accept queue.
    listener.set_nonblocking(true).expect("nonblocking");
    let accepted = listener.accept().is_ok();
    (out, accepted)
}

#[test]
fn network_deny_blocks_tcp_connect() {
    if landlock_abi() < 4 {
        let d = dirs();
        let mut spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);
        spec.deny_network = true;
        assert!(matches!(
            sandbox::prepare(&spec),
            Err(sandbox::SandboxError::NetworkUnsupported { .. })
        ));
        return;
    }
    let (out, accepted) = connect_from_sandbox(false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(accepted, "the connection without deny did not arrive");

    let (out, accepted) = connect_from_sandbox(true);
    assert_permission_denied(&out);
    assert!(!accepted, "a connection got through the deny");
}

#[test]
fn no_new_privs_is_set() {
    landlock_abi();
    let d = dirs();
    let script = "grep NoNewPrivs /proc/self/status";
    let spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);
    let out = run_sandboxed(&spec, &d.ws, script, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NoNewPrivs:\t1"),
        "{}",
        text(&out)
    );

    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    sandbox::no_new_privs_only(&mut cmd);
    let out = cmd.output().expect("spawn");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NoNewPrivs:\t1"),
        "{}",
        text(&out)
    );

    // Control: a plain child inherits the test's own setting.
    let ours = std::fs::read_to_string("/proc/self/status").expect("status");
    if ours.contains("NoNewPrivs:\t0") {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("spawn");
        assert!(String::from_utf8_lossy(&out.stdout).contains("NoNewPrivs:\t0"));
    }
}

#[test]
fn prepare_reports_limitations_and_missing_paths() {
    let abi = landlock_abi();
    let d = dirs();
    let spec = SandboxSpec::for_workspace(&d.ws, &d.tmp);
    let prepared = sandbox::prepare(&spec).expect("prepare");
    assert_eq!(prepared.abi(), abi);
    if abi < 9 {
        assert!(
            prepared
                .limitations()
                .iter()
                .any(|n| n.contains("UNIX sockets by path"))
        );
    }
    let mut missing = spec.clone();
    missing.writable.push(d.ws.join("does-not-exist"));
    let e = sandbox::prepare(&missing).err().map(|e| e.to_string());
    assert!(
        e.as_deref().is_some_and(|m| m.contains("does-not-exist")),
        "{e:?}"
    );
}
