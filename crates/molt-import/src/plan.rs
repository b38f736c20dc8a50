//! Mapping OpenClaw's config onto molt's. Each key is mapped, kept (molt already sets it
//! differently), or listed as not imported with the reason: nothing is dropped silently.

use std::collections::BTreeMap;

use molt_config::channels::{
    DiscordChannelRule, DiscordConfig, DiscordGuild, DmPolicy, GroupPolicy,
};
use molt_config::{AuthMode, Config, ModelConfig, ProviderApi, ProviderConfig};
use serde_json::Value;

use crate::openclaw::Source;
use crate::openclaw::config::Text;
use crate::report::{Item, Status};

/// Collects report items as the mapping goes.
pub(crate) struct Items(pub Vec<Item>);

impl Items {
    pub fn push(
        &mut self,
        category: &'static str,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) {
        self.0.push(Item {
            category,
            name: name.into(),
            status,
            detail: detail.into(),
        });
    }

    fn not(&mut self, category: &'static str, name: impl Into<String>, why: impl Into<String>) {
        self.push(category, name, Status::NotImported, why);
    }
}

/// Sets `slot` to `value` when molt has nothing there; reports either way. `show` renders a
/// value for the report (secrets render as a fixed word).
fn set<T: PartialEq + Clone>(
    items: &mut Items,
    category: &'static str,
    name: &str,
    slot: &mut Option<T>,
    value: T,
    show: impl Fn(&T) -> String,
) {
    match slot {
        None => {
            items.push(category, name, Status::Imported, show(&value));
            *slot = Some(value);
        }
        Some(v) if *v == value => items.push(category, name, Status::Unchanged, ""),
        Some(v) => {
            let detail = format!("molt has {}, OpenClaw {}", show(v), show(&value));
            items.push(category, name, Status::Kept, detail);
        }
    }
}

fn unmapped_keys(
    items: &mut Items,
    category: &'static str,
    prefix: &str,
    v: &Value,
    mapped: &[&str],
) {
    if let Some(o) = v.as_object() {
        for k in o.keys().filter(|k| !mapped.contains(&k.as_str())) {
            items.not(category, format!("{prefix}.{k}"), "no molt counterpart");
        }
    }
}

/// What a secret-bearing string maps to.
enum Secret {
    Inline(String),
    Env(String),
}

fn secret(v: &Value) -> Result<Secret, String> {
    match v {
        Value::String(s) => match Text::parse(s) {
            Text::Plain(p) => Ok(Secret::Inline(p)),
            Text::EnvRef(var) => Ok(Secret::Env(var)),
            Text::Template(_) => {
                Err("built from several variables; molt takes a whole value or one variable".into())
            }
        },
        Value::Object(o) => match (
            o.get("source").and_then(Value::as_str),
            o.get("id").and_then(Value::as_str),
        ) {
            (Some("env"), Some(id)) => Ok(Secret::Env(id.to_owned())),
            (Some(src), _) => Err(format!(
                "a {src:?} secret reference; molt reads keys from its config or the environment"
            )),
            _ => Err("an unreadable secret reference".into()),
        },
        _ => Err("not a string".into()),
    }
}

/// Maps the gateway, providers, default model, agents and Discord onto `molt` (a config read
/// from molt's file, without environment overrides).
pub(crate) fn map_config(
    src: &Source,
    molt: &mut Config,
    items: &mut Items,
    env: &dyn Fn(&str) -> Option<String>,
    workspaces_in_place: bool,
    next: &mut Vec<String>,
) {
    let cfg = &src.config;
    unmapped_keys(
        items,
        "other",
        "openclaw.json",
        cfg,
        &["$schema", "gateway", "models", "agents", "channels"],
    );
    map_gateway(
        cfg.get("gateway").unwrap_or(&Value::Null),
        molt,
        items,
        next,
    );
    map_models(
        cfg.get("models").unwrap_or(&Value::Null),
        molt,
        items,
        env,
        next,
    );
    map_agents(src, molt, items, workspaces_in_place);
    if let Some(Value::Object(channels)) = cfg.get("channels") {
        for (name, v) in channels {
            if name == "discord" {
                map_discord(v, molt, items, next);
            } else {
                items.not(
                    "other",
                    format!("channels.{name}"),
                    "molt has no such channel yet",
                );
            }
        }
    }
}

