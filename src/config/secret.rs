//! Secrets (passwords, tokens) come from an environment variable or a file,
//! never from the config text, and never appear in logs or `Debug` output.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Where to find a secret: `{ env = "VAR" }` or `{ file = "/path" }`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline removed).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, &self.file) {
            (Some(v), _) => write!(f, "Secret(env {v})"),
            (None, Some(p)) => write!(f, "Secret(file {})", p.display()),
            (None, None) => write!(f, "Secret(unset)"),
        }
    }
}

/// A resolved secret value. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(s)
    }

    /// The secret itself; call only where it is sent to the remote.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// A shape problem (both or neither of `env` and `file`), for `validate`.
    pub fn shape_problem(&self) -> Option<&'static str> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Some("expected exactly one of `env` or `file`, found both"),
            (None, None) => Some("expected `{ env = \"VAR\" }` or `{ file = \"/path\" }`"),
            _ => None,
        }
    }

    /// Reads the secret. The error names the variable or file, never the value.
    pub fn resolve(&self) -> Result<SecretString, String> {
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(SecretString(v)),
                Ok(_) => Err(format!("environment variable {var} is empty")),
                Err(_) => Err(format!("environment variable {var} is not set")),
            };
        }
        if let Some(path) = &self.file {
            warn_if_exposed("secret", path);
            return match std::fs::read_to_string(path) {
                Ok(v) => {
                    let v = v.trim_end_matches(['\r', '\n']).to_string();
                    if v.is_empty() {
                        Err(format!("secret file {} is empty", path.display()))
                    } else {
                        Ok(SecretString(v))
                    }
                }
                Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
            };
        }
        Err("no `env` or `file` given".to_string())
    }

    /// Feeds the secret's current value (or the fact that it cannot be read)
    /// into `h`, silently: a config reload compares these to notice a secret
    /// that changed behind an unchanged config (a rotated password file).
    pub fn hash_current(&self, h: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        if let Some(var) = &self.env {
            std::env::var_os(var).hash(h);
        } else if let Some(path) = &self.file {
            std::fs::read(path).ok().hash(h);
        }
    }
}

/// Logs a WARN when a file holding a secret or a private key can be read by
/// its group or by others (`mode & 0o077`), so the operator can `chmod 600`
/// it. Names the file and the mode, never the content.
pub fn warn_if_exposed(key: &str, path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key,
                    file = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "A secret file is readable by group or others; restrict it with chmod 600."
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (key, path);
}
