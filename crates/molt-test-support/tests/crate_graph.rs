//! The crate graph keeps the dependency sentences of ARCHITECTURE.md true, from
//! `cargo metadata` (the resolved graph, so a dependency added through a feature or a renamed
//! crate counts too):
//!
//! - only the `molt` binary crate itself, and crates that exist for tests and benches, may
//!   depend on the `molt` package;
//! - `molt-protocol` is pure: nothing it depends on, directly or not, is `tokio`, `rusqlite`
//!   or `reqwest`;
//! - every crate under `crates/` is a library, and only `crates/molt` has a binary.
//!
//! Only normal dependencies count: dev-dependencies do not reach a built library or binary,
//! and build dependencies run at build time only.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Workspace crates that exist only for tests and benches: they may depend on anything.
const TEST_ONLY: &[&str] = &["molt-bench", "molt-fake-model", "molt-test-support"];
/// What a pure protocol crate must not pull in: a runtime, a database, an HTTP client.
const NOT_IN_PROTOCOL: &[&str] = &["tokio", "rusqlite", "reqwest"];

/// `cargo metadata` of this workspace, resolved from the lock file as it is.
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata printed JSON")
}

/// The parts of the metadata the checks read.
struct Graph<'a> {
    /// Package id → package.
    packages: BTreeMap<&'a str, &'a Value>,
    /// Package id → the ids it depends on through a normal dependency.
    normal: BTreeMap<&'a str, Vec<&'a str>>,
    /// Ids of the workspace members.
    members: Vec<&'a str>,
    /// The workspace root directory.
    root: &'a str,
}

impl<'a> Graph<'a> {
    fn new(meta: &'a Value) -> Self {
        let packages = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (p["id"].as_str().expect("package id"), p))
            .collect();
        let normal = meta["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes: cargo metadata without --no-deps")
            .iter()
            .map(|n| {
                let deps = n["deps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| {
                        d["dep_kinds"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|d| d["pkg"].as_str().expect("dep pkg"))
                    .collect();
                (n["id"].as_str().expect("node id"), deps)
            })
            .collect();
        let members = meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|m| m.as_str().expect("member id"))
            .collect();
        Self {
            packages,
            normal,
            members,
            root: meta["workspace_root"].as_str().expect("workspace_root"),
        }
    }

    fn name(&self, id: &str) -> &'a str {
        self.packages[id]["name"].as_str().expect("package name")
    }

    fn member(&self, name: &str) -> &'a str {
        self.members
            .iter()
            .copied()
            .find(|id| self.name(id) == name)
            .unwrap_or_else(|| panic!("no workspace member named {name}"))
    }

    /// The member's directory, relative to the workspace root (`crates/molt`).
    fn dir(&self, id: &str) -> String {
        let manifest = Path::new(
            self.packages[id]["manifest_path"]
                .as_str()
                .expect("manifest"),
        );
        let dir = manifest.parent().expect("manifest dir");
        dir.strip_prefix(self.root)
            .unwrap_or(dir)
            .to_string_lossy()
            .into_owned()
    }

    /// (a) Workspace crates other than `molt` and the test-only ones that depend on `molt`.
    fn depends_on_molt(&self) -> Vec<String> {
        let molt = self.member("molt");
        self.members
            .iter()
            .filter(|&&id| id != molt && !TEST_ONLY.contains(&self.name(id)))
            .filter(|id| self.normal.get(*id).is_some_and(|d| d.contains(&molt)))
            .map(|id| format!("{} -> molt (normal dependency)", self.name(id)))
            .collect()
    }

    /// (b) The paths from `from` to each forbidden crate over normal dependencies, shortest
    /// first, as `a -> b -> c`.
    fn forbidden_paths(&self, from: &str, forbidden: &[&str]) -> Vec<String> {
        let start = self.member(from);
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut found = Vec::new();
        // Each package enters the queue once: the walk ends after at most one visit per node.
        while let Some(id) = queue.pop_front() {
            if forbidden.contains(&self.name(id)) {
                let mut path = vec![self.name(id)];
                let mut at = id;
                while let Some(&p) = parent.get(at) {
                    path.push(self.name(p));
                    at = p;
                }
                path.reverse();
                found.push(path.join(" -> "));
            }
            for &dep in self.normal.get(id).into_iter().flatten() {
                if dep != start && !parent.contains_key(dep) {
                    parent.insert(dep, id);
                    queue.push_back(dep);
                }
            }
        }
        found
    }

    /// (c) Crates under `crates/` that are not libraries, and binaries outside `crates/molt`.
    fn target_kinds(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for &id in &self.members {
            let dir = self.dir(id);
            if !dir.starts_with("crates/") {
                continue;
            }
            let kinds: Vec<(&str, &str)> = self.packages[id]["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .flat_map(|t| {
                    let name = t["name"].as_str().expect("target name");
                    t["kind"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(move |k| Some((k.as_str()?, name)))
                })
                .collect();
            let has = |kind: &str| kinds.iter().any(|(k, _)| *k == kind);
            if dir == "crates/molt" {
                if !has("bin") {
                    bad.push(format!("{} ({dir}) has no bin target", self.name(id)));
                }
                continue;
            }
            if !has("lib") {
                bad.push(format!("{} ({dir}) is not a library", self.name(id)));
            }
            for (_, target) in kinds.iter().filter(|(k, _)| *k == "bin") {
                bad.push(format!(
                    "{} ({dir}) has a bin target `{target}`; only crates/molt may",
                    self.name(id)
                ));
            }
        }
        bad
    }
}

