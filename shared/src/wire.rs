//! The control-plane wire protocol between the origin and its edges: messages, frames, limits. No I/O.
//!
//! The QUIC client and server own the sockets and streams; this module only turns messages into bytes
//! and bytes into messages, so that every rule of the protocol can be tested (and fuzzed) without a
//! network, as quinn-proto does.
//!
//! # Frames
//!
//! Every message travels in one frame, a 6-byte header and a body:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..2 | version | protocol version of the body, `u16` big-endian; one of [`SUPPORTED_VERSIONS`] |
//! | 2..6 | length | body length in bytes, `u32` big-endian, at most [`MAX_FRAME_BYTES`] |
//! | 6.. | body | one [`EdgeMessage`] or [`OriginMessage`] in postcard, exactly `length` bytes |
//!
//! The reader checks the version as soon as 2 bytes have arrived and the length as soon as 6 have, so
//! a peer that speaks another version, or announces a body too large, is refused before its body is
//! buffered. [`decode_frame`] answers `Ok(None)` until a whole frame is there: append what the stream
//! delivers to a buffer, call it again, and drop the `consumed` bytes of each frame it returns.
//!
//! # Versions
//!
//! Postcard is not self-describing: a reader cannot skip a field or a variant it does not know. Hence:
//! * variants and fields are appended, never reordered or removed, so a decoder of version n reads
//!   every body of versions up to n; a change that is not an append is a new version;
//! * a sender sends only what the negotiated version defines;
//! * the first exchange is version 1, whatever is negotiated: [`Hello`] lists the versions an edge
//!   speaks, the origin picks one with [`choose_version`] and names it in [`Welcome`], or answers
//!   [`Goodbye`] with [`GoodbyeCode::UnsupportedVersion`] when there is none;
//! * each message has a golden-bytes test below, so an accidental change of the encoding fails CI.
//!
//! # A connection
//!
//! ```text
//! edge                                                     origin
//!  │── QUIC handshake: ALPN `forecast-control`, mutual TLS ──►│ edge identity from its certificate
//!  │── Hello {versions, last_applied, instance} ─────────────►│
//!  │◄──────────────── Welcome {version, origin, head, drop_all}│
//!  │◄──────────────── Invalidate: replay last_applied+1..=head │
//!  │◄──────────────── Invalidate (live) · Warm · DropAll       │
//!  │── Ack {sequence}, cumulative ───────────────────────────►│
//!  │── Stats, periodic ──────────────────────────────────────►│
//!  │◄──────────────── Heartbeat ─────────────────────────────►│ either side; answered once
//!  │◄──────────────── Goodbye {code, message} ───────────────►│ either side; then the close
//! ```
//!
//! Every error is fatal to the connection: the recovery is to reconnect and resume from the last
//! applied sequence, which the invalidation log makes lossless.
//!
//! Frames on one QUIC stream arrive in order, so the conversation above runs on one bidirectional
//! stream the edge opens. A [`Warm`] push may carry megabytes: sent on a stream of its own (framed the
//! same way), it cannot hold up the invalidations behind it, and [`Warm::sequence`] restores its order
//! relative to them.
//!
//! Times are unix milliseconds ([`crate::time::unix_ms`]) on the sender's clock. Round trips are
//! measured on one clock ([`Heartbeat`]); a difference between two machines' clocks includes their skew.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::domain::ModelRef;

/// The ALPN protocol name of the control plane, so that a QUIC endpoint refuses anything else during
/// the handshake. It carries no version: versions are negotiated by [`Hello`] and [`Welcome`].
pub const ALPN: &[u8] = b"forecast-control";

/// The version this build writes into its frames.
pub const VERSION: u16 = 1;

/// The versions this build reads, oldest first.
pub const SUPPORTED_VERSIONS: &[u16] = &[1];

/// Length of the frame header: version (2 bytes) and body length (4 bytes).
pub const HEADER_LEN: usize = 6;

/// The most body bytes a frame may announce. Protects the reader: a larger length is refused before
/// anything is buffered. Every message that passes validation fits (checked at compile time below).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The most bytes of a logical key, key prefix or surrogate tag, in selectors, warm pushes and stats.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The most selectors one invalidation carries.
pub const MAX_SELECTORS: usize = 1000;

/// The most protocol versions a [`Hello`] offers.
pub const MAX_VERSIONS: usize = 16;

/// The most bytes of an origin instance name in [`Welcome`].
pub const MAX_NAME_BYTES: usize = 256;

/// The most bytes of the human-readable message of a [`Goodbye`].
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The most response header fields of a [`Warm`] push.
pub const MAX_WARM_HEADERS: usize = 128;

