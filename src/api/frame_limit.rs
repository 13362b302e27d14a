//! Reads WebSocket frame headers as a `/ws` client's bytes arrive and fails the stream as soon as
//! one declares a payload over the limit, before any of it is buffered (actix-ws reads all that is
//! available before it checks sizes). Payload bytes pass through unparsed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

enum State {
    /// Collecting a frame header: 2 bytes, then 0/2/8 bytes of length, then 0/4 of mask.
    Header { buf: [u8; 14], have: usize },
    /// Inside a frame's payload: bytes still to pass.
    Payload { left: u64 },
}

/// Wraps the request body of a `/ws` connection.
pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    state: State,
    /// Set when a frame was over the limit (the handler counts it and closes with 1009).
    tripped: Arc<AtomicBool>,
    done: bool,
}

impl<S> FrameLimit<S> {
    pub fn new(inner: S, max: usize) -> (Self, Arc<AtomicBool>) {
        let tripped = Arc::new(AtomicBool::new(false));
        let me = FrameLimit {
            inner,
            max: max as u64,
            state: State::Header {
                buf: [0; 14],
                have: 0,
            },
            tripped: tripped.clone(),
            done: false,
        };
        (me, tripped)
    }

    /// Advances over `chunk`; `Err(declared length)` when a header is over the limit.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), u64> {
        let mut i = 0;
        while i < chunk.len() {
            match &mut self.state {
                State::Payload { left } => {
                    let take = (*left).min((chunk.len() - i) as u64);
                    *left -= take;
                    i += take as usize;
                    if *left == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    buf[*have] = chunk[i];
                    *have += 1;
                    i += 1;
                    if *have < 2 {
                        continue;
                    }
                    let (masked, len7) = (buf[1] & 0x80 != 0, buf[1] & 0x7f);
                    let ext = match len7 {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let need = 2 + ext + if masked { 4 } else { 0 };
                    if *have < 2 + ext {
                        continue;
                    }
                    let len = match ext {
                        0 => u64::from(len7),
                        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
                        _ => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&buf[2..10]);
                            u64::from_be_bytes(b)
                        }
                    };
                    if len > self.max {
                        return Err(len);
                    }
                    if *have == need {
                        self.state = if len == 0 {
                            State::Header {
                                buf: [0; 14],
                                have: 0,
                            }
                        } else {
                            State::Payload { left: len }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

impl<S> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(_) => {
                    this.done = true;
                    this.tripped.store(true, Relaxed);
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FrameLimit;

    fn frame(len: u64, masked: bool) -> Vec<u8> {
        let mut f = vec![0x81];
        let m = if masked { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= u64::from(u16::MAX) {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(b'x', len.min(10_000) as usize));
        f
    }

    fn limiter() -> FrameLimit<futures_util::stream::Empty<()>> {
        FrameLimit::new(futures_util::stream::empty(), 4096).0
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut bytes = Vec::new();
        for len in [0, 5, 125, 126, 4000, 4096] {
            bytes.extend(frame(len, true));
            bytes.extend(frame(len, false));
        }
        for step in [1, 3, 7, 1000, bytes.len()] {
            let mut l = limiter();
            for c in bytes.chunks(step) {
                assert_eq!(l.scan(c), Ok(()), "chunk size {step}");
            }
            assert!(matches!(l.state, super::State::Header { have: 0, .. }));
        }
    }

    #[test]
    fn a_large_declared_length_fails_on_its_header() {
        let mut l = limiter();
        assert_eq!(l.scan(&frame(10, true)), Ok(()));
        // 1 TiB declared: fails on the 10th byte of the header, before any payload
        let huge = frame(1 << 40, true);
        assert_eq!(l.scan(&huge[..9]), Ok(()));
        assert_eq!(l.scan(&huge[9..10]), Err(1 << 40));
        let mut l = limiter();
        assert_eq!(l.scan(&frame(4097, false)[..4]), Err(4097));
    }
}
