//! The tar format, written: ustar headers, with a pax header in front
//! when a name, a link target or a size does not fit. `pack` writes its
//! archives with it, and the tests their hostile ones.

use std::io::{self, Write};

use super::tar::{padding, BLOCK};

/// A member to write: the header fields [`write_member`] needs.
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    /// The name; a pax `path` record carries it when over 100 bytes.
    pub name: &'a [u8],
    /// The type flag byte (`b'0'`, `b'5'`, ...).
    pub typeflag: u8,
    /// Permission bits.
    pub mode: u32,
    /// Bytes of data that follow.
    pub size: u64,
    /// Link target; a pax `linkpath` record carries it when over 100 bytes.
    pub link: &'a [u8],
    /// Modification time.
    pub mtime: u64,
    /// Owner and group ids written in the header.
    pub uid: u64,
    /// See `uid`.
    pub gid: u64,
}

/// The largest value of an octal field of `width` bytes (one byte is the
/// terminator).
fn octal_max(width: usize) -> u64 {
    (1u64 << (3 * (width - 1))) - 1
}

fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{:0width$o}", value.min(octal_max(field.len())));
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

/// One ustar header block. Names and links over 100 bytes are cut: use
/// [`write_member`], which adds pax records for them.
pub(crate) fn header_block(h: &Header<'_>) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let name = &h.name[..h.name.len().min(100)];
    block[..name.len()].copy_from_slice(name);
    put_octal(&mut block[100..108], u64::from(h.mode));
    put_octal(&mut block[108..116], h.uid);
    put_octal(&mut block[116..124], h.gid);
    put_octal(&mut block[124..136], h.size);
    put_octal(&mut block[136..148], h.mtime);
    block[156] = h.typeflag;
    let link = &h.link[..h.link.len().min(100)];
    block[157..157 + link.len()].copy_from_slice(link);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
    block
}

/// One pax record, `LEN KEY=VALUE\n`, LEN counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// Writes `data` followed by padding to a whole block.
pub(crate) fn write_padded(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.write_all(&[0u8; BLOCK][..padding(data.len() as u64) as usize])
}

/// Writes the header of one member, preceded by a pax header when its
/// name, link or size does not fit ustar. The caller writes `h.size`
/// bytes of data and then [`padding`] zero bytes.
pub(crate) fn write_member(out: &mut impl Write, h: &Header<'_>) -> io::Result<()> {
    let mut pax = Vec::new();
    if h.name.len() > 100 {
        pax.extend(pax_record("path", h.name));
    }
    if h.link.len() > 100 {
        pax.extend(pax_record("linkpath", h.link));
    }
    if h.size > octal_max(12) {
        pax.extend(pax_record("size", h.size.to_string().as_bytes()));
    }
    if !pax.is_empty() {
        let meta = Header {
            name: b"././@PaxHeader",
            typeflag: b'x',
            mode: 0o644,
            size: pax.len() as u64,
            link: b"",
            mtime: h.mtime,
            uid: 0,
            gid: 0,
        };
        out.write_all(&header_block(&meta))?;
        write_padded(out, &pax)?;
    }
    out.write_all(&header_block(h))
}

/// Writes the end of an archive: two zero blocks.
pub(crate) fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0, 1, 5, 6, 7, 90, 95, 96, 97, 990, 995, 996] {
            let record = pax_record("path", &vec![b'a'; value_len]);
            let text = String::from_utf8(record.clone()).unwrap();
            let len: usize = text.split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, record.len(), "{text}");
        }
    }
}
