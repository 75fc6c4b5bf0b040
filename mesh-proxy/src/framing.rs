//! Where each HTTP/1.1 request head on a connection starts, and whether a head frames its
//! body twice (`Content-Length` and `Transfer-Encoding`).
//!
//! hyper reads such a request as chunked and drops the `Content-Length` before the service
//! sees the head, so the edge cannot tell it from a plain chunked request. Envoy answers 400
//! and closes (its default, `allow_chunked_length: false`), and so do we: [`Framing`] follows
//! the bytes the client sends (heads, then each body by its framing, to the next head) and
//! names the request by its ordinal on the connection; the edge refuses that request.
//!
//! It follows only what it can read as hyper does: after a head it cannot parse, a request
//! that upgrades the connection (`Upgrade`, `CONNECT`) or a malformed chunk it stops, since
//! hyper then refuses the request, or the bytes are no longer HTTP. Memory is bounded by the
//! head limit; a head that spans reads is copied, one that arrives whole is parsed in place.

/// Headers parsed per head; hyper refuses more (431) before the service runs.
const MAX_HEADERS: usize = 128;

/// Follows one HTTP/1.1 connection's request framing. See the module docs.
#[derive(Debug)]
pub(crate) struct Framing {
    state: State,
    /// A head that spans reads, so far.
    partial: Vec<u8>,
    /// The longest head it reads.
    max_head: usize,
    /// Heads read so far: the ordinal of the next.
    heads: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// A `Content-Length` body: bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Not following any more.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line: the size so far, whether a digit was seen, and whether the
    /// extensions began.
    Size { size: u64, digit: bool, ext: bool },
    /// Chunk data: bytes left.
    Data(u64),
    /// The CRLF after the data: whether the CR was seen.
    DataEnd { cr: bool },
    /// Trailer lines after the last chunk: the length of the current one.
    Trailer { len: usize },
}

/// What a complete head says about its body.
enum Body {
    None,
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// Not followed further: unparsable, an upgrade, or a framing hyper refuses.
    Stop,
}

impl Framing {
    pub(crate) fn new(max_head: usize) -> Self {
        Self { state: State::Head, partial: Vec::new(), max_head, heads: 0 }
    }

    /// Follows `bytes`, the next ones the client sent. Returns the ordinal (from 0) of a
    /// request whose head has both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match self.state {
                State::Done => return None,
                State::Length(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if n == left { State::Head } else { State::Length(left - n) };
                }
                State::Chunked(chunk) => {
                    let (used, next) = chunked(chunk, bytes);
                    bytes = &bytes[used..];
                    self.state = next;
                }
                State::Head => {
                    let Some(end) = self.head_end(bytes) else {
                        if self.partial.len() + bytes.len() > self.max_head {
                            self.stop();
                        } else {
                            self.partial.extend_from_slice(bytes);
                        }
                        return None;
                    };
                    let (head, rest) = bytes.split_at(end);
                    bytes = rest;
                    let body = if self.partial.is_empty() {
                        head_body(head)
                    } else {
                        let mut whole = std::mem::take(&mut self.partial);
                        whole.extend_from_slice(head);
                        let body = head_body(&whole);
                        whole.clear();
                        self.partial = whole;
                        body
                    };
                    let Some(body) = body else {
                        // Empty lines before the request line: still in the head.
                        if self.partial.len() + head.len() > self.max_head {
                            self.stop();
                            return None;
                        }
                        self.partial.extend_from_slice(head);
                        continue;
                    };
                    let ordinal = self.heads;
                    self.heads += 1;
                    self.state = match body {
                        Body::None => State::Head,
                        Body::Length(0) => State::Head,
                        Body::Length(n) => State::Length(n),
                        Body::Chunked => State::Chunked(Chunk::Size { size: 0, digit: false, ext: false }),
                        Body::Ambiguous => {
                            // hyper closes the connection after this request.
                            self.stop();
                            return Some(ordinal);
                        }
                        Body::Stop => {
                            self.stop();
                            return None;
                        }
                    };
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Done;
        self.partial = Vec::new();
    }

    /// The length of `bytes` up to and including the blank line that ends the head, if it
    /// is in them (the head may have begun in `partial`).
    fn head_end(&self, bytes: &[u8]) -> Option<usize> {
        let before = |i: usize, back: usize| -> Option<u8> {
            if i >= back {
                Some(bytes[i - back])
            } else {
                let p = self.partial.len().checked_sub(back - i)?;
                Some(self.partial[p])
            }
        };
        let mut from = 0;
        while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
            let i = from + at;
            match before(i, 1) {
                Some(b'\n') => return Some(i + 1),
                Some(b'\r') if before(i, 2) == Some(b'\n') => return Some(i + 1),
                _ => from = i + 1,
            }
        }
        None
    }
}

/// What the complete head `head` says about its body; `None` when it is only empty lines.
fn head_body(head: &[u8]) -> Option<Body> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Some(Body::Stop).filter(|_| has_request_line(head)),
        Err(_) => return Some(Body::Stop),
    }
    if req.method == Some("CONNECT") {
        return Some(Body::Stop);
    }
    let (mut length, mut te, mut chunked) = (None, false, false);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
                return Some(Body::Stop);
            };
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // As hyper: chunked when it is the last coding named.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Some(Body::Stop);
        }
    }
    Some(match (te, length) {
        (true, Some(_)) => Body::Ambiguous,
        (true, None) if chunked => Body::Chunked,
        (true, None) => Body::Stop,
        (false, Some(n)) => Body::Length(n),
        (false, None) => Body::None,
    })
}

/// Whether `head` has anything but empty lines.
fn has_request_line(head: &[u8]) -> bool {
    head.iter().any(|&b| b != b'\r' && b != b'\n')
}

