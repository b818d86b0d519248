//! A scripted control-plane origin for the edge tests: a real quinn server with mutual TLS over a
//! development PKI made in a temporary folder, speaking the origin's side of `shared::wire`. It answers
//! each `Hello` with the scripted `Welcome`, sends what the test queues, and records Hellos and Acks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, RecvStream, SendStream};
use shared::framed::{FrameReader, FrameWriter, StreamError};
use shared::tls::{EdgeIdentity, TlsFiles, server_config, write_dev_pki};
use shared::wire::{self, DropReason, EdgeMessage, Hello, OriginMessage, Welcome};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::support::eventually;

/// A CA, an origin certificate and three edge certificates (`edge-1`…`edge-3`, region `test`) in a
/// temporary folder.
pub struct Pki {
    pub dir: TempDir,
    edges: Vec<EdgeIdentity>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let edges: Vec<EdgeIdentity> = (1..=3)
            .map(|n| EdgeIdentity::new(format!("edge-{n}"), "test").unwrap())
            .collect();
        write_dev_pki(dir.path(), &edges).unwrap();
        Self { dir, edges }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The `EDGE_TLS__*` variables of `edge-1`'s certificate.
    pub fn edge_env(&self) -> Vec<(String, String)> {
        self.edge_env_of(0)
    }

    /// The `EDGE_TLS__*` variables of the certificate of edge `index` (0 is `edge-1`).
    pub fn edge_env_of(&self, index: usize) -> Vec<(String, String)> {
        let files = TlsFiles::edge(self.dir.path(), &self.edges[index]);
        [
            ("EDGE_TLS__CA", files.ca),
            ("EDGE_TLS__CERT", files.cert),
            ("EDGE_TLS__KEY", files.key),
        ]
        .into_iter()
        .map(|(name, file)| (name.to_owned(), file.display().to_string()))
        .collect()
    }

    /// The real origin's `[tls]` section for this PKI.
    pub fn origin_tls(&self) -> TlsFiles {
        TlsFiles::origin(self.dir.path())
    }

    fn edge_tls(&self) -> TlsFiles {
        TlsFiles::edge(self.dir.path(), &self.edges[0])
    }

    /// Dials a control plane at `addr` with this PKI's edge certificate and says `Hello`: `Ok` once the
    /// origin answers `Welcome`, `Err` when the handshake or the conversation fails.
    pub async fn try_control_handshake(&self, addr: SocketAddr) -> anyhow::Result<Welcome> {
        let pem = self.edge_tls().read()?;
        let tls = shared::tls::client_config(&pem, wire::ALPN)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
        let mut endpoint = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conversation = async {
            let connection = endpoint.connect(addr, "localhost")?.await?;
            let (send, recv) = connection.open_bi().await?;
            let hello = EdgeMessage::Hello(Hello {
                versions: wire::SUPPORTED_VERSIONS.to_vec(),
                last_applied: None,
                instance_id: 1,
                started_at_ms: 0,
            });
            // Kept open while the answer is read: a finished stream ends the conversation.
            let mut writer = FrameWriter::new(send);
            writer.send(&hello).await?;
            match FrameReader::new(recv).next().await? {
                OriginMessage::Welcome(welcome) => Ok(welcome),
                other => Err(anyhow::anyhow!("expected a welcome, got {other:?}")),
            }
        };
        let result = tokio::time::timeout(crate::support::WAIT, conversation)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", crate::support::WAIT))?;
        endpoint.close(0u32.into(), b"done");
        result
    }

    fn server_config(&self) -> quinn::ServerConfig {
        let pem = self.origin_tls().read().unwrap();
        let tls = server_config(&pem, wire::ALPN).unwrap();
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(Arc::new(tls)).unwrap()))
    }
}

enum Command {
    Send(OriginMessage),
    Close,
}

#[derive(Default)]
struct Record {
    hellos: Vec<Hello>,
    acks: Vec<u64>,
    head: Option<u64>,
    drop_all: Option<DropReason>,
}

/// The origin's side of the control plane on `127.0.0.1`, one connection at a time.
pub struct ControlOrigin {
    pub addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    commands: mpsc::UnboundedSender<Command>,
    endpoint: Endpoint,
    task: JoinHandle<()>,
}

