//! Building a store's JSON config (docs/CONFIG.md) without a JSON crate.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::json::quote;
use crate::log::LogLevel;

/// A plugin entry of a config: `{"plugin": name, "path": ..., "options": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    name: String,
    path: Option<PathBuf>,
    options: Vec<(String, String)>,
}

impl Plugin {
    /// The plugin called `name` (found as `libmasq_<kind>_<name>.so` on the
    /// search path), e.g. `"sqlite"`, `"memory"`, `"relay"`.
    pub fn new(name: impl Into<String>) -> Plugin {
        Plugin { name: name.into(), path: None, options: Vec::new() }
    }

    /// The `relay` transport plugin connecting to `url` (`ws://HOST:PORT/`).
    pub fn relay(url: impl Into<String>) -> Plugin {
        Plugin::new("relay").option("url", url.into())
    }

    /// Load exactly this file (its descriptor must carry the plugin's name).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Plugin {
        self.path = Some(path.into());
        self
    }

    /// A plugin option; options reach the plugin as strings.
    pub fn option(mut self, name: impl Into<String>, value: impl ToString) -> Plugin {
        self.options.push((name.into(), value.to_string()));
        self
    }

    fn to_json(&self) -> Result<String> {
        let mut out = format!("{{\"plugin\": {}", quote(&self.name));
        if let Some(path) = &self.path {
            out.push_str(&format!(", \"path\": {}", quote(path_text(path)?)));
        }
        if !self.options.is_empty() {
            let options: Vec<String> =
                self.options.iter().map(|(k, v)| format!("{}: {}", quote(k), quote(v))).collect();
            out.push_str(&format!(", \"options\": {{{}}}", options.join(", ")));
        }
        out.push('}');
        Ok(out)
    }
}

/// A store's configuration, written as the JSON document `masq_open_config`
/// takes (docs/CONFIG.md). Anything not covered by a method can be added
/// with [`Config::member`].
///
/// ```
/// let json = masq::Config::new()
///     .data_dir("/tmp/demo")
///     .storage(masq::Plugin::new("sqlite").option("synchronous", "normal"))
///     .max_value_bytes(4096)
///     .to_json()
///     .unwrap();
/// assert!(json.contains("\"max_value_bytes\": 4096"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    data_dir: Option<PathBuf>,
    plugin_path: Vec<PathBuf>,
    storage: Option<Plugin>,
    transports: Vec<Plugin>,
    limits: Vec<(String, u64)>,
    log_level: Option<LogLevel>,
    scrypt_log_n: Option<u32>,
    members: Vec<(String, String)>,
}

impl Config {
    /// An empty config: every key takes its default.
    pub fn new() -> Config {
        Config::default()
    }

    /// Where the store keeps its files (created 0700 if missing).
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Config {
        self.data_dir = Some(path.into());
        self
    }

    /// A directory searched first for plugins (may be called several times).
    pub fn plugin_path(mut self, dir: impl Into<PathBuf>) -> Config {
        self.plugin_path.push(dir.into());
        self
    }

    /// The storage plugin (default `sqlite`).
    pub fn storage(mut self, plugin: Plugin) -> Config {
        self.storage = Some(plugin);
        self
    }

    /// A transport reaching this device's other devices (may be called several times).
    pub fn transport(mut self, plugin: Plugin) -> Config {
        self.transports.push(plugin);
        self
    }

    /// A limit by name (`max_key_bytes`, `max_value_bytes`,
    /// `max_namespace_bytes`, `max_batch_entries`).
    pub fn limit(mut self, name: impl Into<String>, value: u64) -> Config {
        self.limits.push((name.into(), value));
        self
    }

    /// `limits.max_key_bytes` (default 1024).
    pub fn max_key_bytes(self, value: u64) -> Config {
        self.limit("max_key_bytes", value)
    }

    /// `limits.max_value_bytes` (default 1 MiB).
    pub fn max_value_bytes(self, value: u64) -> Config {
        self.limit("max_value_bytes", value)
    }

    /// `limits.max_namespace_bytes` (default 128).
    pub fn max_namespace_bytes(self, value: u64) -> Config {
        self.limit("max_namespace_bytes", value)
    }

    /// `limits.max_batch_entries` (default 100000).
    pub fn max_batch_entries(self, value: u64) -> Config {
        self.limit("max_batch_entries", value)
    }

    /// `log_level` for the default standard-error logging.
    pub fn log_level(mut self, level: LogLevel) -> Config {
        self.log_level = Some(level);
        self
    }

    /// `security.scrypt_log_n`: cost of passphrase protection (10..=22; default 17).
    pub fn scrypt_log_n(mut self, log_n: u32) -> Config {
        self.scrypt_log_n = Some(log_n);
        self
    }

    /// Any other top-level member, given as its JSON text, e.g.
    /// `.member("sharing", r#"{"services": []}"#)`.
    pub fn member(mut self, name: impl Into<String>, json: impl Into<String>) -> Config {
        self.members.push((name.into(), json.into()));
        self
    }

    /// The JSON document. Fails (`ErrorKind::Invalid`) for a path that is not UTF-8.
    pub fn to_json(&self) -> Result<String> {
        let mut members: Vec<String> = Vec::new();
        if let Some(dir) = &self.data_dir {
            members.push(format!("\"data_dir\": {}", quote(path_text(dir)?)));
        }
        if !self.plugin_path.is_empty() {
            let dirs: Result<Vec<String>> = self.plugin_path.iter().map(|d| path_text(d).map(quote)).collect();
            members.push(format!("\"plugin_path\": [{}]", dirs?.join(", ")));
        }
        if let Some(storage) = &self.storage {
            members.push(format!("\"storage\": {}", storage.to_json()?));
        }
        if !self.transports.is_empty() {
            let transports: Result<Vec<String>> = self.transports.iter().map(Plugin::to_json).collect();
            members.push(format!("\"transports\": [{}]", transports?.join(", ")));
        }
        if !self.limits.is_empty() {
            let limits: Vec<String> = self.limits.iter().map(|(k, v)| format!("{}: {}", quote(k), v)).collect();
            members.push(format!("\"limits\": {{{}}}", limits.join(", ")));
        }
        if let Some(level) = self.log_level {
            members.push(format!("\"log_level\": {}", quote(level.name())));
        }
        if let Some(log_n) = self.scrypt_log_n {
            members.push(format!("\"security\": {{\"scrypt_log_n\": {}}}", log_n));
        }
        for (name, json) in &self.members {
            members.push(format!("{}: {}", quote(name), json));
        }
        Ok(format!("{{{}}}", members.join(", ")))
    }
}

fn path_text(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::invalid(format!("path {:?} is not UTF-8, which a JSON config cannot hold", path)))
}