/// Follows a chunked body through `bytes`: the bytes used and the state after them.
fn chunked(mut chunk: Chunk, bytes: &[u8]) -> (usize, State) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        chunk = match chunk {
            Chunk::Data(left) => {
                let n = left.min((bytes.len() - i) as u64);
                i += n as usize;
                if n == left { Chunk::DataEnd { cr: false } } else { Chunk::Data(left - n) }
            }
            Chunk::Size { size, digit, ext } => {
                i += 1;
                match b {
                    b'\n' if !digit => return (i, State::Done),
                    b'\n' if size == 0 => Chunk::Trailer { len: 0 },
                    b'\n' => Chunk::Data(size),
                    b'\r' => Chunk::Size { size, digit, ext },
                    _ if ext => Chunk::Size { size, digit, ext },
                    b';' | b' ' | b'\t' if digit => Chunk::Size { size, digit, ext: true },
                    _ => {
                        let Some(d) = (b as char).to_digit(16) else { return (i, State::Done) };
                        let Some(size) = size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d))) else {
                            return (i, State::Done);
                        };
                        Chunk::Size { size, digit: true, ext }
                    }
                }
            }
            Chunk::DataEnd { cr } => {
                i += 1;
                match b {
                    b'\r' if !cr => Chunk::DataEnd { cr: true },
                    b'\n' if cr => Chunk::Size { size: 0, digit: false, ext: false },
                    _ => return (i, State::Done),
                }
            }
            Chunk::Trailer { len } => {
                i += 1;
                match b {
                    b'\n' if len == 0 => return (i, State::Head),
                    b'\n' => Chunk::Trailer { len: 0 },
                    b'\r' => Chunk::Trailer { len },
                    _ => Chunk::Trailer { len: len + 1 },
                }
            }
        };
    }
    (i, State::Chunked(chunk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    const POST_CL: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello";
    const POST_CHUNKED: &[u8] =
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n";
    const BOTH: &[u8] =
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    const BOTH_CL_LAST: &[u8] =
        b"POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";

    fn all(bytes: &[u8]) -> Option<u64> {
        Framing::new(60 * 1024).feed(bytes)
    }

    /// The same bytes fed in pieces cut at `cuts`.
    fn pieces(bytes: &[u8], cuts: &[usize]) -> Option<u64> {
        let mut f = Framing::new(60 * 1024);
        let mut at = 0;
        let mut found = None;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let c = c.clamp(at, bytes.len());
            found = found.or(f.feed(&bytes[at..c]));
            at = c;
        }
        found
    }

    #[test]
    fn both_framings_are_found_wherever_the_request_is() {
        assert_eq!(all(BOTH), Some(0));
        assert_eq!(all(BOTH_CL_LAST), Some(0));
        assert_eq!(all(&[GET, BOTH].concat()), Some(1));
        assert_eq!(all(&[POST_CL, GET, BOTH].concat()), Some(2));
        assert_eq!(all(&[POST_CHUNKED, POST_CL, BOTH].concat()), Some(2));
        assert_eq!(all(&[b"\r\n".as_slice(), BOTH].concat()), Some(0));
    }

    #[test]
    fn plain_requests_are_not_flagged() {
        assert_eq!(all(&[GET, POST_CL, POST_CHUNKED, GET].concat()), None);
        // A body that looks like the flagged head is body, not a head.
        let mut looks = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", BOTH.len()).into_bytes();
        looks.extend_from_slice(BOTH);
        assert_eq!(all(&looks), None);
        assert_eq!(all(&[looks.as_slice(), BOTH].concat()), Some(1));
    }

    #[test]
    fn it_stops_where_the_bytes_stop_being_http() {
        let upgrade = b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
        assert_eq!(all(&[upgrade.as_slice(), BOTH].concat()), None);
        assert_eq!(all(&[b"CONNECT a:1 HTTP/1.1\r\nhost: a:1\r\n\r\n".as_slice(), BOTH].concat()), None);
        assert_eq!(all(&[b"GET / HTTP/1.1\r\nbad header\r\n\r\n".as_slice(), BOTH].concat()), None);
        let bad_chunk = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(all(&[bad_chunk.as_slice(), BOTH].concat()), None);
        // A head longer than the limit is not buffered past it.
        let mut f = Framing::new(64);
        assert_eq!(f.feed(&[b'a'; 100]), None);
        assert_eq!(f.state, State::Done);
        assert!(f.partial.capacity() == 0);
    }

    proptest! {
        /// However the reads cut the bytes, the same request is found.
        #[test]
        fn reads_cut_anywhere_find_the_same_request(
            order in proptest::sample::subsequence(vec![0usize, 1, 2, 3], 0..=4).prop_shuffle(),
            both_at in 0usize..5,
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let reqs = [GET, POST_CL, POST_CHUNKED, b"\r\nGET /x HTTP/1.1\r\n\r\n".as_slice()];
            let mut bytes = Vec::new();
            let mut expect = None;
            let mut n = 0u64;
            for (k, &r) in order.iter().enumerate() {
                if k == both_at {
                    expect = Some(n);
                    bytes.extend_from_slice(BOTH);
                    break;
                }
                bytes.extend_from_slice(reqs[r]);
                n += 1;
            }
            if both_at == order.len() {
                expect = Some(n);
                bytes.extend_from_slice(BOTH);
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(all(&bytes), expect);
            prop_assert_eq!(pieces(&bytes, &cuts), expect);
            let every: Vec<usize> = (1..bytes.len()).collect();
            prop_assert_eq!(pieces(&bytes, &every), expect);
        }
    }
}
