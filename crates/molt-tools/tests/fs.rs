//! The file tools on a real filesystem: confinement by the kernel, caps, atomic writes.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use molt_tools::fs::{Edit, EntryKind, FsError, FsErrorKind, Workspace};

struct Fixture {
    _tmp: tempfile::TempDir,
    /// A directory beside the workspace, standing for everything outside it.
    outside: PathBuf,
    ws: Workspace,
    ws_path: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir outside");
    std::fs::write(outside.join("secret"), "secret\n").expect("write secret");
    let ws_path = tmp.path().join("ws");
    let ws = Workspace::open(&ws_path).expect("open workspace");
    Fixture {
        outside,
        ws,
        ws_path,
        _tmp: tmp,
    }
}

fn err_kind<T: std::fmt::Debug>(r: Result<T, FsError>) -> FsError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

fn assert_outside<T: std::fmt::Debug>(r: Result<T, FsError>, fx: &Fixture) {
    let e = err_kind(r);
    assert_eq!(e.kind, FsErrorKind::OutsideWorkspace, "{e}");
    assert!(e.message.contains("leads outside the workspace"), "{e}");
    let host = fx.ws_path.to_string_lossy();
    assert!(!e.message.contains(host.as_ref()), "host path leaked: {e}");
}

#[test]
fn open_creates_the_workspace_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = tmp.path().join("a/b/ws");
    let ws = Workspace::open(&p).expect("open");
    let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(ws.path(), p.as_path());
}

#[test]
fn dotdot_absolute_and_symlinks_out_are_refused_by_every_tool() {
    let fx = fixture();
    let ws = &fx.ws;
    symlink("/etc", fx.ws_path.join("etc")).expect("symlink etc");
    symlink("/etc/hostname", fx.ws_path.join("host")).expect("symlink host");
    symlink(&fx.outside, fx.ws_path.join("out")).expect("symlink out");
    std::fs::create_dir(fx.ws_path.join("sub")).expect("mkdir sub");
    let edit = [Edit {
        old_text: "secret".into(),
        new_text: "x".into(),
    }];

    for path in [
        "../outside/secret",
        "sub/../../outside/secret",
        &format!("{}", fx.outside.join("secret").display()),
        "/etc/hostname",
        "etc/hostname",
        "host",
        "out/secret",
    ] {
        assert_outside(ws.read(path, None, None), &fx);
        assert_outside(ws.edit(path, &edit), &fx);
        assert_outside(ws.write(path, b"pwned"), &fx);
    }
    for path in ["..", "../outside", "/etc", "etc", "out", "sub/../.."] {
        assert_outside(ws.list(Some(path), None, None), &fx);
        assert_outside(ws.open_dir(path), &fx);
    }
    // Writes that would create something outside, directly or through a new directory.
    assert_outside(ws.write("out/new.txt", b"x"), &fx);
    assert_outside(ws.write("out/newdir/new.txt", b"x"), &fx);
    assert_outside(ws.write("../new.txt", b"x"), &fx);
    assert_outside(ws.write("/tmp/molt-tools-abs-test/x", b"x"), &fx);
    assert!(!fx.outside.join("new.txt").exists());
    assert!(!fx.outside.join("newdir").exists());
    assert!(!Path::new("/tmp/molt-tools-abs-test").exists());
    assert_eq!(
        std::fs::read_to_string(fx.outside.join("secret")).expect("read secret"),
        "secret\n"
    );
}

#[test]
fn symlinks_that_stay_inside_work() {
    let fx = fixture();
    std::fs::create_dir(fx.ws_path.join("real")).expect("mkdir");
    std::fs::write(fx.ws_path.join("real/f.txt"), "one\n").expect("write");
    symlink("real", fx.ws_path.join("alias")).expect("symlink dir");
    symlink("real/f.txt", fx.ws_path.join("link.txt")).expect("symlink file");

    assert_eq!(
        fx.ws.read("alias/f.txt", None, None).expect("read").text,
        "one\n"
    );
    let edited = fx.ws.edit(
        "link.txt",
        &[Edit {
            old_text: "one".into(),
            new_text: "two".into(),
        }],
    );
    assert_eq!(edited.expect("edit").replacements, 1);
    // The symlink is still a symlink; its target changed.
    let meta = std::fs::symlink_metadata(fx.ws_path.join("link.txt")).expect("lstat");
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        std::fs::read_to_string(fx.ws_path.join("real/f.txt")).expect("read"),
        "two\n"
    );
    let out = fx
        .ws
        .write("alias/g.txt", b"g")
        .expect("write via dir link");
    assert!(out.created);
    assert!(fx.ws_path.join("real/g.txt").is_file());
}

