//! `confab config check`'s output: the effective settings as TOML, each with its origin, then the
//! secrets as `<redacted, N bytes>` and where they come from. Passwords and query strings in URL
//! settings are redacted too (a `postgres://user:password@…` URL, an RPC provider's key).

use super::file::Resolved;
use super::secrets::SecretSummary;
use serde_json::Value;

/// URL settings whose path may carry a provider's key (`https://…/v3/<key>`): shown as origin only.
const PATH_SECRET_KEYS: &[&str] = &["chain_rpc_url"];
/// URL settings whose user-info password and query are redacted.
const URL_KEYS: &[&str] = &[
    "database_url",
    "chain_rpc_url",
    "webhook_urls",
    "langdao_events_url",
    "redis_url",
];

/// The effective configuration as TOML text.
pub fn render(resolved: &Resolved, secrets: &[SecretSummary]) -> String {
    let map = super::file::settings_map(&resolved.args);
    let width = map.keys().map(String::len).max().unwrap_or(0);
    let mut out =
        String::from("# confab effective configuration (flag > environment > file > default)\n");
    match &resolved.args.config {
        Some(p) => out.push_str(&format!("# file: {}\n", p.display())),
        None => out.push_str("# file: none\n"),
    }
    for (key, value) in &map {
        let origin = resolved
            .origins
            .get(key)
            .map(|o| o.label())
            .unwrap_or("default");
        let value = if URL_KEYS.contains(&key.as_str()) {
            redact_urls(value, PATH_SECRET_KEYS.contains(&key.as_str()))
        } else {
            value.clone()
        };
        let line = match value {
            Value::Null => format!("# {key:w$} = (unset)", w = width.saturating_sub(2)),
            v => format!("{key:width$} = {}", toml_value(&v)),
        };
        out.push_str(&format!("{line}  # {origin}\n"));
    }
    out.push_str("\n# secrets: from the environment or the files it names, never printed\n");
    let width = secrets.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in secrets {
        match s.bytes {
            Some(n) => out.push_str(&format!(
                "# {:width$} = <redacted, {n} bytes>  # {}\n",
                s.name, s.origin
            )),
            None => out.push_str(&format!("# {:width$} = {}\n", s.name, s.origin)),
        }
    }
    out
}

/// A JSON value as a TOML value (strings, numbers, booleans and arrays of them look the same
/// in both, serde_json's escapes being TOML's).
fn toml_value(v: &Value) -> String {
    v.to_string()
}

fn redact_urls(v: &Value, path_too: bool) -> Value {
    match v {
        Value::String(s) => Value::String(redact_url(s, path_too)),
        Value::Array(a) => Value::Array(a.iter().map(|x| redact_urls(x, path_too)).collect()),
        other => other.clone(),
    }
}

/// `scheme://user:<redacted>@host/path?<redacted>`; with `path_too`, the path as well.
pub fn redact_url(url: &str, path_too: bool) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, _)) => (p, "?<redacted>"),
        None => (tail, ""),
    };
    let path = if path_too && path.len() > 1 {
        "/<redacted>"
    } else {
        path
    };
    format!("{scheme}://{authority}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn url_passwords_queries_and_provider_paths_are_redacted() {
        assert_eq!(
            redact_url("postgres://confab:hunter2@db:5432/confab", false),
            "postgres://confab:<redacted>@db:5432/confab"
        );
        assert_eq!(
            redact_url("https://rpc.example/v3/abcdef?key=1", true),
            "https://rpc.example/<redacted>?<redacted>"
        );
        assert_eq!(redact_url("./data/confab.db", false), "./data/confab.db");
    }
}
