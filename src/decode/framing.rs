//! Cuts a byte stream into frames for the decoders: by default `\n`-delimited lines with a
//! trailing `\r` stripped; or any exact delimiter (`\r`, `;`, `\x03`...); or no delimiter at all,
//! the caller ending frames (after a silence gap). Empty frames are skipped, frames longer than
//! a limit reported once and dropped. Complete frames lying wholly within the caller's buffer are
//! handed out in place; only a partial tail is copied and kept for the next call.
//! (Over 600 lines with its tests; the framer itself is about 250.)

/// Why bytes of the stream were dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame was longer than the limit; its bytes are discarded through the next delimiter.
    #[error("line longer than {limit} bytes (saw at least {seen_at_least})")]
    Oversize { limit: usize, seen_at_least: usize },
}

/// Where a frame ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delimiter {
    /// `\n`, a `\r` just before it stripped: accepts `\n` and `\r\n` line ends alike.
    Newline,
    /// This exact, non-empty byte sequence, e.g. `\r`, `;` or `END\r\n`.
    Bytes(Vec<u8>),
    /// None: frames end only when the caller says so (`end_frame`), e.g. after a silence gap.
    None,
}

/// Incremental framer; keep one per connection.
#[derive(Debug, Clone)]
pub struct LineFramer {
    max_len: usize,
    delim: Delimiter,
    /// KMP failure table of a multi-byte delimiter.
    fail: Vec<usize>,
    /// Bytes of the delimiter matched at the end of the stream so far (multi-byte delimiters).
    matched: usize,
    /// Start of a frame whose delimiter has not arrived yet. Holds at most `max_len` bytes of
    /// content plus what may turn out to be part of the delimiter (a `\r`, or a prefix).
    partial: Vec<u8>,
    /// Inside an oversize frame that was already reported: drop bytes through its end.
    discarding: bool,
}

impl LineFramer {
    /// A framer for `\n` lines of at most `max_len` bytes (not counting `\n` or a `\r` before it).
    pub fn new(max_len: usize) -> Self {
        Self::with_delimiter(max_len, Delimiter::Newline)
    }