#[test]
fn write_creates_parents_atomically_with_modes() {
    let fx = fixture();
    let out = fx.ws.write("a/b/c.txt", b"hello\n").expect("write");
    assert_eq!(out.bytes, 6);
    assert!(out.created);
    let p = fx.ws_path.join("a/b/c.txt");
    assert_eq!(std::fs::read_to_string(&p).expect("read"), "hello\n");
    assert_eq!(
        std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777,
        0o644
    );

    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = fx.ws.write("a/b/c.txt", b"again\n").expect("rewrite");
    assert!(!out.created);
    assert_eq!(std::fs::read_to_string(&p).expect("read"), "again\n");
    assert_eq!(
        std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777,
        0o600,
        "a replaced file keeps its mode"
    );
    // No temporary file is left behind.
    let names: Vec<String> = fx
        .ws
        .list(Some("a/b"), None, None)
        .expect("ls")
        .entries
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["c.txt"]);
}

#[test]
fn write_refuses_bad_targets_and_oversized_content() {
    let fx = fixture();
    std::fs::create_dir(fx.ws_path.join("d")).expect("mkdir");
    let e = err_kind(fx.ws.write("d", b"x"));
    assert_eq!(e.kind, FsErrorKind::NotAFile, "{e}");
    let e = err_kind(fx.ws.write("d/", b"x"));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");
    let e = err_kind(fx.ws.write("", b"x"));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");
    std::fs::write(fx.ws_path.join("plain"), "x").expect("write");
    let e = err_kind(fx.ws.write("plain/child", b"x"));
    assert_eq!(e.kind, FsErrorKind::NotADirectory, "{e}");

    let big = vec![b'a'; molt_tools::fs::WRITE_MAX_BYTES + 1];
    let e = err_kind(fx.ws.write("big", &big));
    assert_eq!(e.kind, FsErrorKind::TooLarge, "{e}");
    assert!(!fx.ws_path.join("big").exists());
    let exact = vec![b'a'; molt_tools::fs::WRITE_MAX_BYTES];
    fx.ws
        .write("big", &exact)
        .expect("a file at the cap is fine");
}

#[test]
fn read_windows_by_lines() {
    let fx = fixture();
    let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    fx.ws.write("f.txt", text.as_bytes()).expect("write");

    let all = fx.ws.read("f.txt", None, None).expect("read");
    assert_eq!(all.text, text);
    assert_eq!(all.total_lines, Some(10));
    assert!(!all.truncated);
    assert_eq!(all.next_offset, None);

    let part = fx.ws.read("f.txt", Some(3), Some(2)).expect("read");
    assert_eq!(part.text, "line 3\nline 4\n");
    assert!(part.truncated);
    assert_eq!(part.next_offset, Some(5));

    let tail = fx.ws.read("f.txt", Some(9), Some(5)).expect("read");
    assert_eq!(tail.text, "line 9\nline 10\n");
    assert!(!tail.truncated);
    assert_eq!(tail.next_offset, None);

    let e = err_kind(fx.ws.read("f.txt", Some(11), None));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("10 lines"), "{e}");
    let e = err_kind(fx.ws.read("f.txt", Some(0), None));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");

    fx.ws.write("nolf", b"a\nb").expect("write");
    assert_eq!(
        fx.ws.read("nolf", None, None).expect("read").total_lines,
        Some(2)
    );
    fx.ws.write("empty", b"").expect("write");
    let empty = fx.ws.read("empty", None, None).expect("read");
    assert_eq!((empty.text.as_str(), empty.total_lines), ("", Some(0)));
}

