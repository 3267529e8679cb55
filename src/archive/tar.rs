//! The tar format, read: a streaming reader of ustar, GNU and pax
//! archives (the writer is [`super::write`]).
//!
//! The reader yields one [`Entry`] per member with its full name already
//! resolved (ustar `prefix`, GNU `L`/`K` long names, pax `x` and `g`
//! `path`/`linkpath`/`size`; other pax keys are ignored) and then hands
//! out the member's data. It judges nothing about names or types: that is
//! `unpack`'s job. It does bound what it reads ([`Limits`]): headers
//! count as members, data and metadata count as bytes, and one metadata
//! record (a long name, a pax header) may not exceed [`META_MAX`], so
//! that no archive can make it allocate or read without end.

use std::io::{self, Read};

use super::Limits;

/// The tar block size.
pub(crate) const BLOCK: usize = 512;
/// Largest GNU long name or pax header accepted, in bytes.
pub(crate) const META_MAX: u64 = 1 << 20;

/// What a member is, from its type flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `0`, NUL or `7`: a regular file.
    File,
    /// `1`: a hard link to an earlier member.
    HardLink,
    /// `2`: a symbolic link.
    Symlink,
    /// `3`: a character device.
    CharDevice,
    /// `4`: a block device.
    BlockDevice,
    /// `5`: a directory.
    Directory,
    /// `6`: a FIFO.
    Fifo,
    /// Any other type flag (GNU sparse files, volume labels, ...).
    Other(u8),
}

/// One member: header fields with the long names applied.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The name as the archive gives it, not yet checked.
    pub name: Vec<u8>,
    /// The link target of a hard or symbolic link.
    pub link: Vec<u8>,
    /// The member's type.
    pub kind: Kind,
    /// The permission bits as the archive gives them (`& 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch (0 when negative).
    pub mtime: u64,
}

/// Why reading stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream is not a valid tar archive; the message says where.
    Malformed(String),
    /// A limit was reached; the message says which.
    TooLarge(String),
    /// The stream ended inside a header or a member.
    Truncated,
    /// Reading the decompressed stream failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Overrides from pax headers (`x` for the next member, `g` for all).
#[derive(Debug, Default, Clone)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

/// A streaming tar reader over a decompressed stream.
pub(crate) struct Reader<R> {
    inner: R,
    limits: Limits,
    /// Data bytes of the current member not yet read.
    remaining: u64,
    /// Padding after the current member's data.
    padding: u64,
    /// Headers seen, metadata headers included.
    members: u64,
    /// Data and metadata bytes announced so far.
    bytes: u64,
    global: Pax,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// A reader of `inner` bounded by `limits`.
    pub(crate) fn new(inner: R, limits: Limits) -> Reader<R> {
        Reader {
            inner,
            limits,
            remaining: 0,
            padding: 0,
            members: 0,
            bytes: 0,
            global: Pax::default(),
            done: false,
        }
    }