/// The most bytes of all header names and values of a [`Warm`] push together.
pub const MAX_WARM_HEADER_BYTES: usize = 64 * 1024;

/// The most body bytes of a [`Warm`] push. Larger responses are not pushed; edges fetch them on a miss.
pub const MAX_WARM_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most hot keys one [`Stats`] report lists.
pub const MAX_HOT_KEYS: usize = 100;

/// Bytes postcard adds around one length-prefixed item at most (a 5-byte varint length and a tag),
/// used to check below that every valid message fits in a frame.
const ITEM_OVERHEAD: usize = 8;

const _: () = assert!(MAX_SELECTORS * (MAX_KEY_BYTES + ITEM_OVERHEAD) + 64 <= MAX_FRAME_BYTES);
const _: () = assert!(
    MAX_WARM_BODY_BYTES + MAX_WARM_HEADER_BYTES + MAX_WARM_HEADERS * 2 * ITEM_OVERHEAD + MAX_KEY_BYTES + 64
        <= MAX_FRAME_BYTES
);
const _: () = assert!(MAX_HOT_KEYS * (MAX_KEY_BYTES + 2 * ITEM_OVERHEAD) + 64 <= MAX_FRAME_BYTES);

/// Why bytes could not be read as a frame, or a message could not be written as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("unsupported control-plane protocol version {received}; this side speaks {supported:?}")]
    UnsupportedVersion { received: u16, supported: &'static [u16] },
    #[error("control-plane frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("malformed control-plane message: {0}")]
    Malformed(postcard::Error),
    #[error("malformed control-plane message: {0} bytes left over after the message")]
    TrailingBytes(usize),
    #[error("invalid control-plane message: {0}")]
    Invalid(#[from] Invalid),
}

impl WireError {
    /// The code to send in the [`Goodbye`] that closes a connection after this error.
    pub fn goodbye_code(&self) -> GoodbyeCode {
        match self {
            Self::UnsupportedVersion { .. } => GoodbyeCode::UnsupportedVersion,
            _ => GoodbyeCode::ProtocolViolation,
        }
    }
}

/// A message that decodes but breaks a limit of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} has {count} items, more than the {max} allowed")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{0} is not an HTTP status code from 100 to 599")]
    Status(u16),
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), Invalid> {
    if len > max {
        return Err(Invalid::TooLong { what, len, max });
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), Invalid> {
    if count == 0 {
        return Err(Invalid::Empty { what });
    }
    if count > max {
        return Err(Invalid::TooMany { what, count, max });
    }
    Ok(())
}

fn check_key(what: &'static str, key: &str) -> Result<(), Invalid> {
    if key.is_empty() {
        return Err(Invalid::Empty { what });
    }
    check_len(what, key.len(), MAX_KEY_BYTES)
}

/// The highest version both this build and the peer speak, if any.
pub fn choose_version(offered: &[u16]) -> Option<u16> {
    SUPPORTED_VERSIONS.iter().rev().copied().find(|v| offered.contains(v))
}

/// Which cache entries an invalidation addresses. All Vary variants of a logical key go together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    /// One logical key: path and query, such as `/v1/forecasts/AAPL/1h`.
    Key(String),
    /// Every logical key starting with this text (never empty: that is [`Selector::All`]).
    Prefix(String),
    /// Every entry whose response carried this surrogate tag (`Surrogate-Key` or `Cache-Tag`).
    Tag(String),
    /// Every entry a model version produced: the entries tagged `model:{id}@{version}` by the origin.
    Model(ModelRef),
    /// Everything.
    All,
}

impl Selector {
    /// Checks the limits: keys, prefixes and tags are 1 to [`MAX_KEY_BYTES`] bytes.
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Key(key) => check_key("selector key", key),
            Self::Prefix(prefix) => check_key("selector prefix", prefix),
            Self::Tag(tag) => check_key("selector tag", tag),
            // A `ModelRef` is checked when it is built or decoded.
            Self::Model(_) | Self::All => Ok(()),
        }
    }
}

/// Edge → origin, first on every connection: who this cache is and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the edge speaks, 1 to [`MAX_VERSIONS`] of them.
    pub versions: Vec<u16>,
    /// The last invalidation sequence the edge applied; `None` for a cache that has applied none
    /// (a fresh process: its cache is empty), `Some(0)` for a cache that was told the log was empty
    /// and has cached since (it must be replayed from sequence 1).
    pub last_applied: Option<u64>,
    /// Random per cache instance (process start): a new id tells the origin the edge restarted and
    /// its cache is new, not resumed.
    pub instance_id: u64,
    /// When this cache instance started, unix milliseconds.
    pub started_at_ms: u64,
}

