//! `molt security audit`: a read-only look at the host and at molt's own config. It gathers
//! text from `/proc` and whatever tools exist (ufw, nft, iptables, docker, sshd,
//! fail2ban-client), hands it to molt-audit's parsers, and returns ranked findings, each with
//! the exact commands that fix it. It never changes the firewall, sshd or anything else.
//!
//! Exit codes: 2 when any finding is critical, 1 when the worst is a warning, 0 otherwise.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use molt_audit::accounts::{self, Account};
use molt_audit::agents::{self, TokenStrength};
use molt_audit::firewall::{
    self, Assessment, FirewallContext, FirewallInputs, Inbound, iptables, nft, ufw,
};
use molt_audit::proc_net::{self, Socket, TcpState};
use molt_audit::{Finding, Severity, docker, fail2ban, findings, sshd};
use molt_config::{AuthSource, Context};
use molt_host::{self as host, MoltInstance, OpenClawInstance, Process, ToolRun};
use serde_json::{Value, json};

/// The ids of the findings this module adds to molt-audit's.
pub mod ids {
    /// An agent gateway (molt, OpenClaw, or anything answering the handshake) listens on a
    /// non-loopback address.
    pub const AGENT_EXPOSED: &str = "agent.exposed";
    /// An agent gateway runs as root.
    pub const AGENT_ROOT: &str = "agent.root";
    /// A gateway listens on the network without auth.
    pub const GATEWAY_NO_AUTH: &str = "gateway.bind-without-auth";
    /// `gateway.auth.mode = "none"` on loopback: every local account can drive the gateway.
    pub const GATEWAY_AUTH_NONE: &str = "gateway.auth-none";
    /// A guessable token or password.
    pub const GATEWAY_WEAK_SECRET: &str = "gateway.weak-secret";
    /// A config with a secret, the identity or the database readable by other users.
    pub const GATEWAY_CREDENTIAL_PERMS: &str = "gateway.credential-permissions";
    /// Several profiles share a state dir.
    pub const GATEWAY_SHARED_STATE: &str = "gateway.shared-state";
    /// Several profiles share a token or password.
    pub const GATEWAY_SHARED_SECRET: &str = "gateway.shared-secret";
    /// Password logins to sshd with no fail2ban jail watching it.
    pub const SSH_NO_FAIL2BAN: &str = "ssh.no-fail2ban";
    /// An agent's `exec` runs outside the sandbox (`tools.exec.sandbox = "off"`).
    pub const AGENT_SANDBOX_OFF: &str = "agent.exec-sandbox-off";
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// How each source was read, for the report.
pub type Sources = BTreeMap<&'static str, String>;

fn note(sources: &mut Sources, what: &'static str, run: &ToolRun, program: &str) {
    sources.insert(
        what,
        match run {
            ToolRun::Ran { ok: true, .. } => "read".to_owned(),
            other => other.why_not(program),
        },
    );
}

/// How to audit.
#[derive(Debug, Clone, Default)]
pub struct AuditOptions {
    /// Also probe each exposed port (over loopback, or the bound local address) for an
    /// agent gateway: the OpenClaw/molt handshake challenge and GET /healthz.
    pub deep: bool,
}

/// What the audit found, ranked, and what it read to find it.
pub struct AuditReport {
    /// The exposed listeners were probed.
    pub deep: bool,
    /// Ranked, worst first, without repeats.
    pub findings: Vec<Finding>,
    /// How each source was read (or why it was not).
    pub sources: Sources,
    /// Listeners on non-loopback addresses (what each is), of `listener_count` in all.
    pub listeners: Vec<Value>,
    pub listener_count: usize,
    /// Whether inbound traffic is filtered, per address family.
    pub firewall: Assessment,
    /// Published container ports and Docker's iptables chains.
    pub docker: Value,
    /// sshd's settings and fail2ban's jails (null without sshd).
    pub sshd: Value,
    /// Every molt instance on the host, this profile's included.
    pub gateways: Vec<MoltInstance>,
    /// OpenClaw gateways: processes and units.
    pub openclaw: Vec<OpenClawInstance>,
    /// How long the audit took.
    pub ms: u64,
}

impl AuditReport {
    /// How many findings have severity `s`.
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// 2 when any finding is critical, 1 when the worst is a warning, 0 otherwise.
    pub fn exit_code(&self) -> i32 {
        match findings::worst(&self.findings) {
            Some(Severity::Critical) => 2,
            Some(Severity::Warn) => 1,
            _ => 0,
        }
    }

