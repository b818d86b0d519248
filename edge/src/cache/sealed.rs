//! How an entry's parts are laid out before sealing: cache metadata and response header in one
//! record, the body in fixed-size chunks (each optionally compressed), and the associated data that
//! binds every sealed part to its entry and position.

use std::time::SystemTime;

use http::{HeaderName, HeaderValue};
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;
use std::sync::OnceLock;

/// Plaintext size of a body chunk: bodies are sealed in chunks so a Range hit opens only the chunks
/// it needs, and an entry is never one huge allocation.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Which part of an entry a sealed value is.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    Meta,
    Body { chunk: u32, compressed: bool },
}

/// Associated data of a part: the entry's hash and generation, then the part. A part moved to
/// another entry, another position, or with its compression flag flipped fails to open.
pub fn associated_data(entry_hash: &[u8; 16], generation: u64, part: Part) -> [u8; 29] {
    let mut aad = [0u8; 29];
    aad[..16].copy_from_slice(entry_hash);
    aad[16..24].copy_from_slice(&generation.to_be_bytes());
    let (kind, index) = match part {
        Part::Meta => (0u8, 0u32),
        Part::Body {
            chunk,
            compressed: false,
        } => (1, chunk),
        Part::Body {
            chunk,
            compressed: true,
        } => (2, chunk),
    };
    aad[24] = kind;
    aad[25..29].copy_from_slice(&index.to_be_bytes());
    aad
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("metadata record is truncated")]
    Truncated,
    #[error("metadata record is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes a [`CacheMeta`]: pingora's own internal record (times, stale windows, variance), then the
/// response header as status and (name, value) pairs. Pingora's header serialization is not used
/// because it compresses with zstd, a cost every hit would pay on decode.
pub fn encode_meta(meta: &CacheMeta) -> pingora::Result<Vec<u8>> {
    let (internal, _) = meta.serialize()?;
    let header = meta.response_header();
    let mut out = Vec::with_capacity(internal.len() + 512);
    put_bytes(&mut out, &internal);
    out.extend_from_slice(&header.status.as_u16().to_be_bytes());
    let count = u32::try_from(header.headers.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for (name, value) in header.headers.iter() {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    Ok(out)
}

/// Decodes what [`encode_meta`] wrote.
pub fn decode_meta(record: &[u8]) -> Result<CacheMeta, DecodeError> {
    let mut reader = Reader(record);
    let internal = reader.bytes()?;
    let status = u16::from_be_bytes(reader.array()?);
    let count = u32::from_be_bytes(reader.array()?) as usize;
    let mut header =
        ResponseHeader::build_no_case(status, Some(count.min(64))).map_err(|_| DecodeError::Malformed("status"))?;
    for _ in 0..count {
        let name = HeaderName::from_bytes(reader.bytes()?).map_err(|_| DecodeError::Malformed("header name"))?;
        let value = HeaderValue::from_bytes(reader.bytes()?).map_err(|_| DecodeError::Malformed("header value"))?;
        header
            .append_header(name, value)
            .map_err(|_| DecodeError::Malformed("header"))?;
    }
    if !reader.0.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    let mut meta =
        CacheMeta::deserialize(internal, empty_header_record()).map_err(|_| DecodeError::Malformed("internal meta"))?;
    *meta.response_header_mut() = header;
    Ok(meta)
}

/// Pingora's serialized form of an empty response header, paired with the internal record so
/// `CacheMeta::deserialize` can rebuild the metadata; the real header replaces it right after.
fn empty_header_record() -> &'static [u8] {
    static RECORD: OnceLock<Vec<u8>> = OnceLock::new();
    RECORD.get_or_init(|| {
        let header = ResponseHeader::build_no_case(200, Some(0)).expect("200 is a valid status");
        let meta = CacheMeta::new(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, 0, 0, header);
        meta.serialize().expect("an empty header serializes").1
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        if self.0.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample_meta() -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.append_header("content-type", "application/json").unwrap();
        header.append_header("etag", "\"v7\"").unwrap();
        header.append_header("surrogate-key", "AAPL AAPL:1h").unwrap();
        header.append_header("vary", "accept-encoding").unwrap();
        header.append_header("vary", "accept").unwrap();
        let now = SystemTime::now();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 30, 600, header);
        meta.set_variance_key([7; 16]);
        meta
    }

    #[test]
    fn meta_survives_a_round_trip() {
        let meta = sample_meta();
        let decoded = decode_meta(&encode_meta(&meta).unwrap()).unwrap();
        assert_eq!(decoded.fresh_until(), meta.fresh_until());
        assert_eq!(decoded.created(), meta.created());
        assert_eq!(decoded.updated(), meta.updated());
        assert_eq!(decoded.stale_while_revalidate_sec(), 30);
        assert_eq!(decoded.stale_if_error_sec(), 600);
        assert_eq!(decoded.variance(), Some([7; 16]));
        assert_eq!(decoded.response_header().status, 200);
        assert_eq!(decoded.headers().get("etag").unwrap(), "\"v7\"");
        let vary: Vec<_> = decoded.headers().get_all("vary").iter().collect();
        assert_eq!(vary, ["accept-encoding", "accept"]);
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let record = encode_meta(&sample_meta()).unwrap();
        for cut in [0, 3, 10, record.len() / 2, record.len() - 1] {
            assert!(decode_meta(&record[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode_meta(&longer).is_err());
    }

    #[test]
    fn associated_data_differs_by_entry_generation_and_position() {
        let a = associated_data(&[1; 16], 5, Part::Meta);
        assert_ne!(a, associated_data(&[2; 16], 5, Part::Meta));
        assert_ne!(a, associated_data(&[1; 16], 6, Part::Meta));
        let chunk = |chunk, compressed| associated_data(&[1; 16], 5, Part::Body { chunk, compressed });
        assert_ne!(chunk(0, false), a);
        assert_ne!(chunk(0, false), chunk(1, false));
        assert_ne!(chunk(0, false), chunk(0, true));
    }
}