impl ControlOrigin {
    /// On a free UDP port.
    pub async fn start(pki: &Pki) -> Self {
        Self::bind(pki, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
    }

    /// On `addr` again, once the previous server's socket is released.
    pub async fn restart(pki: &Pki, addr: SocketAddr) -> Self {
        eventually("the control port to be free again", async || Self::bind(pki, addr).ok()).await
    }

    fn bind(pki: &Pki, addr: SocketAddr) -> std::io::Result<Self> {
        let endpoint = Endpoint::server(pki.server_config(), addr)?;
        let addr = endpoint.local_addr()?;
        let record = Arc::new(Mutex::new(Record::default()));
        let (commands, mut queued) = mpsc::unbounded_channel();
        let task = tokio::spawn({
            let endpoint = endpoint.clone();
            let record = record.clone();
            async move {
                while let Some(incoming) = endpoint.accept().await {
                    let Ok(connection) = incoming.await else { continue };
                    let Ok((send, recv)) = connection.accept_bi().await else {
                        continue;
                    };
                    serve(send, recv, &record, &mut queued).await;
                    connection.close(0u32.into(), b"test origin closes");
                }
            }
        });
        Ok(Self {
            addr,
            record,
            commands,
            endpoint,
            task,
        })
    }

    /// The `EDGE_CONTROL__ORIGINS` value of this server.
    pub fn origins(&self) -> String {
        self.addr.to_string()
    }

    /// The `Welcome` of the next connections: log head and whether the edge must drop everything.
    pub fn set_welcome(&self, head: Option<u64>, drop_all: Option<DropReason>) {
        let mut record = self.record.lock().unwrap();
        record.head = head;
        record.drop_all = drop_all;
    }

    /// Sends `message` on the current connection (or the next one).
    pub fn send(&self, message: OriginMessage) {
        let _ = self.commands.send(Command::Send(message));
    }

    /// Closes the current connection; the edge is expected to come back.
    pub fn drop_connection(&self) {
        let _ = self.commands.send(Command::Close);
    }

    pub fn hellos(&self) -> Vec<Hello> {
        self.record.lock().unwrap().hellos.clone()
    }

    /// Waits for the `count`th Hello and returns it.
    pub async fn hello(&self, count: usize) -> Hello {
        eventually(&format!("hello number {count}"), async || {
            self.hellos().get(count - 1).cloned()
        })
        .await
    }

    /// Waits until the edge acknowledged `sequence`.
    pub async fn acked(&self, sequence: u64) {
        eventually(&format!("the ack of {sequence}"), async || {
            self.record.lock().unwrap().acks.contains(&sequence).then_some(())
        })
        .await;
    }

    /// Closes every connection and the socket.
    pub async fn stop(self) {
        self.endpoint.close(0u32.into(), b"test origin stops");
        self.task.abort();
        let _ = self.task.await;
        self.endpoint.wait_idle().await;
    }
}

/// One conversation: Hello → Welcome, then queued messages out and Acks in, until a `Close` or
/// the stream ends.
async fn serve(
    send: SendStream,
    recv: RecvStream,
    record: &Mutex<Record>,
    queued: &mut mpsc::UnboundedReceiver<Command>,
) {
    let (mut writer, mut reader) = (FrameWriter::new(send), FrameReader::new(recv));
    let Some(EdgeMessage::Hello(hello)) = read(&mut reader).await else {
        return;
    };
    let welcome = {
        let mut record = record.lock().unwrap();
        record.hellos.push(hello);
        Welcome {
            version: 1,
            origin: "test-origin".into(),
            head: record.head,
            drop_all: record.drop_all,
        }
    };
    if writer.send(&OriginMessage::Welcome(welcome)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = read(&mut reader) => match message {
                Some(EdgeMessage::Ack(ack)) => record.lock().unwrap().acks.push(ack.sequence),
                Some(_) => {}
                None => return,
            },
            command = queued.recv() => match command {
                Some(Command::Send(message)) => {
                    if writer.send(&message).await.is_err() {
                        return;
                    }
                }
                Some(Command::Close) | None => return,
            },
        }
    }
}

/// The edge's next message; `None` once the stream ends. The edge never sends a malformed frame.
async fn read(reader: &mut FrameReader<RecvStream>) -> Option<EdgeMessage> {
    match reader.next().await {
        Ok(message) => Some(message),
        Err(StreamError::Wire(error)) => panic!("the edge sent a malformed frame: {error}"),
        Err(_) => None,
    }
}
