//! Apache Kafka's own broker for the `real_kafka_*` tests: KRaft nodes (broker and controller
//! roles combined) on ephemeral loopback ports, each with its own temporary directory, started
//! as `java -cp '<libs>/*' kafka.Kafka server.properties` from the jars `tests/run.sh` fetches
//! with Maven (`tests/kafka/pom.xml`). Variants: one node; a three-node cluster (replication 3,
//! `min.insync.replicas=2`) whose nodes can be killed, paused and restarted; one node with
//! SASL_SSL (SCRAM-SHA-512 and PLAIN) and mutual-TLS listeners. Every node is killed and its
//! directory removed when the [`RealKafka`] is dropped, also when the test fails (then the tail
//! of each node's log is printed first).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use super::pki::Pki;

/// The Kafka version `tests/kafka/pom.xml` pins.
fn pinned_version() -> String {
    let pom = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/pom.xml");
    let text = std::fs::read_to_string(&pom).unwrap();
    text.lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("<kafka.version>")?
                .strip_suffix("</kafka.version>")
        })
        .expect("<kafka.version> in tests/kafka/pom.xml")
        .to_string()
}

/// Directory of the broker's jars: `STREAMGATE_KAFKA_LIBS` (exported by `tests/run.sh`), else
/// the cache `tests/run.sh` fills. Fails, never skips, when neither is there.
pub(crate) fn kafka_libs() -> PathBuf {
    let dir = match std::env::var_os("STREAMGATE_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/streamgate-kafka")
            .join(pinned_version())
            .join("libs"),
    };
    let complete = dir.join(".complete").exists()
        || std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
            })
            .unwrap_or(false);
    assert!(
        complete,
        "Apache Kafka's broker jars are not in {} (STREAMGATE_KAFKA_LIBS): the real_kafka tests \
         run the real broker. Run `bash tests/run.sh real_kafka` once (it fetches Kafka {} with \
         Maven into ~/.cache/streamgate-kafka), or leave these tests out with \
         `cargo test -- --skip real_kafka`",
        dir.display(),
        pinned_version(),
    );
    dir
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| java.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 (not starting with `-`, which the
/// storage tool would read as an option).
fn cluster_id() -> String {
    use base64::Engine;
    use rand::Rng;
    loop {
        let bytes: [u8; 16] = rand::rng().random();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// SASL users of a secured broker, and the certificates of its TLS listeners.
pub(crate) struct Security<'a> {
    /// Certificates: the broker presents `server.pem` and trusts `ca.pem` for client
    /// certificates.
    pub pki: &'a Pki,
    /// SCRAM-SHA-512 users (name, password), created when the storage is formatted.
    pub scram_users: Vec<(String, String)>,
    /// SASL/PLAIN users (name, password), in the listener's JAAS configuration.
    pub plain_users: Vec<(String, String)>,
}

#[derive(Clone, Copy)]
struct Ports {
    plaintext: u16,
    controller: u16,
    /// SASL_SSL: SCRAM-SHA-512 and PLAIN over TLS (server certificate only).
    sasl_ssl: u16,
    /// SSL with `ssl.client.auth=required` (mutual TLS).
    mtls: u16,
}

struct Node {
    id: u32,
    dir: PathBuf,
    ports: Ports,
    child: Option<Child>,
    paused: bool,
}

impl Node {
    fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn start(&mut self, libs: &Path) {
        assert!(self.child.is_none(), "node {} is running", self.id);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .unwrap();
        let child = Command::new(java())
            .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", java().display()));
        self.child = Some(child);
        self.paused = false;
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("node running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Panics with the end of its log if the node has exited.
    fn check_alive(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!(
                "Kafka node {} exited ({status}):\n{}\n{}",
                self.id,
                tail(&self.dir.join("stdout.log"), 20),
                tail(&self.server_log(), 40)
            );
        }
    }
}

/// `n` different free loopback ports: all probe listeners are open at once, so none repeats.
fn distinct_ports(n: usize) -> Vec<u16> {
    let probes: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    probes
        .iter()
        .map(|p| p.local_addr().unwrap().port())
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One or more Apache Kafka nodes in KRaft mode; killed and removed on drop.
pub(crate) struct RealKafka {
    nodes: Vec<Node>,
    libs: PathBuf,
    secured: bool,
    /// Plaintext listeners of every node (also what the test harness uses on a secured broker).
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl RealKafka {
    /// One node, plaintext only.
    pub(crate) fn single() -> Self {
        Self::start(1, None)
    }

    /// Three nodes: replication factor 3 and `min.insync.replicas=2` for every topic.
    pub(crate) fn cluster() -> Self {
        Self::start(3, None)
    }

    /// One node with a SASL_SSL listener (SCRAM-SHA-512 and PLAIN) and a mutual-TLS listener
    /// beside the plaintext one.
    pub(crate) fn secured(security: &Security<'_>) -> Self {
        Self::start(1, Some(security))
    }

    fn start(count: u32, security: Option<&Security<'_>>) -> Self {
        let started = Instant::now();
        let libs = kafka_libs();
        let dir = tempfile::Builder::new()
            .prefix("streamgate-kafka-")
            .tempdir()
            .unwrap();
        // Every port of every node at once: probes closed one by one can hand out the same
        // port twice, which Kafka refuses for two listeners.
        let mut ports = distinct_ports(4 * count as usize).into_iter();
        let mut port = move || ports.next().expect("a port for every listener");
        let mut nodes: Vec<Node> = (1..=count)
            .map(|id| {
                let node_dir = dir.path().join(format!("node-{id}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                Node {
                    id,
                    dir: node_dir,
                    ports: Ports {
                        plaintext: port(),
                        controller: port(),
                        sasl_ssl: port(),
                        mtls: port(),
                    },
                    child: None,
                    paused: false,
                }
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.ports.controller))
            .collect::<Vec<_>>()
            .join(",");
        for node in &nodes {
            std::fs::write(
                node.dir.join("server.properties"),
                properties(node, &voters, count, security),
            )
            .unwrap();
            std::fs::write(
                node.dir.join("log4j2.properties"),
                log4j2(&node.server_log()),
            )
            .unwrap();
        }
        // Format every node's storage with the same cluster id (in parallel: each is a JVM).
        let id = cluster_id();
        let formats: Vec<_> = nodes
            .iter()
            .map(|node| {
                let mut cmd = Command::new(java());
                cmd.arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    node.dir.join("log4j2.properties").display()
                ))
                .arg("-cp")
                .arg(format!("{}/*", libs.display()))
                .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c"])
                .arg(node.dir.join("server.properties"));
                for (user, password) in security.map(|s| &s.scram_users[..]).unwrap_or(&[]) {
                    cmd.arg("--add-scram")
                        .arg(format!("SCRAM-SHA-512=[name={user},password={password}]"));
                }
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", java().display()))
            })
            .collect();
        for format in formats {
            let out = format.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "formatting Kafka storage failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for node in &mut nodes {
            node.start(&libs);
        }
        let bootstrap = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.ports.plaintext))
            .collect::<Vec<_>>()
            .join(",");
        let mut kafka = RealKafka {
            nodes,
            libs,
            secured: security.is_some(),
            bootstrap,
            _dir: dir,
        };
        kafka.wait_ready();
        eprintln!(
            "real Kafka {}: {count} node(s) ready in {:.1?} at {}",
            pinned_version(),
            started.elapsed(),
            kafka.bootstrap
        );
        kafka
    }

    /// Plaintext bootstrap servers of every node.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Bootstrap server of the SASL_SSL listener (secured broker).
    pub(crate) fn sasl_ssl_bootstrap(&self) -> String {
        assert!(self.secured);
        format!("127.0.0.1:{}", self.nodes[0].ports.sasl_ssl)
    }

    /// Bootstrap server of the mutual-TLS listener (secured broker).
    pub(crate) fn mtls_bootstrap(&self) -> String {
        assert!(self.secured);
        format!("127.0.0.1:{}", self.nodes[0].ports.mtls)
    }

    fn metadata(&self, topic: Option<&str>, timeout: Duration) -> Option<Metadata> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("socket.connection.setup.timeout.ms", "1000")
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
            .create()
            .unwrap();
        client.fetch_metadata(topic, timeout).ok()
    }

    /// Waits until a metadata request lists every running node as a broker.
    fn wait_ready(&mut self) {
        let running: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id as i32)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for node in &mut self.nodes {
                node.check_alive();
            }
            if let Some(metadata) = self.metadata(None, Duration::from_secs(2)) {
                let brokers: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
                if running.iter().all(|id| brokers.contains(id)) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Kafka nodes {running:?} not ready within 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `topics` (name, partitions), replicated on every node (at most 3), and waits
    /// until each partition has a leader.
    pub(crate) fn create_topics(&self, topics: &[(String, i32)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let replication = self.nodes.len().min(3) as i32;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions)| {
                NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
            })
            .collect();
        let results = futures::executor::block_on(admin.create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create topics");
        for result in results {
            result.unwrap_or_else(|(topic, e)| panic!("creating topic {topic}: {e}"));
        }
        for (name, partitions) in topics {
            super::wait_until(
                &format!("leaders for every partition of {name}"),
                Duration::from_secs(30),
                Duration::from_millis(100),
                || {
                    self.metadata(Some(name), Duration::from_secs(2))
                        .and_then(|m| {
                            m.topics().first().map(|t| {
                                t.error().is_none()
                                    && t.partitions().len() == *partitions as usize
                                    && t.partitions().iter().all(|p| p.leader() >= 0)
                            })
                        })
                        .unwrap_or(false)
                },
            );
        }
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id as i32 == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    /// Node ids, 1-based.
    pub(crate) fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id as i32).collect()
    }

    /// Process id of a running node (benchmarks read its CPU time from /proc).
    pub(crate) fn pid(&mut self, id: i32) -> u32 {
        self.node(id).child.as_ref().expect("node running").id()
    }

    /// `kill -9` of one node.
    pub(crate) fn kill(&mut self, id: i32) {
        self.node(id).kill();
        eprintln!("real Kafka: node {id} killed (SIGKILL)");
    }

    /// Starts a killed node again on its ports and directory; waits until it is a broker again.
    pub(crate) fn restart(&mut self, id: i32) {
        let libs = self.libs.clone();
        self.node(id).start(&libs);
        self.wait_ready();
        eprintln!("real Kafka: node {id} restarted");
    }

    /// SIGSTOP: the node keeps its connections open but answers nothing.
    pub(crate) fn pause(&mut self, id: i32) {
        let node = self.node(id);
        node.signal("-STOP");
        node.paused = true;
        eprintln!("real Kafka: node {id} paused (SIGSTOP)");
    }

    /// SIGCONT after [`RealKafka::pause`].
    pub(crate) fn resume(&mut self, id: i32) {
        let node = self.node(id);
        node.signal("-CONT");
        node.paused = false;
        eprintln!("real Kafka: node {id} resumed (SIGCONT)");
    }

    /// Leader node of one partition (-1 while it has none).
    pub(crate) fn leader(&self, topic: &str, partition: i32) -> i32 {
        let metadata = self
            .metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        metadata.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .unwrap_or(-1)
    }

    /// Node hosting the group coordinator of `group`: the leader of its `__consumer_offsets`
    /// partition (`abs(group.hashCode()) % offsets.topic.num.partitions`, Java's hash).
    pub(crate) fn coordinator(&self, group: &str) -> i32 {
        let hash = group
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        let partition = (hash & 0x7fff_ffff) % OFFSETS_PARTITIONS;
        self.leader("__consumer_offsets", partition)
    }

    /// In-sync replicas of every partition of `topic`.
    pub(crate) fn in_sync_replicas(&self, topic: &str) -> Vec<Vec<i32>> {
        self.metadata(Some(topic), Duration::from_secs(5))
            .map(|m| {
                m.topics()[0]
                    .partitions()
                    .iter()
                    .map(|p| p.isr().to_vec())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for RealKafka {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for node in &mut self.nodes {
            node.kill();
            if failing {
                eprintln!(
                    "--- Kafka node {} log (tail) ---\n{}",
                    node.id,
                    tail(&node.server_log(), 30)
                );
            }
        }
    }
}

/// `offsets.topic.num.partitions` of every test broker.
const OFFSETS_PARTITIONS: i32 = 10;

fn properties(node: &Node, voters: &str, count: u32, security: Option<&Security<'_>>) -> String {
    let ports = node.ports;
    let replication = count.min(3);
    let min_isr = if replication >= 3 { 2 } else { 1 };
    let mut listeners = vec![
        format!("PLAINTEXT://127.0.0.1:{}", ports.plaintext),
        format!("CONTROLLER://127.0.0.1:{}", ports.controller),
    ];
    let mut advertised = vec![format!("PLAINTEXT://127.0.0.1:{}", ports.plaintext)];
    if security.is_some() {
        listeners.push(format!("SASL_SSL://127.0.0.1:{}", ports.sasl_ssl));
        listeners.push(format!("SSL://127.0.0.1:{}", ports.mtls));
        advertised.push(format!("SASL_SSL://127.0.0.1:{}", ports.sasl_ssl));
        advertised.push(format!("SSL://127.0.0.1:{}", ports.mtls));
    }
    let mut p = format!(
        "process.roles=broker,controller
node.id={id}
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.num.partitions={OFFSETS_PARTITIONS}
offsets.topic.replication.factor={replication}
transaction.state.log.num.partitions=4
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
replica.lag.time.max.ms=10000
unclean.leader.election.enable=false
",
        id = node.id,
        listeners = listeners.join(","),
        advertised = advertised.join(","),
        data = node.dir.join("data").display(),
    );
    if let Some(security) = security {
        let plain_users: String = security
            .plain_users
            .iter()
            .map(|(user, password)| format!(" user_{user}=\"{password}\""))
            .collect();
        p.push_str(&format!(
            "ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required{plain_users};
",
            keystore = security.pki.file("server.pem"),
            truststore = security.pki.file("ca.pem"),
        ));
    }
    p
}

fn log4j2(file: &Path) -> String {
    format!(
        "rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName={}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
",
        file.display()
    )
}
