//! Control-plane messages over a byte stream: the one reader and writer the origin and the edges both
//! use on their QUIC streams. The streams are opened by the caller; this module only moves frames.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::{self, WireError, WireMessage};

/// Bytes asked of the stream at a time.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("cannot read the control stream: {0}")]
    Read(std::io::Error),
    #[error("cannot write to the control stream: {0}")]
    Write(std::io::Error),
    #[error("the peer finished the control stream")]
    Finished,
}

/// Reads whole messages from a stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::new(),
        }
    }

    /// The next message; an error when the stream ends or breaks the protocol. Cancel-safe: bytes move
    /// into the buffer only once a read completed, so it can be raced in `select!`.
    pub async fn next<M: WireMessage>(&mut self) -> Result<M, StreamError> {
        loop {
            if let Some((message, consumed)) = wire::decode_frame(&self.buf)? {
                self.buf.drain(..consumed);
                return Ok(message);
            }
            self.buf.reserve(READ_CHUNK);
            let read = self.reader.read_buf(&mut self.buf).await.map_err(StreamError::Read)?;
            if read == 0 {
                return Err(StreamError::Finished);
            }
        }
    }
}

/// Writes messages to a stream, one frame each.
#[derive(Debug)]
pub struct FrameWriter<W> {
    writer: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(writer: W) -> Self {
        Self { writer }
    }

    pub async fn send<M: WireMessage>(&mut self, message: &M) -> Result<(), StreamError> {
        let mut frame = Vec::new();
        wire::encode_frame(message, &mut frame)?;
        self.writer.write_all(&frame).await.map_err(StreamError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ack, EdgeMessage, Heartbeat};

    #[tokio::test]
    async fn messages_cross_a_stream_in_order_whatever_the_read_sizes() {
        // A tiny pipe buffer: frames arrive split across many reads.
        let (client, server) = tokio::io::duplex(5);
        let sent = vec![
            EdgeMessage::Ack(Ack { sequence: 7 }),
            EdgeMessage::Heartbeat(Heartbeat {
                sent_at_ms: 42,
                reply: false,
            }),
        ];
        let writing = async {
            let mut writer = FrameWriter::new(client);
            for message in &sent {
                writer.send(message).await.unwrap();
            }
            // Dropping the writer finishes the stream.
        };
        let mut reader = FrameReader::new(server);
        let reading = async {
            let mut received = Vec::new();
            for _ in &sent {
                received.push(reader.next::<EdgeMessage>().await.unwrap());
            }
            received
        };
        let ((), received) = tokio::join!(writing, reading);
        assert_eq!(received, sent);
        assert!(matches!(reader.next::<EdgeMessage>().await, Err(StreamError::Finished)));
    }

    #[tokio::test]
    async fn a_frame_of_another_version_is_an_error() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&[0, 9, 0, 0, 0, 0]).await.unwrap();
        let mut reader = FrameReader::new(server);
        assert!(matches!(
            reader.next::<EdgeMessage>().await,
            Err(StreamError::Wire(WireError::UnsupportedVersion { .. }))
        ));
    }
}