impl Hello {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_count("hello versions", self.versions.len(), MAX_VERSIONS)
    }
}

/// Origin → edge, the answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides use from now on, one of those the edge offered.
    pub version: u16,
    /// The origin instance the edge is attached to, for logs and the admin API.
    pub origin: String,
    /// The newest sequence in the invalidation log; `None` while the log has never held one.
    pub head: Option<u64>,
    /// `Some`: the invalidations after the edge's `last_applied` are no longer all in the log, so it
    /// must drop its whole cache and take `head` as applied; the origin then sends what follows
    /// `head`. `None`: the origin replays `last_applied + 1 ..= head`, then sends live invalidations.
    pub drop_all: Option<DropReason>,
}

impl Welcome {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_len("origin name", self.origin.len(), MAX_NAME_BYTES)
    }
}

/// Origin → edge: purge what the selectors address. Sequences start at 1 and grow by one per
/// invalidation; an edge applies them in order and acknowledges each (or several at once with [`Ack`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidate {
    /// Position in the durable invalidation log.
    pub sequence: u64,
    /// 1 to [`MAX_SELECTORS`] selectors; an entry is purged when any of them matches.
    pub selectors: Vec<Selector>,
    /// `true`: mark stale, so the next read revalidates (and may serve stale meanwhile, within
    /// stale-while-revalidate); `false`: delete.
    pub soft: bool,
    /// When the origin accepted the invalidation, unix milliseconds (propagation-time metrics).
    pub issued_at_ms: u64,
}

impl Invalidate {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_count("invalidation selectors", self.selectors.len(), MAX_SELECTORS)?;
        self.selectors.iter().try_for_each(Selector::validate)
    }
}

/// Origin → edge: a response to store so that the next read is a hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    /// The newest invalidation sequence the origin had issued when it read this response: the edge
    /// stores it only once it has applied that sequence, so that a push cannot undo a purge it crossed.
    /// `None` for a push unrelated to a write (on-demand or scheduled warming).
    pub sequence: Option<u64>,
    /// The logical key to store it under: path and query, such as `/v1/forecasts/AAPL/1h`.
    pub key: String,
    /// The HTTP status, 100 to 599.
    pub status: u16,
    /// Response header fields in order, as (name, value bytes); at most [`MAX_WARM_HEADERS`] and
    /// [`MAX_WARM_HEADER_BYTES`] together.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The response body, at most [`MAX_WARM_BODY_BYTES`].
    #[serde(with = "byte_buf")]
    pub body: Vec<u8>,
}

impl Warm {
    pub fn validate(&self) -> Result<(), Invalid> {
        check_key("warm key", &self.key)?;
        if !(100..=599).contains(&self.status) {
            return Err(Invalid::Status(self.status));
        }
        if self.headers.len() > MAX_WARM_HEADERS {
            return Err(Invalid::TooMany {
                what: "warm headers",
                count: self.headers.len(),
                max: MAX_WARM_HEADERS,
            });
        }
        let header_bytes = self.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
        check_len("warm headers", header_bytes, MAX_WARM_HEADER_BYTES)?;
        check_len("warm body", self.body.len(), MAX_WARM_BODY_BYTES)
    }
}

/// Edge → origin: every invalidation up to and including `sequence` is applied (cumulative, so one
/// ack may confirm several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub sequence: u64,
}

/// Either direction: liveness, and round-trip time on the sender's own clock. A heartbeat with
/// `reply: false` is sent back once, unchanged but for `reply: true`; a reply is never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// When the first sender sent it, unix milliseconds on its clock.
    pub sent_at_ms: u64,
    pub reply: bool,
}

/// Edge → origin, periodically: a summary of the cache. Counters count from the cache instance's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Entries in the cache.
    pub entries: u64,
    /// Memory the cache holds, in bytes.
    pub memory_bytes: u64,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the origin.
    pub misses: u64,
    /// The most-read logical keys since the previous report, hottest first; at most [`MAX_HOT_KEYS`].
    /// The origin may warm them after a write.
    pub hottest: Vec<HotKey>,
}

impl Stats {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.hottest.len() > MAX_HOT_KEYS {
            return Err(Invalid::TooMany {
                what: "hot keys",
                count: self.hottest.len(),
                max: MAX_HOT_KEYS,
            });
        }
        self.hottest.iter().try_for_each(|hot| check_key("hot key", &hot.key))
    }
}

/// One logical key and how often it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    pub key: String,
    pub reads: u64,
}

/// Origin → edge: drop the whole cache and take `sequence` as applied (then ack it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropAll {
    pub sequence: u64,
    pub reason: DropReason,
}