fn map_gateway(g: &Value, molt: &mut Config, items: &mut Items, next: &mut Vec<String>) {
    const C: &str = "gateway";
    unmapped_keys(items, C, "gateway", g, &["port", "bind", "auth", "mode"]);
    if let Some(port) = g.get("port").and_then(Value::as_u64) {
        match u16::try_from(port) {
            Ok(p) if p > 0 => set(items, C, "port", &mut molt.gateway.port, p, |p| {
                p.to_string()
            }),
            _ => items.not(C, "port", format!("{port} is not a port")),
        }
    }
    match g.get("bind").and_then(Value::as_str) {
        None | Some("loopback") => items.push(
            C,
            "bind",
            Status::Unchanged,
            "loopback (127.0.0.1), as molt's default",
        ),
        Some(other) => items.not(
            C,
            "bind",
            format!(
                "{other:?}: molt stays on loopback; to serve other hosts set gateway.bind \
                 (with auth) after reading `molt security audit`"
            ),
        ),
    }
    let auth = g.get("auth").unwrap_or(&Value::Null);
    unmapped_keys(
        items,
        C,
        "gateway.auth",
        auth,
        &["mode", "token", "password"],
    );
    // Without a mode, OpenClaw goes by which secret is set, as molt does.
    let mode = auth.get("mode").and_then(Value::as_str).or_else(|| {
        if auth.get("token").is_some() {
            Some("token")
        } else if auth.get("password").is_some() {
            Some("password")
        } else {
            None
        }
    });
    let a = &mut molt.gateway.auth;
    let (word, field, var, mode_value) = match mode {
        Some("token") if auth.get("token").is_some() => (
            "token",
            &mut a.token,
            "MOLT_GATEWAY_AUTH_TOKEN",
            AuthMode::Token,
        ),
        Some("password") => (
            "password",
            &mut a.password,
            "MOLT_GATEWAY_AUTH_PASSWORD",
            AuthMode::Password,
        ),
        Some("none") => {
            set(items, C, "auth.mode", &mut a.mode, AuthMode::None, |_| {
                "none".into()
            });
            return;
        }
        Some("token") | None => return,
        Some(other) => {
            items.not(
                C,
                "auth.mode",
                format!("{other:?} has no molt counterpart; molt uses its own token file"),
            );
            return;
        }
    };
    match auth.get(word).map(secret) {
        Some(Ok(Secret::Inline(s))) if !s.is_empty() => {
            set(items, C, &format!("auth.{word}"), field, s, |_| {
                "set (not shown)".into()
            });
            if a.mode.is_none() || a.mode == Some(mode_value) {
                set(items, C, "auth.mode", &mut a.mode, mode_value, |m| {
                    format!("{m:?}").to_lowercase()
                });
            }
        }
        Some(Ok(Secret::Env(v))) => {
            items.not(
                C,
                format!("auth.{word}"),
                format!("the reference ${{{v}}}; molt reads {var}"),
            );
            next.push(format!("Give molt's service {var} with the value of {v} (systemctl --user edit molt-gateway.service: Environment={var}=...)"));
        }
        Some(Err(why)) => items.not(C, format!("auth.{word}"), why),
        _ => items.not(C, format!("auth.{word}"), "empty"),
    }
}

