//! A throw-away PKI for TLS tests, made with the `openssl` CLI in a temp
//! dir: a CA, a server certificate for IP 127.0.0.1 and a client
//! certificate, both signed by that CA, plus a second, unrelated CA (the
//! "wrong CA" a misconfigured client trusts). Private keys are mode 0600.
//!
//! Files written into the folder: `ca.pem`/`ca.key`, `server.pem`/`server.key`,
//! `client.pem`/`client.key`, `other-ca.pem`/`other-ca.key`.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl ARGS` in `dir`; panics naming the arguments on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let st = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(st.success(), "openssl {args:?} failed");
}

fn self_signed_ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// CA, server cert for IP 127.0.0.1, client cert (all signed by the CA),
/// and an unrelated second CA, in `dir`.
pub fn make_pki(dir: &Path) {
    self_signed_ca(dir, "ca", "gaswatch test CA");
    self_signed_ca(dir, "other-ca", "gaswatch unrelated CA");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN=gaswatch-{who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}.pem"),
            ],
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in ["ca.key", "other-ca.key", "client.key", "server.key"] {
            std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
    }
}