    /// A framer for frames of at most `max_len` bytes ending with `delim` (not counted).
    /// An empty `Delimiter::Bytes` means `Delimiter::None`.
    pub fn with_delimiter(max_len: usize, delim: Delimiter) -> Self {
        let delim = match delim {
            Delimiter::Bytes(b) if b.is_empty() => Delimiter::None,
            d => d,
        };
        let fail = match &delim {
            Delimiter::Bytes(d) => kmp_table(d),
            _ => Vec::new(),
        };
        LineFramer {
            max_len,
            delim,
            fail,
            matched: 0,
            partial: Vec::new(),
            discarding: false,
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn delimiter(&self) -> &Delimiter {
        &self.delim
    }

    /// Bytes of an incomplete frame held since the last call.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Feeds the next chunk of the stream. `on_frame` is called once per complete non-empty
    /// frame, in order, with the frame minus its delimiter (and, for `Newline`, a trailing
    /// `\r`); or once per oversize frame with an error.
    pub fn feed(&mut self, data: &[u8], mut on_frame: impl FnMut(Result<&[u8], FrameError>)) {
        let k = self.delim_len();
        let mut start = 0; // first byte of `data` not yet part of a handed-out frame
        let mut scan = 0; // where the delimiter search goes on
        while let Some(end) = self.find_end(data, &mut scan) {
            let here = &data[start..end]; // this frame's bytes in `data`, delimiter included
            start = end;
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if self.partial.is_empty() {
                // `here` holds the whole delimiter: nothing pending can be part of it.
                self.complete(&here[..here.len() - k], &mut on_frame);
                continue;
            }
            // The frame began in an earlier chunk; the delimiter may even straddle the two.
            let content = self.partial.len() + here.len() - k;
            let byte_at = |i: usize| match self.partial.get(i) {
                Some(&b) => b,
                None => here[i - self.partial.len()],
            };
            let strip =
                self.delim == Delimiter::Newline && content > 0 && byte_at(content - 1) == b'\r';
            let len = content - usize::from(strip);
            if len > self.max_len {
                self.partial.clear();
                on_frame(Err(self.oversize(len)));
                continue;
            }
            let mut joined = std::mem::take(&mut self.partial);
            if content >= joined.len() {
                joined.extend_from_slice(&here[..content - joined.len()]);
            } else {
                joined.truncate(content);
            }
            self.complete(&joined, &mut on_frame);
            joined.clear();
            self.partial = joined;
        }
        let rest = &data[start..];
        if rest.is_empty() || self.discarding {
            return;
        }
        // Incomplete tail: keep it unless it already cannot fit. Bytes that may still turn out
        // to be the delimiter's (a trailing '\r', a delimiter prefix) do not count yet.
        let maybe_delim = match self.delim {
            Delimiter::Newline => usize::from(rest.last() == Some(&b'\r')),
            Delimiter::Bytes(_) => self.matched,
            Delimiter::None => 0,
        };
        let at_least = self.partial.len() + rest.len() - maybe_delim;
        if at_least > self.max_len {
            self.partial.clear();
            self.discarding = true;
            on_frame(Err(self.oversize(at_least)));
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// Ends the pending frame here, as if a delimiter had arrived: for delimiter-less streams
    /// cut by silence. Ends the discarding of an oversize frame too.
    pub fn end_frame(&mut self, mut on_frame: impl FnMut(Result<&[u8], FrameError>)) {
        self.matched = 0;
        if std::mem::take(&mut self.discarding) {
            return;
        }
        let pending = std::mem::take(&mut self.partial);
        self.complete(&pending, &mut on_frame);
        self.partial = pending;
        self.partial.clear();
    }

    /// Drops an incomplete frame (e.g. at disconnect); returns its length if one was pending.
    /// The rest of an oversize frame, already reported, is dropped silently.
    pub fn reset(&mut self) -> Option<usize> {
        self.discarding = false;
        self.matched = 0;
        let n = self.partial.len();
        self.partial.clear();
        (n > 0).then_some(n)
    }

    fn delim_len(&self) -> usize {
        match &self.delim {
            Delimiter::Newline => 1,
            Delimiter::Bytes(d) => d.len(),
            Delimiter::None => 0,
        }
    }

    /// Finds the next delimiter end at or after `*scan`; returns the index just past it.
    fn find_end(&mut self, data: &[u8], scan: &mut usize) -> Option<usize> {
        let from = *scan;
        let end = match &self.delim {
            Delimiter::None => None,
            Delimiter::Newline => data[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from + i + 1),
            Delimiter::Bytes(d) if d.len() == 1 => data[from..]
                .iter()
                .position(|&b| b == d[0])
                .map(|i| from + i + 1),
            Delimiter::Bytes(d) => {
                let mut found = None;
                for (i, &b) in data[from..].iter().enumerate() {
                    while self.matched > 0 && d[self.matched] != b {
                        self.matched = self.fail[self.matched - 1];
                    }
                    if d[self.matched] == b {
                        self.matched += 1;
                    }
                    if self.matched == d.len() {
                        self.matched = 0;
                        found = Some(from + i + 1);
                        break;
                    }
                }
                found
            }
        };
        *scan = end.unwrap_or(data.len());
        end
    }

    fn oversize(&self, seen_at_least: usize) -> FrameError {
        FrameError::Oversize {
            limit: self.max_len,
            seen_at_least,
        }
    }

    /// Hands out one complete frame (without its delimiter).
    fn complete(&self, frame: &[u8], on_frame: &mut impl FnMut(Result<&[u8], FrameError>)) {
        let frame = match self.delim {
            Delimiter::Newline => frame.strip_suffix(b"\r").unwrap_or(frame),
            _ => frame,
        };
        if frame.is_empty() {
            return;
        }
        if frame.len() > self.max_len {
            on_frame(Err(self.oversize(frame.len())));
        } else {
            on_frame(Ok(frame));
        }
    }
}

/// KMP failure function: `t[i]` is the length of the longest proper prefix of `d[..=i]` that is
/// also its suffix.
fn kmp_table(d: &[u8]) -> Vec<usize> {
    let mut t = vec![0; d.len()];
    let mut k = 0;
    for i in 1..d.len() {
        while k > 0 && d[i] != d[k] {
            k = t[k - 1];
        }
        if d[i] == d[k] {
            k += 1;
        }
        t[i] = k;
    }
    t
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
                Ok(frame) => results.push(decode(
                    format,
                    frame,
                    &super::super::Opts::device(Some("dflt")),
                    &mut sink,
                )),
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
                    results.push(decode(format, l.as_bytes(), &super::super::Opts::device(Some("dflt")), &mut direct));
                }
            }
            prop_assert_eq!(whole, (direct, results, oversize));
        }
    }
}