    /// The report as `molt security audit --json` prints it.
    pub fn to_json(&self) -> Value {
        let summary = json!({
            "critical": self.count(Severity::Critical),
            "warn": self.count(Severity::Warn),
            "info": self.count(Severity::Info),
        });
        json!({
            "deep": self.deep,
            "findings": self.findings,
            "summary": summary,
            "exitCode": self.exit_code(),
            "listeners": self.listeners,
            "firewall": self.firewall,
            "docker": self.docker,
            "sshd": self.sshd,
            "gateways": self.gateways.iter().map(gateway_json).collect::<Vec<_>>(),
            "openclaw": self.openclaw,
            "sources": self.sources,
            "ms": self.ms,
        })
    }
}

/// Audits the host and every molt instance on it, including the profile of `ctx` (whose
/// config failed to load with `config_error`, if it did).
pub fn run(ctx: &Context, config_error: Option<String>, opts: &AuditOptions) -> AuditReport {
    let t0 = Instant::now();
    let mut sources = Sources::new();
    let mut out: Vec<Finding> = Vec::new();

    let procs = host::processes();
    let listeners = host::listeners(&procs);
    out.extend(listeners.notes.iter().cloned());
    sources.insert(
        "listeners",
        format!(
            "/proc/net/tcp{{,6}}: {} listening socket(s){}",
            listeners.all.len(),
            if listeners.unreadable.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} process(es) could not be read (run as root to see every owner)",
                    listeners.unreadable.len()
                )
            }
        ),
    );
    let mut molts = host::molt_instances(&procs, &listeners);
    if !molts.iter().any(|m| m.config_path == ctx.config_path) {
        // This profile, even when it is not running and has no unit.
        let mut me = host::molt_instance(&[], &std::env::vars().collect());
        me.config_path = ctx.config_path.clone();
        me.state_dir = ctx.state_dir.clone();
        me.profile = ctx.profile.to_string();
        me.config = match &config_error {
            Some(e) => Err(e.clone()),
            None => Ok(ctx.config.clone()),
        };
        molts.push(me);
    }
    let claws = host::openclaw_instances(&procs, &listeners);

    // sshd first: its ports are what a firewall remedy must keep open.
    let ssh = sshd_settings(&mut sources);
    let ssh_ports = ssh
        .as_ref()
        .ok()
        .and_then(|s| s.as_ref())
        .map(|s| s.ports.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| vec![22]);

    // Firewall.
    let fw_tools = FirewallTools::read(&mut sources);
    let exposed: Vec<&host::Listener> = listeners.all.iter().filter(|l| l.is_exposed()).collect();
    let keep_open: Vec<u16> = molts
        .iter()
        .filter(|m| m.configured() == Some(true))
        .flat_map(|m| m.listeners.iter())
        .filter(|a| proc_net::is_exposed(a.ip()))
        .map(|a| a.port())
        .collect();
    let fw_ctx = FirewallContext {
        ssh_ports: ssh_ports.clone(),
        keep_open,
        exposed_ports: exposed.iter().map(|l| l.addr.port()).collect(),
    };
    let assessment = fw_tools.assess(&fw_ctx);
    out.extend(assessment.findings(&fw_ctx));
    out.extend(fw_tools.parse_findings());
    let filters = assessment.filters_inbound();

    // Listeners on the network.
    let mut listener_json = Vec::new();
    for l in &exposed {
        let (entry, finding) =
            exposed_listener(l, &procs, &molts, &claws, &ssh_ports, filters, opts.deep);
        listener_json.push(entry);
        out.push(finding);
    }

    // Docker.
    let docker_json = docker_findings(&fw_tools, filters, &mut sources, &mut out);

    // sshd and fail2ban.
    let mut ssh_json = Value::Null;
    match &ssh {
        Ok(Some(s)) => {
            out.extend(s.findings());
            let f2b = fail2ban_state(&mut sources);
            let guarded = f2b.as_ref().is_some_and(|f| f.guards_sshd());
            if !guarded {
                out.push(no_fail2ban_finding(s.password_login(), f2b.is_some()));
            }
            ssh_json = json!({
                "source": s.source, "passwordLogin": s.password_login(),
                "permitRootLogin": s.permit_root_login.value.as_str(),
                "ports": s.ports, "fail2banJails": f2b.map(|f| f.jails),
            });
        }
        Ok(None) => {}
        Err(reason) => out.push(sshd::unknown_finding(reason)),
    }

    // molt's own gateways, and every agent's user.
    let accounts = molt_audit::accounts::parse_passwd(
        &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
    );
    let running: Vec<u32> = procs.iter().filter_map(|p| p.uid).collect();
    out.extend(gateway_findings(&molts, &accounts, &running));
    for c in &claws {
        if c.uid == Some(0) {
            out.push(root_finding(
                &format!(
                    "the OpenClaw gateway {}",
                    c.command.as_deref().unwrap_or("")
                ),
                "openclaw",
            ));
        }
    }

    findings::rank(&mut out);
    findings::dedup(&mut out);
    AuditReport {
        deep: opts.deep,
        findings: out,
        sources,
        listeners: listener_json,
        listener_count: listeners.all.len(),
        firewall: assessment,
        docker: docker_json,
        sshd: ssh_json,
        gateways: molts,
        openclaw: claws,
        ms: t0.elapsed().as_millis() as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// Firewall

struct FirewallTools {
    ufw: Option<ufw::UfwStatus>,
    nft: Option<nft::NftRuleset>,
    iptables: Option<iptables::IptablesRules>,
    ip6tables: Option<iptables::IptablesRules>,
    iptables_nat: Option<iptables::IptablesRules>,
    /// None of the tools is installed.
    none_installed: bool,
}

impl FirewallTools {
    fn read(sources: &mut Sources) -> Self {
        let mut installed = 0;
        let mut get = |what: &'static str, program: &str, args: &[&str], sources: &mut Sources| {
            let tool = host::find_tool(
                program,
                &[&format!("/usr/sbin/{program}"), &format!("/sbin/{program}")],
            );
            let run = host::run_tool(&tool, args, TOOL_TIMEOUT);
            if !matches!(run, ToolRun::Missing) {
                installed += 1;
            }
            note(sources, what, &run, program);
            run.stdout_ok().map(str::to_owned)
        };
        let ufw = get("ufw", "ufw", &["status", "verbose"], sources).map(|t| ufw::parse(&t));
        let nft = get("nft", "nft", &["list", "ruleset"], sources).map(|t| nft::parse(&t));
        let iptables = get("iptables", "iptables", &["-S"], sources).map(|t| iptables::parse(&t));
        let ip6tables =
            get("ip6tables", "ip6tables", &["-S"], sources).map(|t| iptables::parse(&t));
        let iptables_nat = get("iptables-nat", "iptables", &["-t", "nat", "-S"], sources)
            .map(|t| iptables::parse(&t));
        FirewallTools {
            ufw,
            nft,
            iptables,
            ip6tables,
            iptables_nat,
            none_installed: installed == 0,
        }
    }

    fn assess(&self, ctx: &FirewallContext) -> Assessment {
        if self.none_installed {
            // No tool to read rules with, and none to have written them: nothing filters.
            let open = || Inbound::Open {
                evidence: vec!["no firewall tool is installed (ufw, nft, iptables)".into()],
            };
            return Assessment {
                v4: open(),
                v6: open(),
                ufw: None,
                ufw_allows_ssh: None,
                ufw_missing_ssh_ports: Vec::new(),
            };
        }
        firewall::assess(
            &FirewallInputs {
                ufw: self.ufw.as_ref(),
                nft: self.nft.as_ref(),
                iptables: self.iptables.as_ref(),
                ip6tables: self.ip6tables.as_ref(),
            },
            ctx,
        )
    }

    fn parse_findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some(u) = &self.ufw {
            out.extend(u.notes.finding("ufw status verbose", u.rules.len()));
        }
        if let Some(n) = &self.nft {
            out.extend(n.notes.finding("nft list ruleset", n.chains.len()));
        }
        for (what, r) in [
            ("iptables -S", &self.iptables),
            ("ip6tables -S", &self.ip6tables),
            ("iptables -t nat -S", &self.iptables_nat),
        ] {
            if let Some(r) = r {
                out.extend(r.notes.finding(what, r.rules.len()));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Listeners

/// What an exposed listener is, as JSON, and its finding.
fn exposed_listener(
    l: &host::Listener,
    procs: &[Process],
    molts: &[MoltInstance],
    claws: &[host::OpenClawInstance],
    ssh_ports: &[u16],
    filters: bool,
    deep: bool,
) -> (Value, Finding) {
    let owners: Vec<&Process> = l
        .pids
        .iter()
        .filter_map(|p| procs.iter().find(|q| q.pid == *p))
        .collect();
    let molt = molts.iter().find(|m| m.listeners.contains(&l.addr));
    let claw = claws.iter().find(|c| c.listeners.contains(&l.addr));
    let mut by = Vec::new();
    let mut kind = None;
    if molt.is_some() {
        kind = Some("molt");
        by.push("process");
    } else if claw.is_some() {
        kind = Some("openclaw");
        by.push("process");
    }
    let probe = deep.then(|| host::probe(l.addr));
    if let Some(p) = &probe {
        if p.challenge {
            by.push("handshake");
        }
        if p.build_id.is_some() {
            by.push("healthz");
        }
        if kind.is_none() {
            kind = p.kind();
        }
    }
    let configured = molt
        .and_then(|m| m.configured())
        .or(claw.and_then(|c| c.configured));
    let owner = if owners.is_empty() {
        None
    } else {
        Some(
            owners
                .iter()
                .map(|p| p.describe())
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let entry = json!({
        "address": l.addr.ip().to_string(),
        "port": l.addr.port(),
        "exposure": proc_net::exposure(l.addr.ip()),
        "uid": l.uid,
        "inode": l.inode,
        "pids": l.pids,
        "owner": owner,
        "unit": owners.iter().find_map(|p| p.unit.clone()),
        "agent": kind.map(|k| json!({
            "kind": k,
            "identifiedBy": by,
            "profile": molt.map(|m| m.profile.clone()),
            "configured": configured,
            "version": probe.as_ref().and_then(|p| p.version.clone()),
            "buildId": probe.as_ref().and_then(|p| p.build_id.clone()),
        })),
        "probe": probe,
    });
    let finding = match kind {
        Some(k) => agent_finding(
            l,
            k,
            &by,
            molt,
            configured,
            owner.as_deref(),
            filters,
            probe.as_ref(),
        ),
        None => {
            let socket = Socket {
                local: l.addr,
                remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                state: TcpState::Listen,
                uid: l.uid,
                inode: l.inode,
            };
            let mut f = proc_net::exposed_listener_finding(&socket, owner.as_deref(), filters);
            let sshd = owners.iter().any(|p| p.comm == "sshd")
                || (owners.is_empty() && ssh_ports.contains(&l.addr.port()));
            if sshd {
                // SSH is meant to be reachable; its settings have findings of their own.
                f.severity = Severity::Info;
            } else if deep {
                f.title = format!("{} (not an agent gateway by probe)", f.title);
            }
            f
        }
    };
    (entry, finding)
}

#[allow(clippy::too_many_arguments)]
fn agent_finding(
    l: &host::Listener,
    kind: &str,
    by: &[&str],
    molt: Option<&MoltInstance>,
    configured: Option<bool>,
    owner: Option<&str>,
    filters: bool,
    probe: Option<&host::Probe>,
) -> Finding {
    let port = l.addr.port();
    let what = match (kind, molt) {
        ("molt", Some(m)) => format!("molt gateway (profile {})", m.profile),
        ("molt", None) => "molt gateway".to_owned(),
        ("openclaw", _) => "OpenClaw gateway".to_owned(),
        _ => "agent gateway (OpenClaw protocol)".to_owned(),
    };
    let version = probe
        .and_then(|p| p.version.clone())
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    // An authenticated gateway behind an inbound firewall is a deliberate choice to check;
    // anything else is reachable and should be fixed first.
    let severity = if configured == Some(true) && filters {
        Severity::Warn
    } else {
        Severity::Critical
    };
    let detail = format!(
        "An agent control surface listens on {} ({}), held by {}{version}; identified by {}. \
         Whoever reaches it can drive the agent: run commands, read sessions. Auth: {}. \
         Inbound firewall: {}. Bind it to 127.0.0.1 and reach it over SSH (ssh -L {port}:127.0.0.1:{port} HOST), \
         or stop it if it is abandoned.",
        l.addr,
        match proc_net::exposure(l.addr.ip()) {
            proc_net::Exposure::AllInterfaces => "every interface",
            _ => "one interface",
        },
        owner.unwrap_or("an unidentified process"),
        by.join(" and "),
        match configured {
            Some(true) => "configured",
            Some(false) => "NONE: anyone who connects is in",
            None => "unknown",
        },
        if filters {
            "active (check that it blocks this port)"
        } else {
            "none"
        },
    );
    let mut remedy = vec![format!("ss -ltnp 'sport = :{port}'")];
    match molt {
        Some(m) => {
            let pf = if m.profile == "default" {
                String::new()
            } else {
                format!(" --profile {}", m.profile)
            };
            remedy.push(format!(
                "# set gateway.bind = \"127.0.0.1\" in {}",
                m.config_path.display()
            ));
            match &m.unit {
                Some(u) => remedy.push(format!("systemctl --user restart {u}")),
                None => remedy.push(format!(
                    "kill {} && molt{pf} gateway run",
                    m.pids
                        .first()
                        .map(u32::to_string)
                        .unwrap_or_else(|| "PID".into())
                )),
            }
        }
        None => {
            if let Some(pid) = l.pids.first() {
                remedy.push(format!("kill {pid}"));
            }
        }
    }
    Finding::new(
        ids::AGENT_EXPOSED,
        severity,
        format!("{what} listens on {} (port {port}/tcp)", l.addr.ip()),
        detail,
    )
    .with_remedy(remedy)
}

// ---------------------------------------------------------------------------------------------
// Docker

fn docker_findings(
    fw: &FirewallTools,
    filters: bool,
    sources: &mut Sources,
    out: &mut Vec<Finding>,
) -> Value {
    let ps = match host::docker_ps() {
        Ok(text) => {
            sources.insert("docker", "read".into());
            // parse_ps reads `name\tports`; drop the image column.
            let two: String = text
                .lines()
                .map(|l| {
                    let mut c = l.split('\t');
                    format!("{}\t{}\n", c.next().unwrap_or(""), c.next().unwrap_or(""))
                })
                .collect();
            Some(docker::parse_ps(&two))
        }
        Err(why) => {
            sources.insert("docker", why);
            None
        }
    };
    let mut ipt = fw.iptables_nat.as_ref().map(docker::from_iptables);
    if let Some(filter) = fw.iptables.as_ref().map(docker::from_iptables) {
        let merged = ipt.get_or_insert_with(Default::default);
        merged.docker_chain |= filter.docker_chain;
        merged.accepts.extend(filter.accepts);
        merged.docker_user_filters |= filter.docker_user_filters;
    }
    if let Some(p) = &ps {
        out.extend(p.notes.finding("docker ps", p.published.len()));
    }
    let ports = docker::exposed_ports(ps.as_ref(), ipt.as_ref());
    let user_filters = ipt.as_ref().is_some_and(|i| i.docker_user_filters);
    out.extend(docker::findings(&ports, filters, user_filters));
    json!({
        "published": ps.as_ref().map(|p| &p.published),
        "dockerChain": ipt.as_ref().map(|i| i.docker_chain),
        "dockerUserFilters": user_filters,
        "exposed": ports,
    })
}

// ---------------------------------------------------------------------------------------------
// sshd, fail2ban

/// sshd's settings: `Ok(None)` when sshd is not installed, `Err` when it is but cannot be read.
fn sshd_settings(sources: &mut Sources) -> Result<Option<sshd::SshdSettings>, String> {
    let bin = host::find_tool(
        "sshd",
        &["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"],
    );
    let run = host::run_tool(&bin, &["-T"], TOOL_TIMEOUT);
    let mut fs = sshd::FnFs {
        read: |p: &str| std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()),
        list: |d: &str| {
            std::fs::read_dir(d).map(|it| {
                it.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
        },
    };
    if let Some(mut s) = run.stdout_ok().and_then(sshd::parse_sshd_t) {
        // sshd -T has the values, but not the files they came from: whether a drop-in would
        // be read first (so where the remedy must write) is in the files' layout.
        if let Ok(files) = sshd::parse_sshd_config(sshd::DEFAULT_CONFIG, &mut fs) {
            s.drop_in = files.drop_in;
        }
        sources.insert("sshd", "sshd -T".into());
        return Ok(Some(s));
    }
    let main = Path::new(sshd::DEFAULT_CONFIG);
    if matches!(run, ToolRun::Missing) && !main.exists() {
        sources.insert("sshd", "not installed".into());
        return Ok(None);
    }
    match sshd::parse_sshd_config(sshd::DEFAULT_CONFIG, &mut fs) {
        Ok(s) => {
            sources.insert(
                "sshd",
                format!(
                    "{} and its includes ({})",
                    sshd::DEFAULT_CONFIG,
                    run.why_not("sshd -T")
                ),
            );
            Ok(Some(s))
        }
        Err(e) => {
            sources.insert("sshd", e.clone());
            Err(format!("{}; {e}", run.why_not("sshd -T")))
        }
    }
}

fn fail2ban_state(sources: &mut Sources) -> Option<fail2ban::Fail2banStatus> {
    let bin = host::find_tool("fail2ban-client", &["/usr/bin/fail2ban-client"]);
    let run = host::run_tool(&bin, &["status"], TOOL_TIMEOUT);
    note(sources, "fail2ban", &run, "fail2ban-client");
    run.stdout_ok().and_then(fail2ban::parse_status)
}

fn no_fail2ban_finding(password_login: bool, running: bool) -> Finding {
    let severity = if password_login {
        Severity::Warn
    } else {
        Severity::Info
    };
    let state = if running {
        "fail2ban runs but has no sshd jail"
    } else {
        "fail2ban is not running"
    };
    Finding::new(
        ids::SSH_NO_FAIL2BAN,
        severity,
        "no fail2ban jail watches sshd",
        format!(
            "{state}, so repeated failed SSH logins are never banned.{}",
            if password_login {
                " With password logins on, that leaves guessing unthrottled."
            } else {
                " Keys only, so this matters less."
            }
        ),
    )
    .with_remedy([
        // The journal backend needs python3-systemd, which apt installs only as a
        // recommendation.
        "apt-get install -y fail2ban python3-systemd",
        // Debian 12 logs sshd to the journal only: a jail that reads the default log file
        // finds no /var/log/auth.log and fail2ban refuses to start.
        "if [ -f /var/log/auth.log ]; then printf '[sshd]\\nenabled = true\\n'; else printf \
         '[sshd]\\nenabled = true\\nbackend = systemd\\n'; fi > /etc/fail2ban/jail.d/sshd.local",
        "systemctl enable fail2ban",
        // A restart, not `enable --now`: a fail2ban that already runs must reread its jails.
        "systemctl restart fail2ban",
        "fail2ban-client status sshd",
    ])
}

// ---------------------------------------------------------------------------------------------
// molt's own gateways

fn gateway_json(m: &MoltInstance) -> Value {
    json!({
        "profile": m.profile,
        "configPath": m.config_path,
        "stateDir": m.state_dir,
        "pids": m.pids,
        "uid": m.uid,
        "unit": m.unit,
        "listeners": m.listeners,
        "configured": m.configured(),
        "configError": m.config.as_ref().err(),
    })
}

fn root_finding(what: &str, user: &str) -> Finding {
    Finding::new(
        ids::AGENT_ROOT,
        Severity::Warn,
        format!("{} runs as root", what.trim()),
        "An agent that runs as root turns any prompt injection or tool bug into full control of \
         the host. Run each agent as its own unprivileged user with its own credentials.",
    )
    .with_remedy([
        format!("useradd --system --create-home --shell /usr/sbin/nologin {user}"),
        format!("loginctl enable-linger {user}"),
        format!(
            "# then install and start the agent as {user} (sudo -iu {user}), and stop the root one"
        ),
    ])
}

/// Explicit `auth.mode = "none"` on loopback: every local account drives the gateway.
fn no_auth_on_loopback(who: &str, config_path: &Path, others: &[&Account]) -> Finding {
    let (severity, whom) = if others.is_empty() {
        (
            Severity::Warn,
            "No other account logs in or runs a process here today, but any that does later \
             (a web panel, a container, a second agent) could."
                .to_owned(),
        )
    } else {
        let names: Vec<&str> = others.iter().take(6).map(|a| a.name.as_str()).collect();
        (
            Severity::Critical,
            format!(
                "Other local accounts can do so now: {}{}.",
                names.join(", "),
                if others.len() > names.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        )
    };
    Finding::new(
        ids::GATEWAY_AUTH_NONE,
        severity,
        format!("{who} requires no secret (auth mode none)"),
        format!(
            "Any process that connects to its loopback port can run commands as its user. \
             {whom}"
        ),
    )
    .with_remedy([format!(
        "# remove `mode = \"none\"` from [gateway.auth] in {}, then `molt gateway restart`: \
         the gateway creates a token and this user's molt CLI uses it",
        config_path.display()
    )])
}

/// Agents of `m` whose `exec` runs without the sandbox: their commands can write anywhere
/// the gateway's user can, the gateway's own config and state included.
fn sandbox_off_finding(m: &MoltInstance, c: &molt_config::Config) -> Option<Finding> {
    let home = m.home.as_deref().map(PathBuf::from).unwrap_or_default();
    let off: Vec<String> = c
        .agents
        .ids()
        .into_iter()
        .filter(|id| {
            c.agents
                .resolve_with(id, &home, Path::new(""), &c.tools)
                .is_some_and(|p| !p.tools.exec.sandbox)
        })
        .collect();
    if off.is_empty() {
        return None;
    }
    Some(
        Finding::new(
            ids::AGENT_SANDBOX_OFF,
            Severity::Warn,
            format!(
                "molt profile {}: exec runs unsandboxed for agent(s) {}",
                m.profile,
                off.join(", ")
            ),
            format!(
                "tools.exec.sandbox = \"off\" in {}: the agent's commands can write anywhere \
                 its user can, including the gateway's config and state, and reach the network \
                 whatever tools.exec.network says.",
                m.config_path.display()
            ),
        )
        .with_remedy([format!(
            "# remove tools.exec.sandbox = \"off\" from {} (grant more with \
             tools.exec.allow_write instead), then: molt service restart",
            m.config_path.display()
        )]),
    )
}

fn gateway_findings(molts: &[MoltInstance], accounts: &[Account], running: &[u32]) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in molts {
        let who = format!("molt profile {}", m.profile);
        if m.uid == Some(0) {
            out.push(root_finding(&format!("the {who} gateway"), "molt"));
        }
        let Ok(c) = &m.config else { continue };
        out.extend(sandbox_off_finding(m, c));
        let exposed: Vec<&SocketAddr> = m
            .listeners
            .iter()
            .filter(|a| proc_net::is_exposed(a.ip()))
            .collect();
        let no_auth = c.auth_source() == AuthSource::None;
        let loopback_only = exposed.is_empty() && c.gateway.bind.is_loopback();
        if no_auth && loopback_only {
            // SAFETY: geteuid(2) cannot fail and has no preconditions.
            let owner = m.uid.unwrap_or_else(|| unsafe { libc::geteuid() });
            let others = accounts::others(accounts, owner, running);
            out.push(no_auth_on_loopback(&who, &m.config_path, &others));
        } else if no_auth {
            out.push(
                Finding::new(
                    ids::GATEWAY_NO_AUTH,
                    Severity::Critical,
                    format!("{who} is bound to the network without auth"),
                    format!(
                        "bind {} with auth mode none: anyone who reaches it runs commands as its user.",
                        c.gateway.bind
                    ),
                )
                .with_remedy([
                    "openssl rand -hex 32".to_owned(),
                    format!(
                        "# put it in {} as [gateway.auth] mode = \"token\", token = \"...\"; or set gateway.bind = \"127.0.0.1\"",
                        m.config_path.display()
                    ),
                ]),
            );
        }
        for (kind, secret) in [
            ("token", c.gateway.auth.token.as_deref()),
            ("password", c.gateway.auth.password.as_deref()),
        ] {
            let Some(secret) = secret else { continue };
            if let TokenStrength::Weak { reason } = agents::token_strength(secret) {
                out.push(
                    Finding::new(
                        ids::GATEWAY_WEAK_SECRET,
                        if exposed.is_empty() { Severity::Warn } else { Severity::Critical },
                        format!("{who}'s auth {kind} is weak"),
                        format!(
                            "{reason}. {}",
                            if exposed.is_empty() {
                                "It listens on loopback only, so only local users can try it."
                            } else {
                                "It listens on the network, where it can be guessed."
                            }
                        ),
                    )
                    .with_remedy([
                        "openssl rand -hex 32".to_owned(),
                        format!(
                            "# put the output in {} as gateway.auth.{kind}, then restart the gateway",
                            m.config_path.display()
                        ),
                    ]),
                );
            }
        }
        let has_secret = c.gateway.auth.token.is_some() || c.gateway.auth.password.is_some();
        let mut private: Vec<(std::path::PathBuf, bool)> = vec![
            (molt_config::token_file(&m.state_dir), true),
            (m.state_dir.join("identity/device.json"), true),
            (m.state_dir.join("molt.db"), true),
        ];
        private.insert(0, (m.config_path.clone(), has_secret));
        for (path, secret) in private {
            let Some(mode) = host::mode_of(&path) else {
                continue;
            };
            if secret && mode & 0o077 != 0 {
                out.push(
                    Finding::new(
                        ids::GATEWAY_CREDENTIAL_PERMS,
                        if mode & 0o004 != 0 {
                            Severity::Critical
                        } else {
                            Severity::Warn
                        },
                        format!("{} is readable by other users ({mode:o})", path.display()),
                        format!(
                            "It holds {who}'s credentials or state; other local users can read it."
                        ),
                    )
                    .with_remedy([format!("chmod 600 '{}'", path.display())]),
                );
            }
        }
    }
    // Isolation between profiles: each needs its own state and its own secret.
    let mut by_state: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
    let mut by_secret: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in molts {
        by_state.entry(&m.state_dir).or_default().push(&m.profile);
        if let Ok(c) = &m.config {
            for s in [&c.gateway.auth.token, &c.gateway.auth.password]
                .into_iter()
                .flatten()
            {
                by_secret.entry(s.as_str()).or_default().push(&m.profile);
            }
        }
    }
    for (dir, profiles) in by_state.into_iter().filter(|(_, p)| p.len() > 1) {
        out.push(
            Finding::new(
                ids::GATEWAY_SHARED_STATE,
                Severity::Warn,
                format!(
                    "{} molt instances share the state dir {}",
                    profiles.len(),
                    dir.display()
                ),
                format!(
                    "Profiles {} use one database, identity and lock: they are not isolated, and \
                     only one can run. Give each its own --state-dir (or drop the override).",
                    profiles.join(", ")
                ),
            )
            .with_remedy([format!(
                "grep -rn MOLT_STATE_DIR ~/.config/systemd/user/ {}",
                dir.display()
            )]),
        );
    }
    for (_, profiles) in by_secret.into_iter().filter(|(_, p)| p.len() > 1) {
        out.push(
            Finding::new(
                ids::GATEWAY_SHARED_SECRET,
                Severity::Warn,
                format!("{} molt profiles share one auth secret", profiles.len()),
                format!(
                    "Profiles {} accept the same token or password, so a client of one can drive \
                     all of them. Give each profile its own.",
                    profiles.join(", ")
                ),
            )
            .with_remedy([
                "openssl rand -hex 32".to_owned(),
                "# one per profile, in each molt.toml".to_owned(),
            ]),
        );
    }
    out
}