#[test]
fn read_caps_bytes_at_whole_lines() {
    let fx = fixture();
    let cap = molt_tools::fs::READ_MAX_BYTES;
    // 100-byte lines, enough for twice the cap.
    let line = format!("{}\n", "x".repeat(99));
    let lines = 2 * cap / 100;
    let big = line.repeat(lines);
    std::fs::write(fx.ws_path.join("big.txt"), &big).expect("write");
    let r = fx.ws.read("big.txt", None, None).expect("read");
    assert!(r.truncated);
    assert!(r.text.len() <= cap);
    assert!(r.text.ends_with('\n'), "only whole lines are returned");
    let got = (r.text.len() / 100) as u64;
    assert_eq!(r.next_offset, Some(got + 1));
    assert_eq!(r.total_lines, Some(lines as u64));
    let next = fx
        .ws
        .read("big.txt", r.next_offset, Some(1))
        .expect("read on");
    assert_eq!(next.text, line);

    // One line longer than the cap is returned cut, and the next read moves past it.
    let long = format!("{}\nshort\n", "é".repeat(cap));
    std::fs::write(fx.ws_path.join("long.txt"), &long).expect("write");
    let r = fx.ws.read("long.txt", None, None).expect("read");
    assert!(r.truncated);
    assert!(
        !r.lossy,
        "a cut inside a character is not an encoding error"
    );
    assert!(r.text.len() <= cap && r.text.len() > cap - 4);
    assert_eq!(r.next_offset, Some(2));
    assert_eq!(
        fx.ws.read("long.txt", Some(2), None).expect("read").text,
        "short\n"
    );
}

#[test]
fn read_refuses_binary_and_non_files_and_marks_lossy_text() {
    let fx = fixture();
    std::fs::write(fx.ws_path.join("bin"), b"\x7fELF\x00\x01\x02").expect("write");
    let e = err_kind(fx.ws.read("bin", None, None));
    assert_eq!(e.kind, FsErrorKind::NotText, "{e}");
    assert!(e.message.contains("binary"), "{e}");

    std::fs::write(fx.ws_path.join("latin1"), b"caf\xe9\n").expect("write");
    let r = fx.ws.read("latin1", None, None).expect("read");
    assert!(r.lossy);
    assert_eq!(r.text, "caf\u{fffd}\n");
    let e = err_kind(fx.ws.edit(
        "latin1",
        &[Edit {
            old_text: "caf".into(),
            new_text: "x".into(),
        }],
    ));
    assert_eq!(e.kind, FsErrorKind::NotText, "{e}");

    std::fs::create_dir(fx.ws_path.join("d")).expect("mkdir");
    assert_eq!(
        err_kind(fx.ws.read("d", None, None)).kind,
        FsErrorKind::NotAFile
    );
    let e = err_kind(fx.ws.read("missing", None, None));
    assert_eq!(e.kind, FsErrorKind::NotFound, "{e}");
    assert!(e.message.contains("\"missing\""), "{e}");

    // A FIFO must be refused, not block the tool.
    let fifo = fx.ws_path.join("fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_eq!(
        err_kind(fx.ws.read("fifo", None, None)).kind,
        FsErrorKind::NotAFile
    );
}

#[test]
fn edit_replaces_exactly_once_all_or_nothing() {
    let fx = fixture();
    let p = fx.ws_path.join("code.rs");
    std::fs::write(&p, "fn a() {}\nfn b() {}\nlet x = 1;\nlet x = 1;\n").expect("write");
    let ed = |old: &str, new: &str| Edit {
        old_text: old.into(),
        new_text: new.into(),
    };

    let out = fx
        .ws
        .edit(
            "code.rs",
            &[
                ed("fn a()", "fn alpha()"),
                ed("alpha() {}", "alpha() { 1 }"),
            ],
        )
        .expect("edit");
    assert_eq!(out.replacements, 2);
    let now = std::fs::read_to_string(&p).expect("read");
    assert!(now.starts_with("fn alpha() { 1 }\nfn b() {}\n"), "{now}");

    let e = err_kind(fx.ws.edit("code.rs", &[ed("let x = 1;", "let x = 2;")]));
    assert_eq!(e.kind, FsErrorKind::AmbiguousMatch, "{e}");
    assert!(e.message.contains("2 times"), "{e}");

    let e = err_kind(
        fx.ws
            .edit("code.rs", &[ed("fn b()", "fn beta()"), ed("nope", "x")]),
    );
    assert_eq!(e.kind, FsErrorKind::NoMatch, "{e}");
    assert!(e.message.contains("edit 2"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&p).expect("read"),
        now,
        "a failed edit changes nothing"
    );

    let e = err_kind(fx.ws.edit("code.rs", &[ed("", "x")]));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");
    let e = err_kind(fx.ws.edit("code.rs", &[]));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");

    let huge = "y".repeat(molt_tools::fs::WRITE_MAX_BYTES);
    let e = err_kind(fx.ws.edit("code.rs", &[ed("fn b()", &huge)]));
    assert_eq!(e.kind, FsErrorKind::TooLarge, "{e}");
    assert_eq!(std::fs::read_to_string(&p).expect("read"), now);

    let e = err_kind(fx.ws.edit("missing.rs", &[ed("a", "b")]));
    assert_eq!(e.kind, FsErrorKind::NotFound, "{e}");
}