#[cfg(test)]
mod delimiter_tests {
    use super::*;
    use proptest::prelude::*;

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

    fn bytes(d: &str) -> Delimiter {
        Delimiter::Bytes(d.as_bytes().to_vec())
    }

    #[test]
    fn single_byte_custom_delimiter() {
        let mut f = LineFramer::with_delimiter(16, bytes("\r"));
        assert_eq!(
            feed_all(&mut f, &[b"21.5\r22.0\r\r2", b"3.1\r"]),
            vec![okf("21.5"), okf("22.0"), okf("23.1")]
        );
        // A '\n' is ordinary data here.
        assert_eq!(feed_all(&mut f, &[b"a\nb\r"]), vec![okf("a\nb")]);
        let mut f = LineFramer::with_delimiter(16, bytes(";"));
        assert_eq!(
            feed_all(&mut f, &[b"1,2;3,4;"]),
            vec![okf("1,2"), okf("3,4")]
        );
    }

    #[test]
    fn multi_byte_delimiter_straddling_chunks() {
        let mut f = LineFramer::with_delimiter(16, bytes("END"));
        assert_eq!(
            feed_all(&mut f, &[b"abcE", b"N", b"DdefEN", b"DEND"]),
            vec![okf("abc"), okf("def")]
        );
        assert_eq!(f.pending(), 0);
        // Overlapping prefixes: "EEND" is an "E" then the delimiter.
        assert_eq!(feed_all(&mut f, &[b"xEEN", b"D"]), vec![okf("xE")]);
        // Strict \r\n: a bare \n does not end a frame.
        let mut f = LineFramer::with_delimiter(16, bytes("\r\n"));
        assert_eq!(
            feed_all(&mut f, &[b"a\nb\r", b"\nc\r\r\n"]),
            vec![okf("a\nb"), okf("c\r")]
        );
    }

    #[test]
    fn complete_frames_are_not_copied_with_custom_delimiter() {
        let data = b"one;;two;";
        let mut f = LineFramer::with_delimiter(10, bytes(";;"));
        let mut ptrs = Vec::new();
        f.feed(data, |r| ptrs.push(r.expect("frame").as_ptr()));
        assert_eq!(ptrs, vec![data.as_ptr()]);
        assert_eq!(f.pending(), 4);
    }

    #[test]
    fn custom_delimiter_oversize_and_prefix_allowance() {
        let mut f = LineFramer::with_delimiter(4, bytes("\r\n"));
        // Content fits exactly; the trailing "\r" is a delimiter prefix, not content.
        assert_eq!(feed_all(&mut f, &[b"abcd\r", b"\n"]), vec![okf("abcd")]);
        let e = feed_all(&mut f, &[b"abcde", b"fgh\r\nok\r\n"]);
        assert_eq!(
            e,
            vec![
                Err(FrameError::Oversize {
                    limit: 4,
                    seen_at_least: 5
                }),
                okf("ok")
            ]
        );
    }

