//! What this binary is: version, git commit and enabled features, fixed at
//! build time (see `build.rs`); for `--version`, `/health` and
//! `gaswatch_build_info`.

/// Build facts.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BuildInfo {
    pub version: &'static str,
    /// Short git commit, or "unknown" when built outside a git checkout.
    pub commit: &'static str,
    /// Enabled Cargo features, comma separated ("" when none).
    pub features: &'static str,
}

pub fn info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        commit: env!("GASWATCH_GIT_COMMIT"),
        features: env!("GASWATCH_FEATURES"),
    }
}

/// The `--version` text: `0.1.0 (commit abc1234; features: none; tls: rustls+ring)`.
pub fn version_line() -> String {
    let b = info();
    let features = if b.features.is_empty() {
        "none"
    } else {
        b.features
    };
    format!(
        "{} (commit {}; features: {}; tls: rustls+ring)",
        b.version, b.commit, features
    )
}
