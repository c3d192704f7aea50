//! Services a test owns: a RabbitMQ node of its own (own ports, data and config file,
//! never the machine's shared broker), to stop and restart at will.
#![allow(dead_code)]
pub mod cluster;
pub mod tls;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The consumer's next delivery, which must come within 20 s.
pub async fn next_delivery<C: tsst_actors::broker::Consumer>(c: &mut C) -> C::Delivery {
    tokio::time::timeout(Duration::from_secs(20), c.next())
        .await
        .expect("a delivery within 20 s")
        .expect("consumer open")
        .expect("delivery ok")
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// SIGTERM, then waits for the process to end.
fn terminate(child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

/// Waits until something accepts connections on the port; panics with `log`'s text
/// after `limit`.
fn wait_open(port: u16, limit: Duration, what: &str, log: Option<&std::path::Path>) {
    let started = Instant::now();
    while !port_open(port) {
        assert!(
            started.elapsed() < limit,
            "{what} did not start:\n{}",
            log.and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A single RabbitMQ node with its own name, ports, data directory and config file.
/// Its data survives `restart`, as a real broker's does.
pub struct RabbitNode {
    pub port: u16,
    /// The management API's port, when started `with_management`.
    pub management_port: Option<u16>,
    /// The TLS listener's port, when started `with_tls`.
    pub tls_port: Option<u16>,
    dist_port: u16,
    name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RabbitNode {
    /// Starts the node and waits until it accepts connections.
    pub fn start(test: &str) -> RabbitNode {
        Self::with(test, false, None)
    }

    /// With the management plugin, whose API counts deliveries per queue.
    pub fn with_management(test: &str) -> RabbitNode {
        Self::with(test, true, None)
    }

    /// With a TLS listener too (`tls_url`), serving `tls`'s certificate.
    pub fn with_tls(test: &str, tls: &tls::Tls) -> RabbitNode {
        Self::with(test, false, Some(tls))
    }

    fn with(test: &str, management: bool, tls: Option<&tls::Tls>) -> RabbitNode {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let management_port = management.then(free_port);
        let tls_port = tls.map(|_| free_port());
        let mut conf = format!("listeners.tcp.default = {port}\n");
        if let (Some(tls), Some(p)) = (tls, tls_port) {
            conf += &format!(
                "listeners.ssl.default = {p}\nssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
                tls.ca().display(),
                tls.cert().display(),
                tls.key().display()
            );
        }
        if let Some(m) = management_port {
            // Statistics every 100 ms: a reading just before a restart (which clears
            // them) misses little.
            conf += &format!(
                "management.tcp.port = {m}\nmanagement.tcp.ip = 127.0.0.1\ncollect_statistics_interval = 100\n"
            );
        }
        std::fs::write(dir.path().join("rabbitmq.conf"), conf).unwrap();
        let plugins = if management {
            "[rabbitmq_management].\n"
        } else {
            "[].\n"
        };
        std::fs::write(dir.path().join("enabled_plugins"), plugins).unwrap();
        let mut node = RabbitNode {
            port,
            management_port,
            tls_port,
            dist_port: free_port(),
            name: format!("tsst-{test}-{}@localhost", std::process::id()),
            dir,
            child: None,
        };
        node.up();
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with_tls");
        format!("amqps://guest:guest@127.0.0.1:{port}/%2f")
    }

    /// Messages delivered (redeliveries included) from the queues whose names start
    /// with `prefix` since the node started, as the management API counts them (it
    /// samples every 100 ms; a restart clears the counts).
    pub fn delivered(&self, prefix: &str) -> u64 {
        let port = self.management_port.expect("started with_management");
        let out = Command::new("curl")
            .args(["-s", "-u", "guest:guest"])
            .arg(format!(
                "http://127.0.0.1:{port}/api/queues/%2f?columns=name,message_stats"
            ))
            .output()
            .expect("curl");
        let queues: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        queues
            .as_array()
            .into_iter()
            .flatten()
            .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .map(|q| q["message_stats"]["deliver_get"].as_u64().unwrap_or(0))
            .sum()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn up(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("node.out"))
            .unwrap();
        // The package's wrapper would switch to the rabbitmq user, who cannot write
        // this directory; the server script itself runs as whoever starts it.
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_FEATURE_FLAGS_FILE", self.path("feature_flags"))
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server (apt install rabbitmq-server)");
        self.child = Some(child);
        let log = self.path("node.out");
        for port in std::iter::once(self.port).chain(self.tls_port) {
            wait_open(port, Duration::from_secs(90), "RabbitMQ node", Some(&log));
        }
    }

    /// Stops the node as an operator would (SIGTERM: the script stops it cleanly).
    pub fn stop(&mut self) {
        terminate(self.child.take());
        let started = Instant::now();
        while port_open(self.port) && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Closes every client connection (a network blip, an operator's
    /// `close_all_connections`): the broker stays up.
    pub fn drop_connections(&self) {
        let status = Command::new("/usr/lib/rabbitmq/bin/rabbitmqctl")
            .args([
                "-n",
                &self.name,
                "close_all_connections",
                "dropped by the test",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl close_all_connections");
    }

    /// Stops the node, waits `down`, starts it again on the same data.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.up();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server of the test's own (own port and directory), persisting to an
/// append-only file as the compose file's Redis does, or only to explicit snapshots
/// (to roll it back to one).
pub struct RedisNode {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    append_only: bool,
    /// The TLS port and the files it serves, when started `with_tls`.
    tls: Option<(u16, Vec<std::ffi::OsString>)>,
}

impl RedisNode {
    pub fn start() -> RedisNode {
        Self::with(true, None)
    }

    /// Persists only what `snapshot` saves.
    pub fn start_with_snapshots() -> RedisNode {
        Self::with(false, None)
    }

    /// With a TLS port too (`tls_url`), serving `tls`'s certificate.
    pub fn with_tls(tls: &tls::Tls) -> RedisNode {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-cert-file", tls.cert()),
            ("--tls-key-file", tls.key()),
            ("--tls-ca-cert-file", tls.ca()),
        ] {
            args.push(flag.into());
            args.push(path.into_os_string());
        }
        args.extend(["--tls-auth-clients".into(), "no".into()]);
        Self::with(true, Some((free_port(), args)))
    }

    fn with(append_only: bool, tls: Option<(u16, Vec<std::ffi::OsString>)>) -> RedisNode {
        let mut node = RedisNode {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            append_only,
            tls,
        };
        node.up();
        node
    }

    /// Saves the data set now (what a crash will come back to).
    pub fn snapshot(&self) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SAVE"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli SAVE");
    }

    /// Kills it outright and starts it again on the last snapshot: every write since
    /// is lost, as after a host crash.
    pub fn crash_to_snapshot(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.up();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    fn up(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some((port, args)) = &self.tls {
            command.args(["--tls-port", &port.to_string()]).args(args);
        }
        let child = command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", if self.append_only { "yes" } else { "no" }])
            // Snapshot-only: a save point that never comes due in a test, so that a
            // shutdown saves (as a server with save points does) and only a crash
            // loses writes; snapshots are otherwise taken explicitly.
            .args(["--appendfsync", "everysec", "--save"])
            .arg(if self.append_only { "" } else { "3600 1" })
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt install redis-server)");
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(self.tls.as_ref().map(|t| t.0)) {
            wait_open(port, Duration::from_secs(30), "Redis", None);
        }
    }

    /// Stops it as an operator would (SIGTERM: Redis flushes its file and exits).
    pub fn stop(&mut self) {
        terminate(self.child.take());
    }

    /// A clean restart: the server saves its file as it shuts down and loses nothing.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.up();
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP proxy to `target` that can go silent: while frozen it forwards nothing either
/// way but keeps every connection open, like a peer that hangs without closing.
pub struct FreezableProxy {
    pub port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableProxy {
    pub fn start(target: u16) -> FreezableProxy {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || pump(from, to, &flag));
                }
            }
        });
        FreezableProxy { port, frozen }
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
    }
}

fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: &std::sync::atomic::AtomicBool,
) {
    use std::io::{ErrorKind, Read, Write};
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16384];
    loop {
        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Read just as the freeze began: held back until it ends.
                while frozen.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
