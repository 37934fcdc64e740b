//! The length-prefixed messages of the byte stream (docs/protocol.md, "Connection setup").

use super::{HEADER_LEN, MAX_NOISE_MESSAGE, NoiseError};

/// A message body and the bytes after it, or `None` while the message is incomplete.
pub(super) type Split<'a> = Option<(&'a [u8], &'a [u8])>;

/// Splits one length-prefixed message off the front of `buf`.
pub(super) fn split_message(buf: &[u8]) -> Result<Split<'_>, NoiseError> {
    let Some((header, after)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes(*header));
    if len == 0 {
        return Err(NoiseError::ZeroLength);
    }
    Ok(after.split_at_checked(len))
}

/// Appends one length-prefixed message to `transmit`: `write` gets `capacity` zeroed bytes and
/// returns how many it used (1..=65535). On error `transmit` is left as it was.
pub(super) fn push_message(
    transmit: &mut Vec<u8>,
    capacity: usize,
    write: impl FnOnce(&mut [u8]) -> Result<usize, snow::Error>,
) -> Result<(), String> {
    let start = transmit.len();
    transmit.resize(start + HEADER_LEN + capacity, 0);
    let written = match transmit.get_mut(start + HEADER_LEN..) {
        Some(out) => write(out).map_err(|e| e.to_string()),
        None => Err("transmit buffer shorter than reserved".to_owned()),
    };
    let len = written.and_then(|n| match u16::try_from(n) {
        Ok(len) if len > 0 && n <= capacity => Ok(len),
        _ => Err(format!(
            "message length {n} outside 1..={}",
            capacity.min(MAX_NOISE_MESSAGE)
        )),
    });
    match len {
        Ok(len) => {
            transmit.truncate(start + HEADER_LEN + usize::from(len));
            if let Some(header) = transmit.get_mut(start..start + HEADER_LEN) {
                header.copy_from_slice(&len.to_be_bytes());
            }
            Ok(())
        }
        Err(e) => {
            transmit.truncate(start);
            Err(e)
        }
    }
}