fn map_models(
    m: &Value,
    molt: &mut Config,
    items: &mut Items,
    env: &dyn Fn(&str) -> Option<String>,
    next: &mut Vec<String>,
) {
    const C: &str = "models";
    unmapped_keys(items, C, "models", m, &["providers"]);
    let Some(Value::Object(providers)) = m.get("providers") else {
        return;
    };
    for (name, p) in providers {
        unmapped_keys(
            items,
            C,
            &format!("models.providers.{name}"),
            p,
            &["baseUrl", "api", "apiKey", "models"],
        );
        let api = match p.get("api").and_then(Value::as_str) {
            None | Some("openai-completions") => ProviderApi::OpenAiCompletions,
            Some("anthropic-messages") => ProviderApi::AnthropicMessages,
            Some(other) => {
                items.not(
                    C,
                    format!("provider {name}"),
                    format!("api {other:?}: molt speaks openai-completions and anthropic-messages"),
                );
                continue;
            }
        };
        let base_url = match p.get("baseUrl").and_then(Value::as_str).map(Text::parse) {
            Some(t) => match t.resolve(env) {
                Ok(u) => u,
                Err(var) => {
                    items.not(C, format!("provider {name}"), format!("its baseUrl uses ${{{var}}}, which is not set here; set it and import again"));
                    continue;
                }
            },
            None if api == ProviderApi::AnthropicMessages => "https://api.anthropic.com".into(),
            None => {
                items.not(C, format!("provider {name}"), "it has no baseUrl");
                continue;
            }
        };
        let (api_key, api_key_env) = match p.get("apiKey").map(secret) {
            Some(Ok(Secret::Inline(k))) => (Some(k), None),
            Some(Ok(Secret::Env(v))) => {
                if env(&v).is_none() {
                    next.push(format!("Give molt's service the variable {v} (provider {name}'s key); it is not set in this shell"));
                }
                (None, Some(v))
            }
            Some(Err(why)) => {
                items.not(
                    C,
                    format!("provider {name}"),
                    format!("its apiKey is {why}"),
                );
                continue;
            }
            None => {
                items.not(
                    C,
                    format!("provider {name}"),
                    "it has no apiKey; add one with api_key_env in molt.toml",
                );
                continue;
            }
        };
        let models = p
            .get("models")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|m| {
                        let id = m.get("id")?.as_str()?.to_owned();
                        let mut mc = ModelConfig::unlisted(&id);
                        mc.name = m.get("name").and_then(Value::as_str).map(str::to_owned);
                        if let Some(n) = m.get("contextWindow").and_then(Value::as_u64) {
                            mc.context_window = n;
                        }
                        if let Some(n) = m.get("maxTokens").and_then(Value::as_u64) {
                            mc.max_tokens = n;
                        }
                        Some(mc)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key_word = if api_key_env.is_some() {
            "key from the environment"
        } else {
            "key inline (0600)"
        };
        let detail = format!("{} at {base_url}, {key_word}", api.as_str());
        let new = ProviderConfig {
            api,
            base_url,
            api_key,
            api_key_env,
            models,
            headers: BTreeMap::new(),
            limits: Default::default(),
        };
        match molt.models.providers.get(name) {
            None => {
                items.push(C, format!("provider {name}"), Status::Imported, detail);
                molt.models.providers.insert(name.clone(), new);
            }
            Some(have) if *have == new => {
                items.push(C, format!("provider {name}"), Status::Unchanged, "")
            }
            Some(_) => items.push(
                C,
                format!("provider {name}"),
                Status::Kept,
                "molt already configures a provider of this name",
            ),
        }
    }
}

fn model_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        m => m.get("primary").and_then(Value::as_str).map(str::to_owned),
    }
}

