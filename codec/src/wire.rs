//! A minimal protobuf wire scanner used to count repeated fields *before* prost decodes a body,
//! so a small frame cannot make the decoder allocate a huge vector of tiny entries.

/// One field value as seen on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    /// Wire type 0.
    Varint,
    /// Wire types 1 and 5.
    Fixed,
    /// Wire type 2.
    Bytes(&'a [u8]),
}

/// Reads one base-128 varint (at most 10 bytes).
fn read_varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return Err("truncated varint");
        };
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes")
}

/// Skips `n` bytes.
fn skip<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], &'static str> {
    let n = usize::try_from(n).map_err(|_| "length overflows")?;
    if n > buf.len() {
        return Err("field length past end of body");
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Calls `f(tag, value)` for every top-level field of the message in `buf`.
///
/// # Errors
/// A reason when the wire structure is broken or uses groups (which dndm never sends).
pub(crate) fn for_each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, Field<'a>),
) -> Result<(), &'static str> {
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if tag == 0 {
            return Err("field number 0");
        }
        let value = match key & 7 {
            0 => {
                read_varint(&mut buf)?;
                Field::Varint
            }
            1 => {
                skip(&mut buf, 8)?;
                Field::Fixed
            }
            5 => {
                skip(&mut buf, 4)?;
                Field::Fixed
            }
            2 => {
                let len = read_varint(&mut buf)?;
                Field::Bytes(skip(&mut buf, len)?)
            }
            _ => return Err("unsupported wire type"),
        };
        f(tag, value);
    }
    Ok(())
}

/// Number of entries a repeated scalar field contributes: one per unpacked value, one per
/// varint inside a packed run.
pub(crate) fn scalar_entries(value: Field<'_>) -> usize {
    match value {
        Field::Varint | Field::Fixed => 1,
        Field::Bytes(packed) => packed.iter().filter(|b| *b & 0x80 == 0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fields_and_rejects_broken_structure() {
        // field 1 varint 150, field 2 bytes "ab", field 2 packed? (bytes), field 3 fixed32
        let buf = [0x08, 0x96, 0x01, 0x12, 0x02, b'a', b'b', 0x1d, 1, 2, 3, 4];
        let mut seen = Vec::new();
        for_each_field(&buf, |t, v| seen.push((t, scalar_entries(v)))).unwrap();
        assert_eq!(seen, vec![(1, 1), (2, 2), (3, 1)]);
        assert!(for_each_field(&[0x12, 0x05, 1], |_, _| ()).is_err());
        assert!(for_each_field(&[0x0b], |_, _| ()).is_err());
        assert!(for_each_field(&[0x00, 0x00], |_, _| ()).is_err());
        assert!(for_each_field(&[0x08; 11], |_, _| ()).is_err());
        assert!(
            for_each_field(
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                |_, _| ()
            )
            .is_err()
        );
    }
}