#[test]
fn only_molt_itself_and_test_crates_depend_on_the_molt_package() {
    let meta = metadata();
    let bad = Graph::new(&meta).depends_on_molt();
    assert!(
        bad.is_empty(),
        "library crates must not depend on the binary crate: {bad:#?}"
    );
}

#[test]
fn molt_protocol_pulls_in_no_runtime_database_or_http_client() {
    let meta = metadata();
    let g = Graph::new(&meta);
    // A control: the same walk finds the runtime the gateway does use, so an empty answer
    // below is not a misread of the metadata.
    let control = g.forbidden_paths("molt-gateway", &["tokio"]);
    assert!(
        control
            .iter()
            .any(|p| p.starts_with("molt-gateway -> tokio")),
        "the walk does not see molt-gateway -> tokio: {control:?}"
    );
    let bad = g.forbidden_paths("molt-protocol", NOT_IN_PROTOCOL);
    assert!(bad.is_empty(), "molt-protocol must stay pure: {bad:#?}");
}

#[test]
fn every_crate_under_crates_is_a_library_and_only_molt_has_a_binary() {
    let meta = metadata();
    let bad = Graph::new(&meta).target_kinds();
    assert!(bad.is_empty(), "{bad:#?}");
}

/// The checks themselves, on a made-up graph that breaks each rule once: they must name each
/// offending edge (a check that cannot fail proves nothing).
#[test]
fn the_checks_name_the_offending_edges_of_a_broken_graph() {
    let pkg = |name: &str, dir: &str, kinds: &[&str]| {
        json!({
            "id": format!("{name}-id"),
            "name": name,
            "manifest_path": format!("/ws/{dir}/Cargo.toml"),
            "targets": kinds.iter().map(|k| json!({"name": name, "kind": [k]})).collect::<Vec<_>>(),
        })
    };
    let dep = |name: &str, kind: Value| json!({"pkg": format!("{name}-id"), "dep_kinds": [{"kind": kind}]});
    let meta = json!({
        "workspace_root": "/ws",
        "workspace_members": ["molt-id", "molt-protocol-id", "molt-store-id", "molt-test-support-id"],
        "packages": [
            pkg("molt", "crates/molt", &["bin"]),
            pkg("molt-protocol", "crates/molt-protocol", &["lib"]),
            pkg("molt-store", "crates/molt-store", &["lib", "bin"]),
            pkg("molt-test-support", "crates/molt-test-support", &["lib"]),
            pkg("helper", "registry/helper", &["lib"]),
            pkg("tokio", "registry/tokio", &["lib"]),
            pkg("rusqlite", "registry/rusqlite", &["lib"]),
        ],
        "resolve": {"nodes": [
            {"id": "molt-id", "deps": [dep("molt-protocol", Value::Null), dep("molt-store", Value::Null)]},
            {"id": "molt-protocol-id", "deps": [dep("helper", Value::Null), dep("rusqlite", json!("dev"))]},
            {"id": "molt-store-id", "deps": [dep("molt", Value::Null)]},
            {"id": "molt-test-support-id", "deps": [dep("molt", Value::Null)]},
            {"id": "helper-id", "deps": [dep("tokio", Value::Null)]},
            {"id": "tokio-id", "deps": []},
            {"id": "rusqlite-id", "deps": []},
        ]},
    });
    let g = Graph::new(&meta);
    assert_eq!(
        g.depends_on_molt(),
        ["molt-store -> molt (normal dependency)"]
    );
    assert_eq!(
        g.forbidden_paths("molt-protocol", NOT_IN_PROTOCOL),
        ["molt-protocol -> helper -> tokio"],
        "a dev-dependency (rusqlite) does not count"
    );
    assert_eq!(
        g.target_kinds(),
        ["molt-store (crates/molt-store) has a bin target `molt-store`; only crates/molt may"]
    );
}