fn map_agents(src: &Source, molt: &mut Config, items: &mut Items, in_place: bool) {
    const C: &str = "agents";
    let a = src.config.get("agents").unwrap_or(&Value::Null);
    unmapped_keys(
        items,
        C,
        "agents",
        a,
        &["defaults", "entries", "list", "ownership"],
    );
    let defaults = a.get("defaults").unwrap_or(&Value::Null);
    unmapped_keys(
        items,
        C,
        "agents.defaults",
        defaults,
        &["model", "workspace"],
    );
    if let Some(m) = model_of(defaults.get("model")) {
        set(
            items,
            C,
            "default model",
            &mut molt.agents.defaults.model,
            m,
            |m| m.clone(),
        );
        if defaults.pointer("/model/fallbacks").is_some() {
            items.not(
                C,
                "default model fallbacks",
                "molt calls one model per agent",
            );
        }
    }
    let (default_id, why) = &src.default_agent;
    if default_id != molt_config::MAIN_AGENT {
        items.push(
            C,
            format!("default agent {default_id}"),
            Status::Note,
            format!("OpenClaw's default ({why}); molt's default agent is always \"main\", so address {default_id} by id"),
        );
    }
    for agent in &src.agents {
        for k in &agent.unmapped {
            items.not(C, format!("agents.{}.{k}", agent.id), "no molt counterpart");
        }
        let exists = molt.agents.agents.contains_key(&agent.id);
        let entry = molt.agents.agents.entry(agent.id.clone()).or_default();
        let before = entry.clone();
        if entry.name.is_none() {
            entry.name = agent.name.clone();
        }
        if entry.model.is_none() {
            entry.model = agent.model.clone();
        }
        if in_place && entry.workspace.is_none() {
            entry.workspace = Some(agent.workspace.display().to_string());
        }
        let status = match (exists, *entry == before) {
            (false, _) => Status::Imported,
            (true, true) => Status::Unchanged,
            (true, false) => Status::Imported,
        };
        let mut detail = Vec::new();
        if let Some(m) = &agent.model {
            detail.push(format!("model {m}"));
        }
        if in_place {
            detail.push(format!(
                "workspace {} (in place)",
                agent.workspace.display()
            ));
        }
        items.push(C, agent.id.clone(), status, detail.join(", "));
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_id(s: &str) -> bool {
    s == "*" || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

fn map_discord(d: &Value, molt: &mut Config, items: &mut Items, next: &mut Vec<String>) {
    const C: &str = "discord";
    unmapped_keys(
        items,
        C,
        "channels.discord",
        d,
        &[
            "enabled",
            "token",
            "dmPolicy",
            "allowFrom",
            "groupPolicy",
            "guilds",
            "dm",
        ],
    );
    // Built in full, then compared with what molt has; detail lines are only for a new block.
    let mut sub = Items(Vec::new());
    let items_outer = items;
    let items = &mut sub;
    let mut out = DiscordConfig {
        enabled: d.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        ..DiscordConfig::default()
    };
    match d.get("token").map(secret) {
        Some(Ok(Secret::Inline(t))) => {
            out.token = Some(t);
            items.push(
                C,
                "token",
                Status::Imported,
                "set (not shown), in the 0600 molt.toml",
            );
        }
        Some(Ok(Secret::Env(v))) => {
            items.push(
                C,
                "token",
                Status::Imported,
                format!("from the variable {v}"),
            );
            next.push(format!(
                "Give molt's service the variable {v} (the Discord bot token)"
            ));
            out.token_env = Some(v);
        }
        Some(Err(why)) => items.not(C, "token", why),
        None => items.push(
            C,
            "token",
            Status::Note,
            "none in the config: molt reads DISCORD_BOT_TOKEN",
        ),
    }
    let dm = d.get("dm").unwrap_or(&Value::Null);
    let policy = d
        .get("dmPolicy")
        .or_else(|| dm.get("policy"))
        .and_then(Value::as_str);
    out.dm_policy = match policy {
        None | Some("pairing") => DmPolicy::Pairing,
        Some("allowlist") => DmPolicy::Allowlist,
        Some("open") => DmPolicy::Open,
        Some("disabled") => DmPolicy::Disabled,
        Some(other) => {
            items.not(
                C,
                "dmPolicy",
                format!("{other:?} is unknown; molt uses pairing"),
            );
            DmPolicy::Pairing
        }
    };
    out.allow_from = strings(d.get("allowFrom").or_else(|| dm.get("allowFrom")));
    let bad: Vec<String> = out
        .allow_from
        .iter()
        .filter(|u| !is_id(u))
        .cloned()
        .collect();
    if !bad.is_empty() {
        items.not(C, "allowFrom", format!("{bad:?} are not numeric user ids"));
        out.allow_from.retain(|u| is_id(u));
    }
    out.group_policy = match d.get("groupPolicy").and_then(Value::as_str) {
        None | Some("allowlist") => GroupPolicy::Allowlist,
        Some("open") => GroupPolicy::Open,
        Some("disabled") => GroupPolicy::Disabled,
        Some(other) => {
            items.not(
                C,
                "groupPolicy",
                format!("{other:?} is unknown; molt uses allowlist"),
            );
            GroupPolicy::Allowlist
        }
    };
    if let Some(Value::Object(guilds)) = d.get("guilds") {
        for (gid, g) in guilds {
            if !is_id(gid) || gid == "*" {
                items.not(C, format!("guild {gid}"), "not a numeric guild id");
                continue;
            }
            unmapped_keys(
                items,
                C,
                &format!("guilds.{gid}"),
                g,
                &["requireMention", "users", "channels"],
            );
            let mut guild = DiscordGuild {
                require_mention: g.get("requireMention").and_then(Value::as_bool),
                users: strings(g.get("users")),
                channels: BTreeMap::new(),
            };
            guild.users.retain(|u| is_id(u));
            if let Some(Value::Object(chs)) = g.get("channels") {
                for (cid, c) in chs {
                    if !is_id(cid) {
                        items.not(
                            C,
                            format!("guild {gid} channel {cid}"),
                            "channels by name are not supported; use the channel id",
                        );
                        continue;
                    }
                    unmapped_keys(
                        items,
                        C,
                        &format!("guilds.{gid}.channels.{cid}"),
                        c,
                        &["enabled", "requireMention", "users", "allow"],
                    );
                    let mut users = strings(c.get("users"));
                    users.retain(|u| is_id(u));
                    guild.channels.insert(
                        cid.clone(),
                        DiscordChannelRule {
                            enabled: c
                                .get("enabled")
                                .or_else(|| c.get("allow"))
                                .and_then(Value::as_bool)
                                .unwrap_or(true),
                            require_mention: c.get("requireMention").and_then(Value::as_bool),
                            users,
                        },
                    );
                }
            }
            let detail = format!("{} channel rule(s)", guild.channels.len());
            out.guilds.insert(gid.clone(), guild);
            items.push(C, format!("guild {gid}"), Status::Imported, detail);
        }
    }
    if out.dm_policy == DmPolicy::Allowlist && out.allow_from.is_empty() {
        items.not(
            C,
            "dmPolicy",
            "allowlist with no usable allowFrom; molt uses pairing",
        );
        out.dm_policy = DmPolicy::Pairing;
    }
    let summary = format!(
        "{}dm_policy {:?}, group_policy {:?}; approved pairings stay in OpenClaw (approve again with `molt pairing approve`)",
        if out.enabled { "" } else { "disabled, " },
        out.dm_policy,
        out.group_policy
    );
    match &molt.channels.discord {
        None => {
            items_outer.0.append(&mut sub.0);
            items_outer.push(C, "channels.discord", Status::Imported, summary);
            molt.channels.discord = Some(out);
        }
        Some(have) if *have == out => {
            items_outer.push(C, "channels.discord", Status::Unchanged, "")
        }
        Some(_) => items_outer.push(
            C,
            "channels.discord",
            Status::Kept,
            "molt already has a different [channels.discord]",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gateway(g: Value) -> (Config, Vec<Item>, Vec<String>) {
        let mut c = Config::default();
        let mut items = Items(Vec::new());
        let mut next = Vec::new();
        map_gateway(&g, &mut c, &mut items, &mut next);
        (c, items.0, next)
    }

    #[test]
    fn gateway_secrets_move_inline_or_become_a_next_step_and_a_public_bind_stays_home() {
        let (c, items, _) = gateway(json!({"auth": {"password": "pw"}, "bind": "lan"}));
        assert_eq!(c.gateway.auth.password.as_deref(), Some("pw"));
        assert_eq!(c.gateway.auth.mode, Some(AuthMode::Password));
        assert!(c.gateway.bind.is_loopback());
        assert!(
            items
                .iter()
                .any(|i| i.name == "bind" && i.status == Status::NotImported)
        );
        assert!(!format!("{items:?}").contains("pw\""), "{items:?}");

        let (c, items, next) = gateway(json!({"auth": {"mode": "token", "token": "${OC_TOKEN}"}}));
        assert_eq!(c.gateway.auth.token, None);
        assert_eq!(
            c.gateway.auth.mode, None,
            "a mode without its secret would not load"
        );
        assert!(
            items
                .iter()
                .any(|i| i.status == Status::NotImported && i.detail.contains("OC_TOKEN"))
        );
        assert!(
            next.iter()
                .any(|n| n.contains("MOLT_GATEWAY_AUTH_TOKEN") && n.contains("OC_TOKEN"))
        );

        let (_, items, _) = gateway(json!({"auth": {"mode": "trusted-proxy"}, "tailscale": {}}));
        assert!(
            items
                .iter()
                .any(|i| i.name == "auth.mode" && i.status == Status::NotImported)
        );
        assert!(
            items
                .iter()
                .any(|i| i.name == "gateway.tailscale" && i.status == Status::NotImported)
        );
    }

    #[test]
    fn providers_keep_env_references_and_unknown_apis_are_listed() {
        let mut c = Config::default();
        let mut items = Items(Vec::new());
        let mut next = Vec::new();
        let env = |k: &str| (k == "BASE").then(|| "http://127.0.0.1:9".to_owned());
        map_models(
            &json!({"providers": {
                "a": {"baseUrl": "${BASE}/v1", "apiKey": "${A_KEY}", "models": [{"id": "m", "maxTokens": 99}]},
                "b": {"api": "anthropic-messages", "apiKey": {"source": "env", "provider": "x", "id": "B_KEY"}},
                "c": {"api": "google-generative-ai", "baseUrl": "http://x", "apiKey": "k"},
                "d": {"baseUrl": "${NOPE}/v1", "apiKey": "k"}
            }}),
            &mut c,
            &mut items,
            &env,
            &mut next,
        );
        let a = &c.models.providers["a"];
        assert_eq!(a.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(a.api_key_env.as_deref(), Some("A_KEY"));
        assert_eq!(a.models[0].max_tokens, 99);
        let b = &c.models.providers["b"];
        assert_eq!(
            (b.api, b.api_key_env.as_deref()),
            (ProviderApi::AnthropicMessages, Some("B_KEY"))
        );
        assert!(!c.models.providers.contains_key("c") && !c.models.providers.contains_key("d"));
        let refused: Vec<&str> = items
            .0
            .iter()
            .filter(|i| i.status == Status::NotImported)
            .map(|i| i.detail.as_str())
            .collect();
        assert!(
            refused.iter().any(|d| d.contains("google-generative-ai")),
            "{refused:?}"
        );
        assert!(refused.iter().any(|d| d.contains("NOPE")), "{refused:?}");
        assert!(next.iter().any(|n| n.contains("A_KEY")));
    }
}
