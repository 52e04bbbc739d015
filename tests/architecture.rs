//! The engine is pure: no I/O, no clock, no async, no logging. This test
//! scans `src/engine/**` for imports that would break that contract, and
//! the whole crate for Modbus write function codes (gaswatch is read-only
//! toward the field).

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn engine_does_no_io_reads_no_clock_and_does_not_log() {
    let forbidden = [
        "tokio",
        "std::fs",
        "std::net",
        "std::io",
        "std::thread",
        "std::process",
        "SystemTime",
        "Instant",
        "Timestamp::now",
        "tracing",
        "println!",
        "eprintln!",
        "metrics::",
        "reqwest",
        "rumqttc",
        "async ",
        ".await",
    ];
    let mut files = Vec::new();
    rust_files(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/engine")),
        &mut files,
    );
    assert!(!files.is_empty());
    let mut bad = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for w in forbidden {
                if code.contains(w) {
                    bad.push(format!(
                        "{}:{}: `{w}` in: {}",
                        f.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the engine must stay pure:\n{}",
        bad.join("\n")
    );
}

#[test]
fn daemon_never_calls_a_modbus_write() {
    let writes = [
        "write_single_coil",
        "write_multiple_coils",
        "write_single_register",
        "write_multiple_registers",
        "masked_write_register",
        "read_write_multiple_registers",
        "Request::Write",
        "Request::MaskWrite",
        "Request::ReadWrite",
    ];
    let mut files = Vec::new();
    rust_files(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    let mut bad = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for (n, line) in text.lines().enumerate() {
            for w in writes {
                if line.contains(w) {
                    bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "gaswatch is read-only toward the field:\n{}",
        bad.join("\n")
    );
}
