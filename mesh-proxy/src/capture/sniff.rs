//! Protocol detection for ports that declare none, as Istio's `http_inspector`: the first
//! bytes of a connection are an HTTP/1.x request line or the HTTP/2 preface, or they are
//! not HTTP. Network input: any bytes, never a panic, never more than [`SNIFF_BYTES`] read.

/// How many bytes are looked at (enough for the HTTP/2 preface's first line and the longest
/// method with its space).
pub(crate) const SNIFF_BYTES: usize = 16;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line's method and space, or the HTTP/2 preface.
    Http,
    /// Anything else (a TLS ClientHello, a database greeting's reply, nothing yet).
    Opaque,
}

/// The methods Envoy's inspector accepts (RFC 9110's and WebDAV's).
const METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
];

/// Classify a connection by its first bytes (at most [`SNIFF_BYTES`] are read).
pub fn sniff(first: &[u8]) -> Sniffed {
    let first = &first[..first.len().min(SNIFF_BYTES)];
    if first.starts_with(b"PRI * HTTP/2.0") {
        return Sniffed::Http;
    }
    let is_method = |m: &&[u8]| first.len() > m.len() && first.starts_with(m) && first[m.len()] == b' ';
    if METHODS.iter().any(is_method) { Sniffed::Http } else { Sniffed::Opaque }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The reference: the prefix is a method and a space, or the preface.
    fn model(b: &[u8]) -> Sniffed {
        let b = &b[..b.len().min(SNIFF_BYTES)];
        let text = String::from_utf8_lossy(b);
        let http = text.starts_with("PRI * HTTP/2.0")
            || text.split_once(' ').is_some_and(|(m, _)| METHODS.iter().any(|x| x == &m.as_bytes()));
        if http { Sniffed::Http } else { Sniffed::Opaque }
    }

    proptest! {
        /// The fuzz target (`benches/fuzz.sh` runs it at 10^6 cases): any bytes, no panic,
        /// the model's answer; request lines with any method and target are HTTP.
        #[test]
        fn sniffing_any_bytes_agrees_with_the_model(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            method in proptest::sample::select(METHODS),
            rest in "[ -~]{0,20}",
        ) {
            prop_assert_eq!(sniff(&bytes), model(&bytes));
            let mut line = method.to_vec();
            line.push(b' ');
            line.extend_from_slice(rest.as_bytes());
            prop_assert_eq!(sniff(&line), Sniffed::Http);
        }
    }

    #[test]
    fn http_requests_and_the_h2_preface_are_http_the_rest_is_not() {
        for http in
            [&b"GET / HTTP/1.1\r\n"[..], b"POST /x HTTP/1.0", b"PRI * HTTP/2.0\r\n\r\nSM", b"OPTIONS * HTTP/1.1"]
        {
            assert_eq!(sniff(http), Sniffed::Http, "{:?}", String::from_utf8_lossy(http));
        }
        for opaque in
            [&b""[..], b"GET", b"GETX / HTTP/1.1", b"\x16\x03\x01\x02\x00", b"get / HTTP/1.1", b"SSH-2.0-Open"]
        {
            assert_eq!(sniff(opaque), Sniffed::Opaque, "{:?}", String::from_utf8_lossy(opaque));
        }
    }
}