    #[test]
    fn gap_mode_ends_frames_on_request() {
        let mut f = LineFramer::with_delimiter(8, Delimiter::None);
        let mut out: Out = Vec::new();
        f.feed(b"T=21", |r| out.push(r.map(<[u8]>::to_vec)));
        f.feed(b".5\n", |r| out.push(r.map(<[u8]>::to_vec)));
        assert!(out.is_empty());
        f.end_frame(|r| out.push(r.map(<[u8]>::to_vec)));
        assert_eq!(out, vec![okf("T=21.5\n")]);
        f.end_frame(|r| out.push(r.map(<[u8]>::to_vec)));
        assert_eq!(out.len(), 1, "nothing pending, no frame");
        // Too long: reported once, the rest of it dropped until the frame ends.
        out.clear();
        f.feed(b"0123456789", |r| out.push(r.map(<[u8]>::to_vec)));
        f.feed(b"more", |r| out.push(r.map(<[u8]>::to_vec)));
        f.end_frame(|r| out.push(r.map(<[u8]>::to_vec)));
        f.feed(b"ok", |r| out.push(r.map(<[u8]>::to_vec)));
        f.end_frame(|r| out.push(r.map(<[u8]>::to_vec)));
        assert_eq!(
            out,
            vec![
                Err(FrameError::Oversize {
                    limit: 8,
                    seen_at_least: 10
                }),
                okf("ok")
            ]
        );
        assert_eq!(
            LineFramer::with_delimiter(8, Delimiter::Bytes(Vec::new())).delimiter(),
            &Delimiter::None
        );
    }

    #[test]
    fn reset_forgets_a_partial_delimiter_match() {
        let mut f = LineFramer::with_delimiter(8, bytes("##"));
        assert!(feed_all(&mut f, &[b"abc#"]).is_empty());
        assert_eq!(f.reset(), Some(4));
        // Without the reset the leading '#' would have completed "abc".
        assert_eq!(feed_all(&mut f, &[b"#x##"]), vec![okf("#x")]);
    }

    #[test]
    fn kmp_table_is_right() {
        assert_eq!(kmp_table(b"aabaaa"), vec![0, 1, 0, 1, 2, 2]);
        assert_eq!(kmp_table(b"abab"), vec![0, 0, 1, 2]);
    }

    /// Leftmost non-overlapping split on `d`; a tail longer than the limit is an error.
    fn reference(stream: &[u8], d: &[u8], max_len: usize) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i + d.len() <= stream.len() {
            if &stream[i..i + d.len()] == d {
                let frame = &stream[start..i];
                if frame.len() > max_len {
                    out.push(Err(max_len));
                } else if !frame.is_empty() {
                    out.push(Ok(frame.to_vec()));
                }
                i += d.len();
                start = i;
            } else {
                i += 1;
            }
        }
        // The tail counts as oversize once it cannot fit even if its end is a delimiter prefix.
        let tail = &stream[start..];
        let prefix = (0..=d.len().min(tail.len()))
            .rev()
            .find(|&n| n < d.len() && tail.ends_with(&d[..n]))
            .unwrap_or(0);
        if tail.len() - prefix > max_len {
            out.push(Err(max_len));
        }
        out
    }

    proptest! {
        #[test]
        fn custom_delimiters_frame_like_a_split(
            stream in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..200),
            delim in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 1..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            max_len in 0usize..12,
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut s = 0;
            for c in cuts {
                chunks.push(&stream[s..c]);
                s = c;
            }
            chunks.push(&stream[s..]);
            let mut f = LineFramer::with_delimiter(max_len, Delimiter::Bytes(delim.clone()));
            let got: Vec<Result<Vec<u8>, usize>> = feed_all(&mut f, &chunks)
                .into_iter()
                .map(|r| r.map_err(|FrameError::Oversize { limit, .. }| limit))
                .collect();
            prop_assert!(f.pending() < max_len + delim.len());
            prop_assert_eq!(got, reference(&stream, &delim, max_len));
        }
    }
}
