//! The layers of the configuration: built-in defaults, then the TOML file (`--config` or
//! `CONFAB_CONFIG`), then the environment, then the flags, the later winning. clap has already
//! merged flags over environment over defaults and tells, per setting, which one it took
//! (`ArgMatches::value_source`); figment puts the file between the defaults and the rest and
//! extracts the typed settings, with errors that name the key. The file's keys are the `serve`
//! flags' names with underscores (`media_port`, `webhook_urls`, `ice_servers`); an unknown key is
//! an error naming it, so a typo never silently falls back to a default.

use super::{ConfigError, ServeArgs, WebhookArgs};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use figment::providers::{Format, Serialized, Toml};
use figment::value::Dict;
use figment::{Figment, Profile, Provider};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file.
    File,
    /// Its environment variable.
    Env,
    /// Its command-line flag.
    Flag,
}

impl Origin {
    /// How `config check` shows it.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
        }
    }
}

/// The effective settings and where each came from (keyed by file key).
#[derive(Debug)]
pub struct Resolved {
    /// The settings, as `serve` runs with them.
    pub args: ServeArgs,
    /// The origin of every setting.
    pub origins: BTreeMap<String, Origin>,
}

/// The keys a configuration file may hold: the `serve` settings but `config` itself.
pub fn known_keys() -> Vec<String> {
    ServeArgs::augment_args(clap::Command::new("confab"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| !matches!(id.as_str(), "config" | "help" | "version"))
        .collect()
}

/// Every setting of `args` by its file key (unset options as `null`).
pub fn settings_map(args: &ServeArgs) -> Map<String, Value> {
    let mut map = match serde_json::to_value(args) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Ok(Value::Object(w)) = serde_json::to_value(&args.webhooks) {
        map.extend(w);
    }
    map
}

/// The settings `serve` runs with, from the matches of the command that holds them (`confab`,
/// `confab serve` or `confab config check`). Errors: an unreadable file, invalid TOML, unknown
/// keys (one error each), values of the wrong type (one error each, naming the key).
pub fn resolve(matches: &ArgMatches) -> Result<Resolved, ConfigError> {
    let parsed =
        ServeArgs::from_arg_matches(matches).map_err(|e| ConfigError::Flags(e.to_string()))?;
    let mut origins = BTreeMap::new();
    let (mut defaults, mut explicit) = (Map::new(), Map::new());
    for (key, value) in settings_map(&parsed) {
        let origin = match matches.value_source(&key) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env,
            _ => Origin::Default,
        };
        origins.insert(key.clone(), origin);
        if value.is_null() {
            continue;
        }
        match origin {
            Origin::Default => defaults.insert(key, value),
            _ => explicit.insert(key, value),
        };
    }
    let Some(path) = parsed.config.clone() else {
        return Ok(Resolved {
            args: parsed,
            origins,
        });
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    let mut file = file_table(&path, &text)?;
    for key in file.keys() {
        if let Some(o @ Origin::Default) = origins.get_mut(key) {
            *o = Origin::File;
        }
    }
    // serde stops at the first wrong value: take each one's key out and extract again, so every
    // wrong value gets its message (at most one round per key).
    let mut errors = Vec::new();
    loop {
        let figment = Figment::new()
            .merge(Serialized::defaults(&defaults))
            .merge(Serialized::defaults(&file))
            .merge(Serialized::defaults(&explicit));
        let args = figment.extract::<ServeArgs>();
        let webhooks = figment.extract::<WebhookArgs>();
        let mut progress = false;
        for e in [args.as_ref().err(), webhooks.as_ref().err()]
            .into_iter()
            .flatten()
        {
            for one in e.clone() {
                let key = one.path.join(".");
                progress |= file
                    .remove(one.path.first().map_or("", String::as_str))
                    .is_some();
                errors.push(ConfigError::Value {
                    key,
                    why: one.kind.to_string(),
                    path: path.display().to_string(),
                });
            }
        }
        match (args, webhooks) {
            (Ok(mut args), Ok(webhooks)) if errors.is_empty() => {
                args.webhooks = webhooks;
                args.config = Some(path);
                return Ok(Resolved { args, origins });
            }
            (Ok(_), Ok(_)) => return Err(ConfigError::all(errors)),
            _ if !progress => return Err(ConfigError::all(errors)),
            _ => {}
        }
    }
}

/// The file's settings. Errors: invalid TOML; keys that are no setting (one error each).
fn file_table(path: &Path, text: &str) -> Result<Dict, ConfigError> {
    let data = Toml::string(text).data().map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        why: e.kind.to_string(),
    })?;
    let table = data.get(&Profile::Default).cloned().unwrap_or_default();
    let known = known_keys();
    let unknown: Vec<ConfigError> = table
        .keys()
        .filter(|k| !known.contains(k))
        .map(|k| ConfigError::UnknownKey {
            key: k.clone(),
            path: path.display().to_string(),
        })
        .collect();
    if unknown.is_empty() {
        Ok(table)
    } else {
        Err(ConfigError::all(unknown))
    }
}
