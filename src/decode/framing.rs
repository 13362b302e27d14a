//! Cuts a byte stream into lines (frames) for the decoders: `\n`-delimited, a trailing `\r`
//! stripped, empty lines skipped, lines longer than a limit reported once and dropped.
//!
//! Complete lines lying wholly within the caller's buffer are handed out in place; only a
//! partial tail is copied and kept for the next call.

/// Why bytes of the stream were dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line was longer than the limit; its bytes are discarded through the next `\n`.
    #[error("line longer than {limit} bytes (saw at least {seen_at_least})")]
    Oversize { limit: usize, seen_at_least: usize },
}

/// Incremental line framer; keep one per connection.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max_len: usize,
    /// Start of a line whose `\n` has not arrived yet. Holds at most `max_len` bytes of line
    /// content plus a trailing `\r` that may turn out to be the delimiter's.
    partial: Vec<u8>,
    /// Inside an oversize line that was already reported: drop bytes through the next `\n`.
    discarding: bool,
}

impl LineFramer {
    /// A framer for lines of at most `max_len` bytes (not counting `\n` or a `\r` before it).
    pub fn new(max_len: usize) -> Self {
        LineFramer {
            max_len,
            partial: Vec::new(),
            discarding: false,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes of an incomplete line held since the last call.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Feeds the next chunk of the stream. `on_frame` is called once per complete non-empty
    /// line, in order, with the line minus its `\n` and a trailing `\r`; or once per oversize
    /// line with an error.
    pub fn feed(&mut self, data: &[u8], mut on_frame: impl FnMut(Result<&[u8], FrameError>)) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(nl);
            rest = after.get(1..).unwrap_or_default();
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if self.partial.is_empty() {
                self.complete(line, &mut on_frame);
            } else {
                let raw_len = self.partial.len() + line.len();
                let ends_cr = match line.last() {
                    Some(&b) => b == b'\r',
                    None => self.partial.last() == Some(&b'\r'),
                };
                let content_len = raw_len - usize::from(ends_cr);
                if content_len > self.max_len {
                    self.partial.clear();
                    on_frame(Err(self.oversize(content_len)));
                } else {
                    let mut joined = std::mem::take(&mut self.partial);
                    joined.extend_from_slice(line);
                    self.complete(&joined, &mut on_frame);
                    joined.clear();
                    self.partial = joined;
                }
            }
        }
        if rest.is_empty() || self.discarding {
            return;
        }
        // Incomplete tail: keep it unless it already cannot fit. A trailing '\r' may still be
        // the delimiter's, so it does not count yet.
        let raw_len = self.partial.len() + rest.len();
        let at_least = raw_len - usize::from(rest.last() == Some(&b'\r'));
        if at_least > self.max_len {
            self.partial.clear();
            self.discarding = true;
            on_frame(Err(self.oversize(at_least)));
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// Drops an incomplete line (e.g. at disconnect); returns its length if one was pending.
    /// The rest of an oversize line, already reported, is dropped silently.
    pub fn reset(&mut self) -> Option<usize> {
        self.discarding = false;
        let n = self.partial.len();
        self.partial.clear();
        (n > 0).then_some(n)
    }

    fn oversize(&self, seen_at_least: usize) -> FrameError {
        FrameError::Oversize {
            limit: self.max_len,
            seen_at_least,
        }
    }

    /// Hands out one complete raw line (without `\n`).
    fn complete(&self, line: &[u8], on_frame: &mut impl FnMut(Result<&[u8], FrameError>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return;
        }
        if line.len() > self.max_len {
            on_frame(Err(self.oversize(line.len())));
        } else {
            on_frame(Ok(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::VecSink;
    use super::super::{decode, DecodeError, Format};
    use super::*;
    use proptest::prelude::*;

    /// Frames as owned bytes, errors as-is.
    type Out = Vec<Result<Vec<u8>, FrameError>>;

    fn feed_all(f: &mut LineFramer, chunks: &[&[u8]]) -> Out {
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, |r| out.push(r.map(<[u8]>::to_vec)));
        }
        out
    }

    fn okf(s: &str) -> Result<Vec<u8>, FrameError> {
        Ok(s.as_bytes().to_vec())
    }

    fn over(limit: usize, seen_at_least: usize) -> Result<Vec<u8>, FrameError> {
        Err(FrameError::Oversize {
            limit,
            seen_at_least,
        })
    }

    #[test]
    fn lines_in_one_chunk_and_partial_tail() {
        let mut f = LineFramer::new(100);
        assert_eq!(
            feed_all(&mut f, &[b"a\nbb\n\nccc"]),
            vec![okf("a"), okf("bb")]
        );
        assert_eq!(f.pending(), 3);
        assert_eq!(feed_all(&mut f, &[b"c\n"]), vec![okf("cccc")]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn crlf_and_empty_lines() {
        let mut f = LineFramer::new(100);
        assert_eq!(
            feed_all(&mut f, &[b"a\r\n\r\n\n b \r\nx\r\r\n"]),
            vec![okf("a"), okf(" b "), okf("x\r")]
        );
        // CR split from its LF.
        assert_eq!(feed_all(&mut f, &[b"y\r", b"\n"]), vec![okf("y")]);
        assert_eq!(feed_all(&mut f, &[b"z", b"\r", b"\n"]), vec![okf("z")]);
        // A lone CR line is empty.
        assert_eq!(feed_all(&mut f, &[b"\r", b"\n", b"q\n"]), vec![okf("q")]);
        // A CR not at the end stays.
        assert_eq!(feed_all(&mut f, &[b"a\rb\n"]), vec![okf("a\rb")]);
    }

    #[test]
    fn byte_by_byte() {
        let stream = b"{\"device\":\"d\",\"v\":1}\r\nd,t,2\n\nk=v\n";
        let mut f = LineFramer::new(64);
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            feed_all(&mut f, &chunks),
            vec![okf("{\"device\":\"d\",\"v\":1}"), okf("d,t,2"), okf("k=v")]
        );
        assert_eq!(f.reset(), None);
    }

    #[test]
    fn complete_lines_are_not_copied() {
        let data = b"one\ntwo\n";
        let mut f = LineFramer::new(10);
        let mut ptrs = Vec::new();
        f.feed(data, |r| ptrs.push(r.unwrap().as_ptr()));
        assert_eq!(ptrs, vec![data.as_ptr(), data[4..].as_ptr()]);
    }

    #[test]
    fn exact_limit_fits_even_with_crlf_split() {
        let mut f = LineFramer::new(4);
        assert_eq!(feed_all(&mut f, &[b"abcd\r\n"]), vec![okf("abcd")]);
        assert_eq!(feed_all(&mut f, &[b"abcd\r", b"\n"]), vec![okf("abcd")]);
        assert_eq!(
            feed_all(&mut f, &[b"ab", b"cd", b"\r\n"]),
            vec![okf("abcd")]
        );
        assert_eq!(
            feed_all(&mut f, &[b"ab", b"cd\r", b"\r\n"]),
            vec![over(4, 5)]
        );
        assert_eq!(feed_all(&mut f, &[b"abcde\n"]), vec![over(4, 5)]);
        assert_eq!(feed_all(&mut f, &[b"ab", b"cde\n"]), vec![over(4, 5)]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn oversize_then_normal_line_recovers() {
        let mut f = LineFramer::new(5);
        assert_eq!(
            feed_all(&mut f, &[b"0123456789\nok\n"]),
            vec![over(5, 10), okf("ok")]
        );
        assert_eq!(
            feed_all(&mut f, &[b"abc", b"defgh", b"ij\nok2\n"]),
            vec![over(5, 8), okf("ok2")]
        );
    }

    #[test]
    fn oversize_across_many_feeds_yields_one_error() {
        let mut f = LineFramer::new(8);
        let mut out = Vec::new();
        for _ in 0..1000 {
            f.feed(b"xxxxxxx", |r| out.push(r.map(<[u8]>::to_vec)));
            assert!(f.pending() <= 8);
        }
        f.feed(b"xx\r\nnext\r\n", |r| out.push(r.map(<[u8]>::to_vec)));
        assert_eq!(out, vec![over(8, 14), okf("next")]);
    }

    #[test]
    fn reset_drops_partial() {
        let mut f = LineFramer::new(10);
        assert_eq!(feed_all(&mut f, &[b"abc"]), vec![]);
        assert_eq!(f.reset(), Some(3));
        assert_eq!(f.reset(), None);
        assert_eq!(feed_all(&mut f, &[b"def\n"]), vec![okf("def")]);
        // Reset in the middle of a discarded oversize line: the next line starts clean.
        assert_eq!(feed_all(&mut f, &[b"0123456789abc"]), vec![over(10, 13)]);
        assert_eq!(f.reset(), None);
        assert_eq!(feed_all(&mut f, &[b"ghi\n"]), vec![okf("ghi")]);
    }

    #[test]
    fn zero_limit_rejects_every_non_empty_line() {
        let mut f = LineFramer::new(0);
        assert_eq!(
            feed_all(&mut f, &[b"\r\n", b"a", b"\n", b"\n"]),
            vec![over(0, 1)]
        );
    }

    #[test]
    fn error_message() {
        assert_eq!(
            FrameError::Oversize {
                limit: 4,
                seen_at_least: 9
            }
            .to_string(),
            "line longer than 4 bytes (saw at least 9)"
        );
    }

    /// What framing `stream` should give: complete lines, plus an error for an oversize tail.
    /// Oversize errors are compared by limit only, as `seen_at_least` depends on the chunking.
    fn reference(stream: &[u8], max_len: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
        let tail = pieces.pop().unwrap_or_default();
        let mut out = Vec::new();
        for p in pieces {
            let p = p.strip_suffix(b"\r").unwrap_or(p);
            if p.is_empty() {
                continue;
            }
            out.push(if p.len() > max_len {
                Err(max_len)
            } else {
                Ok(p.to_vec())
            });
        }
        let tail_at_least = tail.len() - usize::from(tail.last() == Some(&b'\r'));
        if tail_at_least > max_len {
            out.push(Err(max_len));
        }
        out
    }

    fn normalize(out: Out) -> Vec<Result<Vec<u8>, usize>> {
        out.into_iter()
            .map(|r| r.map_err(|FrameError::Oversize { limit, .. }| limit))
            .collect()
    }

    fn split_at_points<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for c in cuts {
            chunks.push(&data[start..c]);
            start = c;
        }
        chunks.push(&data[start..]);
        chunks
    }

    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => Just(b'\n'),
                1 => Just(b'\r'),
                3 => Just(b'a'),
            ],
            0..300,
        )
    }

    /// Frames and decodes `chunks` as one connection would.
    fn frame_and_decode(
        chunks: &[&[u8]],
        max_len: usize,
        format: Format,
    ) -> (VecSink, Vec<Result<usize, DecodeError>>, usize) {
        let mut f = LineFramer::new(max_len);
        let mut sink = VecSink::default();
        let mut results = Vec::new();
        let mut oversize = 0;
        for c in chunks {
            f.feed(c, |r| match r {
                Ok(frame) => results.push(decode(format, frame, Some("dflt"), &mut sink)),
                Err(_) => oversize += 1,
            });
        }
        (sink, results, oversize)
    }

    proptest! {
        #[test]
        fn chunking_does_not_change_frames(
            stream in stream_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            max_len in 0usize..40,
        ) {
            let whole = feed_all(&mut LineFramer::new(max_len), &[&stream]);
            let mut f = LineFramer::new(max_len);
            let chunked = feed_all(&mut f, &split_at_points(&stream, &cuts));
            prop_assert!(f.pending() <= max_len + 1);
            for r in whole.iter().flatten() {
                prop_assert!(!r.is_empty() && r.len() <= max_len && !r.contains(&b'\n'));
            }
            let whole = normalize(whole);
            prop_assert_eq!(&whole, &normalize(chunked));
            prop_assert_eq!(whole, reference(&stream, max_len));
        }

        #[test]
        fn byte_by_byte_equals_whole(stream in stream_bytes(), max_len in 0usize..40) {
            let whole = normalize(feed_all(&mut LineFramer::new(max_len), &[&stream]));
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            let single = normalize(feed_all(&mut LineFramer::new(max_len), &bytes));
            prop_assert_eq!(whole, single);
        }

        #[test]
        fn framed_decoding_is_chunking_independent(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just(r#"{"device":"d1","metric":"temp","ts":1763761234567,"value":22.1}"#.to_string()),
                    Just(r#"{"ts":1763761234,"temp":22.1,"humidity":40}"#.to_string()),
                    Just("d1,temp,22.5,1763761234".to_string()),
                    Just("device=d1 temp=22.5 humidity=40".to_string()),
                    Just("garbage".to_string()),
                    "[ -~]{0,70}",
                ],
                0..20,
            ),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..30),
            format in prop_oneof![Just(Format::Json), Just(Format::Csv), Just(Format::Kv)],
        ) {
            let sep = if crlf { "\r\n" } else { "\n" };
            let stream: String = lines.iter().map(|l| format!("{l}{sep}")).collect();
            let whole = frame_and_decode(&[stream.as_bytes()], 64, format);
            let chunked =
                frame_and_decode(&split_at_points(stream.as_bytes(), &cuts), 64, format);
            prop_assert_eq!(&whole, &chunked);
            // Same as decoding each line directly.
            let mut direct = VecSink::default();
            let mut results = Vec::new();
            let mut oversize = 0;
            for l in lines.iter().filter(|l| !l.is_empty()) {
                if l.len() > 64 {
                    oversize += 1;
                } else {
                    results.push(decode(format, l.as_bytes(), Some("dflt"), &mut direct));
                }
            }
            prop_assert_eq!(whole, (direct, results, oversize));
        }
    }
}