    /// The next member, or `None` at the end of the archive (two zero
    /// blocks, one zero block then the end of the stream, or the end of
    /// the stream between members). Data of the previous member not read
    /// is skipped.
    ///
    /// # Errors
    ///
    /// A malformed header, a limit reached, or a read error.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local = Pax::default();
        loop {
            self.skip_rest()?;
            if self.done {
                return Ok(None);
            }
            let Some(block) = self.read_header()? else {
                self.done = true;
                return Ok(None);
            };
            self.members += 1;
            if self.members > self.limits.max_members {
                return Err(ReadError::TooLarge(format!(
                    "the archive has more than {} members",
                    self.limits.max_members
                )));
            }
            let typeflag = block[156];
            let mut size = number(&block[124..136], "size")?;
            let is_meta = matches!(typeflag, b'L' | b'K' | b'x' | b'g');
            if !is_meta {
                if let Some(pax) = local.size.or(self.global.size) {
                    size = pax;
                }
            }
            let kind = kind_of(typeflag);
            // Only regular files (and what we do not know) carry data;
            // GNU tar writes 0 for the others and ignores the field.
            if !is_meta && !matches!(kind, Kind::File | Kind::Other(_)) {
                size = 0;
            }
            self.announce(size)?;
            if is_meta {
                if size > META_MAX {
                    return Err(ReadError::Malformed(format!(
                        "a {} header of {size} bytes (the most accepted is {META_MAX})",
                        typeflag as char
                    )));
                }
                let data = self.read_meta(size)?;
                match typeflag {
                    b'L' => long_name = Some(until_nul(&data).to_vec()),
                    b'K' => long_link = Some(until_nul(&data).to_vec()),
                    b'x' => parse_pax(&data, &mut local)?,
                    _ => parse_pax(&data, &mut self.global)?,
                }
                continue;
            }
            let name = local
                .path
                .take()
                .or(long_name.take())
                .or_else(|| self.global.path.clone())
                .unwrap_or_else(|| header_name(&block));
            let link = local
                .linkpath
                .take()
                .or(long_link.take())
                .or_else(|| self.global.linkpath.clone())
                .unwrap_or_else(|| until_nul(&block[157..257]).to_vec());
            let mode = number(&block[100..108], "mode")? as u32 & 0o7777;
            let mtime = number(&block[136..148], "mtime").unwrap_or(0);
            // A pre-POSIX archive marks a directory by a trailing slash.
            let kind = if kind == Kind::File && typeflag != b'7' && name.ends_with(b"/") {
                size = 0;
                Kind::Directory
            } else {
                kind
            };
            self.remaining = size;
            self.padding = padding(size);
            return Ok(Some(Entry {
                name,
                link,
                kind,
                mode,
                mtime,
            }));
        }
    }

    /// Reads data of the current member into `buf`; 0 at its end.
    ///
    /// # Errors
    ///
    /// The stream ends inside the member, or a read error.
    pub(crate) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = read_some(&mut self.inner, &mut buf[..want])?;
        if n == 0 {
            return Err(truncated());
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// After the end of the archive: reads what is left of the stream (a
    /// tar writer pads to its record size) and returns how many bytes
    /// that was. More than `max` bytes is malformed.
    ///
    /// # Errors
    ///
    /// Too much trailing data, or a read error.
    pub(crate) fn drain(&mut self, max: u64) -> Result<u64, ReadError> {
        let mut sink = [0u8; 8192];
        let mut total = 0u64;
        loop {
            let n = read_some(&mut self.inner, &mut sink)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
            if total > max {
                return Err(ReadError::Malformed(format!(
                    "more than {max} bytes follow the end of the archive"
                )));
            }
        }
    }

    fn announce(&mut self, size: u64) -> Result<(), ReadError> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.max_bytes {
            return Err(ReadError::TooLarge(format!(
                "the archive holds more than {} bytes",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    fn skip_rest(&mut self) -> Result<(), ReadError> {
        let mut left = self.remaining + self.padding;
        let mut sink = [0u8; 8192];
        while left > 0 {
            let want = sink.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = read_some(&mut self.inner, &mut sink[..want])?;
            if n == 0 {
                return Err(truncated());
            }
            left -= n as u64;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    /// The next header block, `None` at the end of the archive.
    fn read_header(&mut self) -> Result<Option<[u8; BLOCK]>, ReadError> {
        let mut block = [0u8; BLOCK];
        match read_block(&mut self.inner, &mut block)? {
            0 => return Ok(None),
            BLOCK => {}
            _ => return Err(truncated()),
        }
        if block.iter().all(|&b| b == 0) {
            // The first of the two zero blocks; a missing second one is
            // tolerated, as GNU tar does.
            let mut second = [0u8; BLOCK];
            read_block(&mut self.inner, &mut second)?;
            return Ok(None);
        }
        check_sum(&block)?;
        Ok(Some(block))
    }

    fn read_meta(&mut self, size: u64) -> Result<Vec<u8>, ReadError> {
        let len = usize::try_from(size).map_err(|_| truncated())?;
        let mut data = vec![0u8; len];
        if read_block(&mut self.inner, &mut data)? != len {
            return Err(truncated());
        }
        self.remaining = 0;
        self.padding = padding(size);
        Ok(data)
    }
}

fn truncated() -> ReadError {
    ReadError::Truncated
}

/// One `read`, retried on EINTR.
fn read_some(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match inner.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_block(inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(inner, &mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Padding that brings `size` to a whole number of blocks.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn until_nul(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

fn kind_of(typeflag: u8) -> Kind {
    match typeflag {
        b'0' | 0 | b'7' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::CharDevice,
        b'4' => Kind::BlockDevice,
        b'5' => Kind::Directory,
        b'6' => Kind::Fifo,
        other => Kind::Other(other),
    }
}

/// The name from the header: `prefix/name` in POSIX ustar, `name` else
/// (the GNU format keeps other fields where ustar has its prefix).
fn header_name(block: &[u8; BLOCK]) -> Vec<u8> {
    let name = until_nul(&block[0..100]);
    let prefix = until_nul(&block[345..500]);
    if &block[257..263] == b"ustar\0" && !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        full
    } else {
        name.to_vec()
    }
}

/// A numeric field: octal text, or GNU base-256 when the high bit of the
/// first byte is set.
fn number(field: &[u8], what: &str) -> Result<u64, ReadError> {
    let bad = || ReadError::Malformed(format!("a header has an invalid {what} field"));
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err(bad()); // negative
        }
        let mut value = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(bad)?;
        }
        return Ok(value);
    }
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ' || b == 0)
        .take_while(|&&b| b != b' ' && b != 0);
    let mut value = 0u64;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad());
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(value)
}

/// Checks the header checksum (unsigned sum, or the signed sum that some
/// old writers used), with the checksum field counted as spaces.
fn check_sum(block: &[u8; BLOCK]) -> Result<(), ReadError> {
    let stored = number(&block[148..156], "checksum")?;
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(ReadError::Malformed(
            "a header has a bad checksum (not a tar archive, or a damaged one)".into(),
        ))
    }
}

/// Applies the records of a pax header (`LEN KEY=VALUE\n`, LEN counting
/// the whole record) to `pax`; unknown keys are ignored.
fn parse_pax(mut data: &[u8], pax: &mut Pax) -> Result<(), ReadError> {
    let bad = || ReadError::Malformed("a pax header is malformed".into());
    while !data.is_empty() && data[0] != 0 {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.linkpath = Some(value.to_vec()),
            b"size" => {
                let size = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(bad)?;
                pax.size = Some(size);
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::write::{header_block, write_end, write_member, write_padded, Header};

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 30,
        max_members: 1000,
    };

    fn header<'a>(name: &'a [u8], typeflag: u8, size: u64, link: &'a [u8]) -> Header<'a> {
        Header {
            name,
            typeflag,
            mode: 0o644,
            size,
            link,
            mtime: 1_700_000_000,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn long_names_and_links_round_trip_through_pax() {
        let name = vec![b'n'; 300];
        let link = vec![b'l'; 150];
        let mut out = Vec::new();
        write_member(&mut out, &header(&name, b'0', 3, b"")).unwrap();
        write_padded(&mut out, b"abc").unwrap();
        write_member(&mut out, &header(b"s", b'2', 0, &link)).unwrap();
        write_end(&mut out).unwrap();
        let mut reader = Reader::new(&out[..], LIMITS);
        let first = reader.next_entry().unwrap().unwrap();
        assert_eq!(first.name, name);
        assert_eq!(first.kind, Kind::File);
        let mut buf = [0u8; 10];
        assert_eq!(reader.read_data(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        let second = reader.next_entry().unwrap().unwrap();
        assert_eq!((second.kind, second.link), (Kind::Symlink, link));
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn octal_and_base256_numbers() {
        assert_eq!(number(b"0000644\0", "mode").unwrap(), 0o644);
        assert_eq!(number(b"   755 \0", "mode").unwrap(), 0o755);
        assert_eq!(number(b"\0\0\0\0", "mode").unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02; // 2 << 32
        assert_eq!(number(&big, "size").unwrap(), 2 << 32);
        assert!(number(b"0008\0", "mode").is_err());
        assert!(number(&[0xff; 12], "size").is_err());
    }

    #[test]
    fn a_bad_checksum_is_malformed() {
        let mut block = header_block(&header(b"f", b'0', 0, b""));
        block[0] = b'g';
        let mut reader = Reader::new(&block[..], LIMITS);
        assert!(
            matches!(reader.next_entry(), Err(ReadError::Malformed(m)) if m.contains("checksum"))
        );
    }

    #[test]
    fn data_cut_short_is_malformed() {
        let mut out = Vec::new();
        write_member(&mut out, &header(b"f", b'0', 1000, b"")).unwrap();
        out.extend_from_slice(&[1u8; 100]);
        let mut reader = Reader::new(&out[..], LIMITS);
        reader.next_entry().unwrap().unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(reader.read_data(&mut buf).unwrap(), 100);
        assert!(matches!(
            reader.read_data(&mut buf),
            Err(ReadError::Truncated)
        ));
    }

    #[test]
    fn limits_count_headers_and_bytes() {
        let mut out = Vec::new();
        for i in 0..5u8 {
            write_member(&mut out, &header(&[b'a' + i], b'0', 600, b"")).unwrap();
            write_padded(&mut out, &[0u8; 600]).unwrap();
        }
        write_end(&mut out).unwrap();
        let count = |limits| {
            let mut reader = Reader::new(&out[..], limits);
            let mut n = 0;
            loop {
                match reader.next_entry() {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return Ok(n),
                    Err(e) => return Err(e),
                }
            }
        };
        assert_eq!(count(LIMITS).unwrap(), 5);
        let few = Limits {
            max_members: 4,
            ..LIMITS
        };
        assert!(matches!(count(few), Err(ReadError::TooLarge(m)) if m.contains("4 members")));
        let small = Limits {
            max_bytes: 2999,
            ..LIMITS
        };
        assert!(matches!(count(small), Err(ReadError::TooLarge(m)) if m.contains("2999 bytes")));
    }

    #[test]
    fn an_oversized_metadata_header_is_refused_before_it_is_read() {
        let mut out = Vec::new();
        write_member(&mut out, &header(b"././@LongLink", b'L', META_MAX + 1, b"")).unwrap();
        let mut reader = Reader::new(&out[..], LIMITS);
        assert!(
            matches!(reader.next_entry(), Err(ReadError::Malformed(m)) if m.contains("L header"))
        );
    }
}
