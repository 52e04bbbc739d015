//! Records the git commit and the enabled Cargo features for `--version`,
//! `/health` and `gaswatch_build_info`. Works from a tarball or a clean clone
//! without git: the commit is then "unknown".
//!
//! Also generates the Sparkplug B protobuf types from
//! `proto/sparkplug_b.proto` (gaswatch's own wire-compatible declaration of
//! the Sparkplug B payload) with protox, a pure-Rust protobuf compiler: no
//! system `protoc` is needed to build.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sparkplug()?;
    let commit = Command::new("git")
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=GASWATCH_GIT_COMMIT={commit}");
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| {
            k.strip_prefix("CARGO_FEATURE_")
                .map(|f| f.to_lowercase().replace('_', "-"))
        })
        .collect();
    features.sort();
    println!("cargo:rustc-env=GASWATCH_FEATURES={}", features.join(","));
    // Re-run when HEAD moves (a commit or a checkout), not on every build.
    // (Worktrees keep HEAD in their own git dir and refs in the common one.)
    for (arg, file) in [("--git-dir", "HEAD"), ("--git-common-dir", "refs/heads")] {
        let dir = Command::new("git")
            .args(["rev-parse", arg])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok());
        if let Some(dir) = dir {
            let p = std::path::Path::new(dir.trim()).join(file);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}

fn sparkplug() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/sparkplug_b.proto");
    let descriptors = protox::compile(["proto/sparkplug_b.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
