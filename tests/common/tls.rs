//! A certificate authority and a server certificate for 127.0.0.1, made with the
//! `openssl` command for one test: the services it starts listen with them, and the
//! clients trust the authority through `SSL_CERT_FILE`.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Tls {
    dir: tempfile::TempDir,
}

impl Tls {
    pub fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("san.cnf"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=tsst test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
                "-out",
                "server.pem",
            ],
        );
        // The services may run as another user than the test; let them read the key.
        let _ = Command::new("chmod")
            .args(["a+r", "server.key"])
            .current_dir(d)
            .status();
        Tls { dir }
    }

    /// The authority's certificate, for `SSL_CERT_FILE`.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt install openssl)");
    assert!(status.success(), "openssl {}", args.join(" "));
}