#[test]
fn list_sorts_paginates_and_reports_kinds() {
    let fx = fixture();
    for name in ["c", "a", "b", "e"] {
        std::fs::write(fx.ws_path.join(name), name.repeat(3)).expect("write");
    }
    std::fs::create_dir(fx.ws_path.join("d")).expect("mkdir");
    symlink("a", fx.ws_path.join("l")).expect("symlink");

    let all = fx.ws.list(None, None, None).expect("ls");
    let names: Vec<&str> = all.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e", "l"]);
    assert!(!all.more);
    assert_eq!(all.entries[0].kind, EntryKind::File);
    assert_eq!(all.entries[0].size, 3);
    assert_eq!(all.entries[3].kind, EntryKind::Dir);
    assert_eq!(all.entries[5].kind, EntryKind::Symlink);

    let page = fx.ws.list(Some("."), Some(2), None).expect("ls");
    assert_eq!(page.entries.len(), 2);
    assert!(page.more);
    let page2 = fx.ws.list(Some(""), Some(2), Some("b")).expect("ls");
    let names: Vec<&str> = page2.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["c", "d"]);
    assert!(page2.more);
    let last = fx.ws.list(None, Some(5), Some("d")).expect("ls");
    assert_eq!(last.entries.len(), 2);
    assert!(!last.more);

    let e = err_kind(fx.ws.list(Some("a"), None, None));
    assert_eq!(e.kind, FsErrorKind::NotADirectory, "{e}");
    let e = err_kind(fx.ws.list(None, Some(0), None));
    assert_eq!(e.kind, FsErrorKind::InvalidArgument, "{e}");
}

#[test]
fn list_caps_the_page_size() {
    let fx = fixture();
    std::fs::create_dir(fx.ws_path.join("many")).expect("mkdir");
    for i in 0..(molt_tools::fs::LIST_MAX_LIMIT + 5) {
        std::fs::write(fx.ws_path.join(format!("many/{i:05}")), "").expect("write");
    }
    let page = fx
        .ws
        .list(Some("many"), Some(usize::MAX), None)
        .expect("ls");
    assert_eq!(page.entries.len(), molt_tools::fs::LIST_MAX_LIMIT);
    assert!(page.more);
    let default = fx.ws.list(Some("many"), None, None).expect("ls");
    assert_eq!(default.entries.len(), molt_tools::fs::LIST_DEFAULT_LIMIT);
}

#[test]
fn open_dir_gives_a_directory_beneath_the_root() {
    let fx = fixture();
    std::fs::create_dir_all(fx.ws_path.join("x/y")).expect("mkdir");
    std::fs::write(fx.ws_path.join("x/y/marker"), "m").expect("write");
    let fd = fx.ws.open_dir("x/y").expect("open_dir");
    let st = rustix::fs::statat(&fd, "marker", rustix::fs::AtFlags::empty()).expect("stat");
    assert_eq!(st.st_size, 1);
    fx.ws.open_dir(".").expect("the root itself");
    let e = err_kind(fx.ws.open_dir("x/y/marker"));
    assert_eq!(e.kind, FsErrorKind::NotADirectory, "{e}");
}
