//! The chunked transfer coding of request bodies: an incremental decoder
//! that takes bytes as they arrive, so that the reader thread (which
//! never blocks) and a handler's blocking body stream share it.
//!
//! Lines (chunk sizes with their extensions, trailers) are bounded; a
//! malformed body is an error that names what was wrong.

/// The longest chunk-size line or trailer line.
const MAX_LINE: usize = 4096;
/// The most trailer bytes.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// Reading the empty line after a chunk's data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    /// The body is complete.
    Done,
}

/// The decoder of one chunked body.
#[derive(Debug)]
pub(super) struct Decoder {
    state: State,
    line: Vec<u8>,
    trailers: usize,
}

/// What one [`Decoder::decode`] call did.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Progress {
    /// Input bytes consumed.
    pub(super) consumed: usize,
    /// Body bytes written to the output.
    pub(super) produced: usize,
}

impl Decoder {
    pub(super) fn new() -> Decoder {
        Decoder {
            state: State::Size,
            line: Vec::new(),
            trailers: 0,
        }
    }

    /// True once the last chunk and the trailers are in.
    pub(super) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input` into `out` until the input is used up, the
    /// output is full, or the body is complete.
    pub(super) fn decode(&mut self, input: &[u8], out: &mut [u8]) -> Result<Progress, String> {
        let mut consumed = 0;
        let mut produced = 0;
        while consumed < input.len() && self.state != State::Done {
            let rest = &input[consumed..];
            if let State::Data(left) = self.state {
                let room = out.len() - produced;
                if room == 0 {
                    break;
                }
                let n = rest
                    .len()
                    .min(room)
                    .min(usize::try_from(left).unwrap_or(usize::MAX));
                out[produced..produced + n].copy_from_slice(&rest[..n]);
                produced += n;
                consumed += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                continue;
            }
            // A line-oriented state: take bytes up to the end of the line.
            let (take, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(pos) => (pos + 1, true),
                None => (rest.len(), false),
            };
            if self.line.len() + take > MAX_LINE {
                return Err("chunked body: line too long".into());
            }
            self.line.extend_from_slice(&rest[..take]);
            consumed += take;
            if complete {
                self.end_line()?;
            }
        }
        Ok(Progress { consumed, produced })
    }

    /// Acts on the complete line in `self.line`.
    fn end_line(&mut self) -> Result<(), String> {
        let raw = std::mem::take(&mut self.line);
        let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            State::Size => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size)
                    .ok()
                    .map(|s| s.trim_matches([' ', '\t']))
                    .filter(|s| !s.is_empty() && s.len() <= 16)
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("chunked body: invalid chunk size")?;
                self.state = if size == 0 {
                    State::Trailer
                } else {
                    State::Data(size)
                };
            }
            State::DataEnd => {
                if !line.is_empty() {
                    return Err("chunked body: chunk data longer than its size".into());
                }
                self.state = State::Size;
            }
            State::Trailer => {
                self.trailers += raw.len();
                if self.trailers > MAX_TRAILERS {
                    return Err("chunked body: trailers too long".into());
                }
                if line.is_empty() {
                    self.state = State::Done;
                }
            }
            State::Data(_) | State::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes into an output
    /// buffer of `room` bytes at a time.
    fn decode_all(input: &[u8], step: usize, room: usize) -> Result<(Vec<u8>, bool), String> {
        let mut d = Decoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut out = vec![0u8; room];
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            let mut piece = &input[pos..end];
            while !piece.is_empty() && !d.is_done() {
                let p = d.decode(piece, &mut out)?;
                body.extend_from_slice(&out[..p.produced]);
                piece = &piece[p.consumed..];
            }
            pos = end;
        }
        Ok((body, d.is_done()))
    }

    const BODY: &[u8] = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n";

    #[test]
    fn a_body_decodes_however_it_arrives() {
        for step in [1, 2, 3, 7, BODY.len()] {
            for room in [1, 4, 64] {
                let (body, done) = decode_all(BODY, step, room).unwrap();
                assert_eq!(body, b"hello, world", "step {step} room {room}");
                assert!(done);
            }
        }
    }

    #[test]
    fn decoding_stops_at_the_end_of_the_body() {
        let mut input = BODY.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut d = Decoder::new();
        let mut out = [0u8; 64];
        let p = d.decode(&input, &mut out).unwrap();
        assert_eq!(p.consumed, BODY.len());
        assert_eq!(p.produced, 12);
        assert!(d.is_done());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhello!\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(decode_all(bad, 64, 64).is_err(), "{bad:?}");
        }
        let long = vec![b'1'; MAX_LINE + 1];
        assert!(decode_all(&long, 64, 64).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-A: 1234567890\r\n");
        }
        assert!(decode_all(&trailers, 4096, 64).is_err());
    }

    #[test]
    fn an_incomplete_body_is_not_done() {
        let (body, done) = decode_all(b"5\r\nhel", 64, 64).unwrap();
        assert_eq!(body, b"hel");
        assert!(!done);
    }
}