/// Why an edge must drop everything. Bounded, so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// Invalidations the edge has not applied were trimmed from the log (retention).
    Trimmed,
    /// The log is behind the edge's sequence (a new or restored store): the edge's position means nothing.
    LogReset,
}

impl DropReason {
    /// The metric label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trimmed => "trimmed",
            Self::LogReset => "log_reset",
        }
    }
}

/// Either direction, last on a connection: why the sender closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    pub code: GoodbyeCode,
    /// For people, at most [`MAX_MESSAGE_BYTES`]; never holds secrets.
    pub message: String,
}

impl Goodbye {
    /// A goodbye saying `message`, cut to [`MAX_MESSAGE_BYTES`] at a character boundary.
    pub fn new(code: GoodbyeCode, message: &str) -> Self {
        let mut end = MAX_MESSAGE_BYTES.min(message.len());
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            message: message[..end].to_owned(),
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        check_len("goodbye message", self.message.len(), MAX_MESSAGE_BYTES)
    }
}

/// Why a connection ends. Bounded, so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GoodbyeCode {
    /// The sender is shutting down; reconnect (to another origin, for an edge) and resume.
    Shutdown,
    /// No protocol version in common.
    UnsupportedVersion,
    /// The peer sent a malformed or invalid frame, or a message out of place.
    ProtocolViolation,
    /// The peer fell too far behind (its unacknowledged backlog outgrew the sender's bound).
    Lagging,
    /// The sender failed (such as storage unavailable); retry later.
    Internal,
}

impl GoodbyeCode {
    /// The metric label of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::UnsupportedVersion => "unsupported_version",
            Self::ProtocolViolation => "protocol_violation",
            Self::Lagging => "lagging",
            Self::Internal => "internal",
        }
    }
}

/// What an edge sends. Variants are appended, never reordered or removed: their index is the wire tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeMessage {
    /// Tag 0. First on every connection: versions, last applied sequence, cache instance.
    Hello(Hello),
    /// Tag 1. Invalidations applied, up to and including a sequence.
    Ack(Ack),
    /// Tag 2. Liveness and round-trip time.
    Heartbeat(Heartbeat),
    /// Tag 3. Periodic cache summary and hottest keys.
    Stats(Stats),
    /// Tag 4. Last on a connection: why the edge closes it.
    Goodbye(Goodbye),
}

/// What an origin sends. Variants are appended, never reordered or removed: their index is the wire tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OriginMessage {
    /// Tag 0. The answer to `Hello`: chosen version, origin instance, log head, whether to drop all.
    Welcome(Welcome),
    /// Tag 1. A numbered purge: selectors, hard or soft.
    Invalidate(Invalidate),
    /// Tag 2. A response to store ahead of the next read.
    Warm(Warm),
    /// Tag 3. Drop the whole cache and continue from a sequence.
    DropAll(DropAll),
    /// Tag 4. Liveness and round-trip time.
    Heartbeat(Heartbeat),
    /// Tag 5. Last on a connection: why the origin closes it.
    Goodbye(Goodbye),
}

/// A message that travels in frames: [`EdgeMessage`] or [`OriginMessage`].
pub trait WireMessage: Serialize + DeserializeOwned + sealed::Sealed {
    /// Checks the protocol's limits. Frames are checked when written and when read.
    fn validate(&self) -> Result<(), Invalid>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::EdgeMessage {}
    impl Sealed for super::OriginMessage {}
}

impl WireMessage for EdgeMessage {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Hello(hello) => hello.validate(),
            Self::Stats(stats) => stats.validate(),
            Self::Goodbye(goodbye) => goodbye.validate(),
            Self::Ack(_) | Self::Heartbeat(_) => Ok(()),
        }
    }
}

impl WireMessage for OriginMessage {
    fn validate(&self) -> Result<(), Invalid> {
        match self {
            Self::Welcome(welcome) => welcome.validate(),
            Self::Invalidate(invalidate) => invalidate.validate(),
            Self::Warm(warm) => warm.validate(),
            Self::Goodbye(goodbye) => goodbye.validate(),
            Self::DropAll(_) | Self::Heartbeat(_) => Ok(()),
        }
    }
}

/// Appends `message` to `out` as one frame of [`VERSION`]. Refuses a message the peer would refuse;
/// on error `out` is left as it was.
pub fn encode_frame<M: WireMessage>(message: &M, out: &mut Vec<u8>) -> Result<(), WireError> {
    message.validate()?;
    let start = out.len();
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    // Postcard fails only on sequences of unknown length, which these types do not have.
    if let Err(error) = postcard::to_extend(message, Append(out)) {
        out.truncate(start);
        return Err(WireError::Malformed(error));
    }
    let len = out.len() - start - HEADER_LEN;
    let Some(len_field) = u32::try_from(len).ok().filter(|_| len <= MAX_FRAME_BYTES) else {
        out.truncate(start);
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    };
    out[start + 2..start + HEADER_LEN].copy_from_slice(&len_field.to_be_bytes());
    Ok(())
}

/// Reads one frame from the start of `buf`: `Ok(None)` while more bytes are needed, or the message
/// and how many bytes of `buf` its frame took. Never panics, whatever the bytes.
pub fn decode_frame<M: WireMessage>(buf: &[u8]) -> Result<Option<(M, usize)>, WireError> {
    let Some(version) = buf.get(..2) else {
        return Ok(None);
    };
    let version = u16::from_be_bytes([version[0], version[1]]);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(WireError::UnsupportedVersion {
            received: version,
            supported: SUPPORTED_VERSIONS,
        });
    }
    let Some(len) = buf.get(2..HEADER_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let (message, rest): (M, _) = postcard::take_from_bytes(body).map_err(WireError::Malformed)?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes(rest.len()));
    }
    message.validate()?;
    Ok(Some((message, HEADER_LEN + len)))
}

/// Lets postcard append to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Serde for a byte string as one run: on the wire the same bytes postcard writes for a `Vec<u8>`
/// (a varint length, then the bytes), but read with one copy instead of one call per byte.
mod byte_buf {
    use super::fmt;
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Visitor)
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame<M: WireMessage>(message: &M) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(message, &mut out).unwrap();
        out
    }

    /// A header for a body of `len` bytes.
    fn header(version: u16, len: u32) -> Vec<u8> {
        let mut header = version.to_be_bytes().to_vec();
        header.extend_from_slice(&len.to_be_bytes());
        header
    }

    fn model() -> ModelRef {
        ModelRef::new("lstm", "3.2.0").unwrap()
    }

    const AAPL: &str = "/v1/forecasts/AAPL/1h";

    /// One value of each edge message, and its frame written out by hand (spaces are for reading).
    fn edge_goldens() -> Vec<(EdgeMessage, &'static str)> {
        vec![
            (
                EdgeMessage::Hello(Hello {
                    versions: vec![1],
                    last_applied: Some(41),
                    instance_id: 0x0123_4567_89ab_cdef,
                    started_at_ms: 1_764_000_000_000,
                }),
                "0001 00000014 00 0101 0129 ef9bafcdf8acd19101 80d0dfb4ab33",
            ),
            (EdgeMessage::Ack(Ack { sequence: 42 }), "0001 00000002 01 2a"),
            (
                EdgeMessage::Heartbeat(Heartbeat {
                    sent_at_ms: 1_764_000_000_123,
                    reply: false,
                }),
                "0001 00000008 02 fbd0dfb4ab33 00",
            ),
            (
                EdgeMessage::Stats(Stats {
                    entries: 2,
                    memory_bytes: 4096,
                    hits: 300,
                    misses: 7,
                    hottest: vec![HotKey {
                        key: AAPL.into(),
                        reads: 250,
                    }],
                }),
                "0001 00000020 03 02 8020 ac02 07 01 15 2f76312f666f72656361737473 2f4141504c2f3168 fa01",
            ),
            (
                EdgeMessage::Goodbye(Goodbye {
                    code: GoodbyeCode::Shutdown,
                    message: "bye".into(),
                }),
                "0001 00000006 04 00 03 627965",
            ),
        ]
    }

    /// One value of each origin message, and its frame written out by hand.
    fn origin_goldens() -> Vec<(OriginMessage, &'static str)> {
        vec![
            (
                OriginMessage::Welcome(Welcome {
                    version: 1,
                    origin: "o1".into(),
                    head: Some(42),
                    drop_all: Some(DropReason::Trimmed),
                }),
                "0001 00000009 00 01 02 6f31 012a 0100",
            ),
            (
                OriginMessage::Invalidate(Invalidate {
                    sequence: 42,
                    selectors: vec![
                        Selector::Key("/a".into()),
                        Selector::Prefix("/b".into()),
                        Selector::Tag("AAPL".into()),
                        Selector::Model(model()),
                        Selector::All,
                    ],
                    soft: true,
                    issued_at_ms: 1_764_000_000_000,
                }),
                "0001 00000025 01 2a 05 00022f61 01022f62 020441 41504c 03046c73746d05332e322e30 04 01 80d0dfb4ab33",
            ),
            (
                OriginMessage::Warm(Warm {
                    sequence: Some(42),
                    key: "/a".into(),
                    status: 200,
                    headers: vec![("etag".into(), b"\"1\"".to_vec())],
                    body: b"{}".to_vec(),
                }),
                "0001 00000015 02 012a 022f61 c801 01 0465746167 03223122 027b7d",
            ),
            (
                OriginMessage::DropAll(DropAll {
                    sequence: 43,
                    reason: DropReason::LogReset,
                }),
                "0001 00000003 03 2b 01",
            ),
            (
                OriginMessage::Heartbeat(Heartbeat {
                    sent_at_ms: 1_764_000_000_123,
                    reply: true,
                }),
                "0001 00000008 04 fbd0dfb4ab33 01",
            ),
            (
                OriginMessage::Goodbye(Goodbye {
                    code: GoodbyeCode::Lagging,
                    message: "slow".into(),
                }),
                "0001 00000007 05 03 04 736c6f77",
            ),
        ]
    }

    fn check_goldens<M: WireMessage + fmt::Debug + PartialEq>(goldens: Vec<(M, &str)>) {
        for (message, golden) in goldens {
            let bytes = frame(&message);
            assert_eq!(
                hex::encode(&bytes),
                golden.replace(' ', ""),
                "the encoding of {message:?} changed"
            );
            assert_eq!(decode_frame::<M>(&bytes), Ok(Some((message, bytes.len()))));
        }
    }

    #[test]
    fn edge_messages_keep_their_golden_bytes() {
        check_goldens(edge_goldens());
    }

    #[test]
    fn origin_messages_keep_their_golden_bytes() {
        check_goldens(origin_goldens());
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more() {
        let frames = edge_goldens()
            .into_iter()
            .map(|(m, _)| frame(&m))
            .chain(origin_goldens().into_iter().map(|(m, _)| frame(&m)));
        for bytes in frames {
            for end in 0..bytes.len() {
                assert!(
                    matches!(decode_frame::<OriginMessage>(&bytes[..end]), Ok(None))
                        && matches!(decode_frame::<EdgeMessage>(&bytes[..end]), Ok(None)),
                    "prefix {} of {}",
                    hex::encode(&bytes[..end]),
                    hex::encode(&bytes)
                );
            }
        }
    }

    #[test]
    fn frames_in_one_buffer_decode_one_after_another() {
        let goldens = origin_goldens();
        let mut buf = Vec::new();
        for (message, _) in &goldens {
            encode_frame(message, &mut buf).unwrap();
        }
        let mut at = 0;
        for (message, _) in goldens {
            let (decoded, consumed) = decode_frame::<OriginMessage>(&buf[at..]).unwrap().unwrap();
            assert_eq!(decoded, message);
            at += consumed;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn unknown_versions_are_refused_with_what_each_side_speaks() {
        let mut bytes = frame(&EdgeMessage::Ack(Ack { sequence: 1 }));
        bytes[..2].copy_from_slice(&2u16.to_be_bytes());
        for end in [2, bytes.len()] {
            let error = decode_frame::<EdgeMessage>(&bytes[..end]).unwrap_err();
            assert_eq!(
                error,
                WireError::UnsupportedVersion {
                    received: 2,
                    supported: &[1]
                }
            );
            assert_eq!(
                error.to_string(),
                "unsupported control-plane protocol version 2; this side speaks [1]"
            );
            assert_eq!(error.goodbye_code(), GoodbyeCode::UnsupportedVersion);
        }
        // An HTTP request sent by mistake.
        assert!(matches!(
            decode_frame::<EdgeMessage>(b"GET / HTTP/1.1\r\n"),
            Err(WireError::UnsupportedVersion { received: 0x4745, .. })
        ));
    }

    #[test]
    fn oversized_lengths_are_refused_before_the_body_arrives() {
        for len in [MAX_FRAME_BYTES as u32 + 1, u32::MAX] {
            let error = decode_frame::<OriginMessage>(&header(1, len)).unwrap_err();
            assert_eq!(
                error,
                WireError::FrameTooLarge {
                    len: len as usize,
                    max: MAX_FRAME_BYTES
                }
            );
            assert_eq!(error.goodbye_code(), GoodbyeCode::ProtocolViolation);
        }
        // The limit itself is only a promise of more bytes.
        assert_eq!(
            decode_frame::<OriginMessage>(&header(1, MAX_FRAME_BYTES as u32)),
            Ok(None)
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let body_of = |bytes: &[u8]| {
            let mut frame = header(1, bytes.len() as u32);
            frame.extend_from_slice(bytes);
            decode_frame::<OriginMessage>(&frame)
        };
        let cases: [(&str, &[u8], WireError); 6] = [
            (
                "empty body",
                &[],
                WireError::Malformed(postcard::Error::DeserializeUnexpectedEnd),
            ),
            (
                "unknown tag",
                &[0x06],
                WireError::Malformed(postcard::Error::SerdeDeCustom),
            ),
            (
                "cut message",
                &[0x03, 0x2b],
                WireError::Malformed(postcard::Error::DeserializeUnexpectedEnd),
            ),
            (
                "bad bool",
                &[0x04, 0x01, 0x02],
                WireError::Malformed(postcard::Error::DeserializeBadBool),
            ),
            (
                "bad utf-8",
                &[0x05, 0x00, 0x01, 0xff],
                WireError::Malformed(postcard::Error::DeserializeBadUtf8),
            ),
            ("left over", &[0x03, 0x2b, 0x01, 0x00], WireError::TrailingBytes(1)),
        ];
        for (name, body, expected) in cases {
            assert_eq!(body_of(body), Err(expected), "{name}");
        }
    }

    #[test]
    fn decoded_model_refs_are_checked_like_built_ones() {
        let message = OriginMessage::Invalidate(Invalidate {
            sequence: 1,
            selectors: vec![Selector::Model(model())],
            soft: false,
            issued_at_ms: 0,
        });
        let mut bytes = frame(&message);
        let at = bytes.windows(4).position(|w| w == b"lstm").unwrap();
        bytes[at] = b'/';
        assert!(matches!(
            decode_frame::<OriginMessage>(&bytes),
            Err(WireError::Malformed(_))
        ));
    }

    fn invalidate(selectors: Vec<Selector>) -> OriginMessage {
        OriginMessage::Invalidate(Invalidate {
            sequence: 7,
            selectors,
            soft: false,
            issued_at_ms: 1,
        })
    }

    fn warm(headers: Vec<(String, Vec<u8>)>, body: usize) -> OriginMessage {
        OriginMessage::Warm(Warm {
            sequence: None,
            key: "k".repeat(MAX_KEY_BYTES),
            status: 200,
            headers,
            body: vec![b'x'; body],
        })
    }

    #[test]
    fn the_largest_valid_messages_fit_in_a_frame() {
        let key = "k".repeat(MAX_KEY_BYTES);
        let header_value = vec![b'v'; MAX_WARM_HEADER_BYTES / MAX_WARM_HEADERS - 1];
        let largest = [
            invalidate(vec![Selector::Prefix(key.clone()); MAX_SELECTORS]),
            warm(vec![("h".into(), header_value); MAX_WARM_HEADERS], MAX_WARM_BODY_BYTES),
        ];
        for message in largest {
            let bytes = frame(&message);
            assert!(bytes.len() <= HEADER_LEN + MAX_FRAME_BYTES);
            assert_eq!(decode_frame::<OriginMessage>(&bytes), Ok(Some((message, bytes.len()))));
        }
        let stats = EdgeMessage::Stats(Stats {
            entries: u64::MAX,
            memory_bytes: u64::MAX,
            hits: u64::MAX,
            misses: u64::MAX,
            hottest: vec![HotKey { key, reads: u64::MAX }; MAX_HOT_KEYS],
        });
        let bytes = frame(&stats);
        assert_eq!(decode_frame::<EdgeMessage>(&bytes), Ok(Some((stats, bytes.len()))));
    }

    #[test]
    fn messages_over_a_limit_are_neither_sent_nor_accepted() {
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        let cases = [
            (
                invalidate(vec![]),
                Invalid::Empty {
                    what: "invalidation selectors",
                },
            ),
            (
                invalidate(vec![Selector::All; MAX_SELECTORS + 1]),
                Invalid::TooMany {
                    what: "invalidation selectors",
                    count: MAX_SELECTORS + 1,
                    max: MAX_SELECTORS,
                },
            ),
            (
                invalidate(vec![Selector::Key(too_long.clone())]),
                Invalid::TooLong {
                    what: "selector key",
                    len: MAX_KEY_BYTES + 1,
                    max: MAX_KEY_BYTES,
                },
            ),
            (
                invalidate(vec![Selector::Prefix(String::new())]),
                Invalid::Empty {
                    what: "selector prefix",
                },
            ),
            (
                invalidate(vec![Selector::Tag(String::new())]),
                Invalid::Empty { what: "selector tag" },
            ),
            (
                warm(vec![], MAX_WARM_BODY_BYTES + 1),
                Invalid::TooLong {
                    what: "warm body",
                    len: MAX_WARM_BODY_BYTES + 1,
                    max: MAX_WARM_BODY_BYTES,
                },
            ),
            (
                warm(vec![("h".into(), vec![0; MAX_WARM_HEADER_BYTES])], 0),
                Invalid::TooLong {
                    what: "warm headers",
                    len: MAX_WARM_HEADER_BYTES + 1,
                    max: MAX_WARM_HEADER_BYTES,
                },
            ),
            (
                warm(vec![(String::new(), vec![]); MAX_WARM_HEADERS + 1], 0),
                Invalid::TooMany {
                    what: "warm headers",
                    count: MAX_WARM_HEADERS + 1,
                    max: MAX_WARM_HEADERS,
                },
            ),
            (
                OriginMessage::Warm(Warm {
                    sequence: None,
                    key: "/a".into(),
                    status: 99,
                    headers: vec![],
                    body: vec![],
                }),
                Invalid::Status(99),
            ),
            (
                OriginMessage::Welcome(Welcome {
                    version: 1,
                    origin: "o".repeat(MAX_NAME_BYTES + 1),
                    head: None,
                    drop_all: None,
                }),
                Invalid::TooLong {
                    what: "origin name",
                    len: MAX_NAME_BYTES + 1,
                    max: MAX_NAME_BYTES,
                },
            ),
            (
                OriginMessage::Goodbye(Goodbye {
                    code: GoodbyeCode::Internal,
                    message: "m".repeat(MAX_MESSAGE_BYTES + 1),
                }),
                Invalid::TooLong {
                    what: "goodbye message",
                    len: MAX_MESSAGE_BYTES + 1,
                    max: MAX_MESSAGE_BYTES,
                },
            ),
        ];
        for (message, expected) in cases {
            let mut out = vec![0xaa];
            assert_eq!(
                encode_frame(&message, &mut out),
                Err(WireError::Invalid(expected.clone()))
            );
            assert_eq!(out, [0xaa], "a refused message leaves the buffer as it was");
            // A peer that sends it anyway is refused too.
            let body = postcard::to_allocvec(&message).unwrap();
            let mut bytes = header(1, body.len() as u32);
            bytes.extend_from_slice(&body);
            assert_eq!(decode_frame::<OriginMessage>(&bytes), Err(WireError::Invalid(expected)));
        }

        let edge_cases = [
            (
                EdgeMessage::Hello(Hello {
                    versions: vec![],
                    last_applied: None,
                    instance_id: 1,
                    started_at_ms: 1,
                }),
                Invalid::Empty { what: "hello versions" },
            ),
            (
                EdgeMessage::Hello(Hello {
                    versions: vec![1; MAX_VERSIONS + 1],
                    last_applied: None,
                    instance_id: 1,
                    started_at_ms: 1,
                }),
                Invalid::TooMany {
                    what: "hello versions",
                    count: MAX_VERSIONS + 1,
                    max: MAX_VERSIONS,
                },
            ),
            (
                EdgeMessage::Stats(Stats {
                    entries: 0,
                    memory_bytes: 0,
                    hits: 0,
                    misses: 0,
                    hottest: vec![
                        HotKey {
                            key: "/a".into(),
                            reads: 1
                        };
                        MAX_HOT_KEYS + 1
                    ],
                }),
                Invalid::TooMany {
                    what: "hot keys",
                    count: MAX_HOT_KEYS + 1,
                    max: MAX_HOT_KEYS,
                },
            ),
            (
                EdgeMessage::Stats(Stats {
                    entries: 0,
                    memory_bytes: 0,
                    hits: 0,
                    misses: 0,
                    hottest: vec![HotKey {
                        key: too_long,
                        reads: 1,
                    }],
                }),
                Invalid::TooLong {
                    what: "hot key",
                    len: MAX_KEY_BYTES + 1,
                    max: MAX_KEY_BYTES,
                },
            ),
        ];
        for (message, expected) in edge_cases {
            assert_eq!(
                encode_frame(&message, &mut Vec::new()),
                Err(WireError::Invalid(expected.clone()))
            );
            let body = postcard::to_allocvec(&message).unwrap();
            let mut bytes = header(1, body.len() as u32);
            bytes.extend_from_slice(&body);
            assert_eq!(decode_frame::<EdgeMessage>(&bytes), Err(WireError::Invalid(expected)));
        }
    }

    #[test]
    fn versions_are_chosen_from_what_both_speak() {
        assert_eq!(choose_version(&[1]), Some(1));
        assert_eq!(choose_version(&[3, 1, 2]), Some(1));
        assert_eq!(choose_version(&[2, 3]), None);
        assert_eq!(choose_version(&[]), None);
        assert!(SUPPORTED_VERSIONS.contains(&VERSION));
    }

    #[test]
    fn bodies_are_written_like_any_byte_vector() {
        #[derive(Serialize)]
        struct Fast(#[serde(with = "byte_buf")] Vec<u8>);
        let body = vec![0, 1, 0x80, 0xff];
        assert_eq!(
            postcard::to_allocvec(&Fast(body.clone())).unwrap(),
            postcard::to_allocvec(&body).unwrap()
        );
    }
}
