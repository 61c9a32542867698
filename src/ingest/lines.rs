//! Splits a byte stream into chunks of whole lines for parallel parsing, with line numbers,
//! and streams lines longer than the limit straight to a caller (the quarantine) so that one
//! enormous line cannot exhaust memory.

use std::io::Read;

/// A run of complete lines.
pub(crate) struct LineChunk {
    pub data: Vec<u8>,
    /// 1-based number of the chunk's first line in its source.
    pub first_line: u64,
    /// Lines in the chunk.
    pub lines: u64,
}

/// What a chunker (of lines, or of CSV records) found next.
pub(crate) enum Piece<C = LineChunk> {
    Lines(C),
    /// A line longer than the limit; its bytes were handed to the oversize callback as they
    /// were read.
    Oversize,
}

pub(crate) struct LineChunker<R> {
    src: R,
    buf: Vec<u8>,
    next_line: u64,
    eof: bool,
    chunk_bytes: usize,
    max_line: usize,
    /// Bytes consumed from the source so far (for progress).
    pub consumed: u64,
}

impl<R: Read> LineChunker<R> {
    pub fn new(src: R, chunk_bytes: usize, max_line: usize) -> Self {
        Self {
            src,
            buf: Vec::with_capacity(chunk_bytes + 64 * 1024),
            next_line: 1,
            eof: false,
            chunk_bytes,
            max_line,
            consumed: 0,
        }
    }

    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        super::lines::fill_buffer(
            &mut self.src,
            &mut self.buf,
            &mut self.eof,
            &mut self.consumed,
            want,
        )
    }

    /// The next chunk of lines, or an oversize line whose bytes went to `oversize`
    /// (called with the line number and successive pieces). `None` at the end of input.
    pub fn next_piece(
        &mut self,
        oversize: &mut dyn FnMut(u64, &[u8]) -> crate::error::Result<()>,
    ) -> crate::error::Result<Option<Piece>> {
        let io = |e: std::io::Error| crate::error::Error::input(format!("read failed: {e}"));
        loop {
            self.fill(self.chunk_bytes).map_err(io)?;
            if self.buf.is_empty() {
                return Ok(None);
            }
            if let Some(last_nl) = memchr::memrchr(b'\n', &self.buf) {
                let rest = self.buf.split_off(last_nl + 1);
                let data = std::mem::replace(&mut self.buf, rest);
                let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
                let first_line = self.next_line;
                self.next_line += lines;
                return Ok(Some(Piece::Lines(LineChunk {
                    data,
                    first_line,
                    lines,
                })));
            }
            if self.eof {
                // Last line without a trailing newline.
                let data = std::mem::take(&mut self.buf);
                let first_line = self.next_line;
                self.next_line += 1;
                return Ok(Some(Piece::Lines(LineChunk {
                    data,
                    first_line,
                    lines: 1,
                })));
            }
            if self.buf.len() > self.max_line {
                // No newline within the limit: stream the line out instead of buffering it.
                stream_line_out(
                    &mut self.src,
                    &mut self.buf,
                    &mut self.eof,
                    &mut self.consumed,
                    self.chunk_bytes,
                    &mut |piece| oversize(self.next_line, piece),
                )?;
                self.next_line += 1;
                return Ok(Some(Piece::Oversize));
            }
            // A long line still within the limit: read more.
            let want = self.buf.len() + self.chunk_bytes;
            self.fill(want).map_err(io)?;
        }
    }
}

/// Iterates the lines of a chunk as (line number, bytes without the `\n`; a `\r` before it is
/// kept, so a rejected line is quarantined byte for byte).
pub(crate) fn lines(chunk: &LineChunk) -> impl Iterator<Item = (u64, &[u8])> {
    let data = &chunk.data[..];
    let mut start = 0usize;
    let mut line = chunk.first_line;
    std::iter::from_fn(move || {
        if start >= data.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let l = &data[start..end];
        let n = line;
        line += 1;
        start = end + 1;
        Some((n, l))
    })
}

/// Streams the line at the start of `buf` (longer than the limit) to `oversize` in pieces,
/// reading on in steps of `chunk_bytes` until its newline (dropped) or the end of input; what
/// follows the newline stays in `buf`. Memory stays at one chunk whatever the line's length.
pub(crate) fn stream_line_out(
    src: &mut impl Read,
    buf: &mut Vec<u8>,
    eof: &mut bool,
    consumed: &mut u64,
    chunk_bytes: usize,
    oversize: &mut dyn FnMut(&[u8]) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    loop {
        if let Some(i) = memchr::memchr(b'\n', buf) {
            oversize(&buf[..i])?;
            buf.drain(..=i);
            return Ok(());
        }
        oversize(buf)?;
        buf.clear();
        if *eof {
            return Ok(());
        }
        fill_buffer(src, buf, eof, consumed, chunk_bytes)
            .map_err(|e| crate::error::Error::input(format!("read failed: {e}")))?;
        if buf.is_empty() {
            return Ok(());
        }
    }
}

/// Reads from `src` until `buf` holds at least `want` bytes or the input ends (`eof` set),
/// counting the bytes read in `consumed`; an interrupted read is retried.
pub(crate) fn fill_buffer(
    src: &mut impl Read,
    buf: &mut Vec<u8>,
    eof: &mut bool,
    consumed: &mut u64,
    want: usize,
) -> std::io::Result<()> {
    while !*eof && buf.len() < want {
        let len = buf.len();
        let grow = (want - len).max(64 * 1024);
        buf.resize(len + grow, 0);
        match src.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                *eof = true;
            }
            Ok(n) => {
                buf.truncate(len + n);
                *consumed += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (line number, bytes) of each line kept, and (line number, length) of each oversize one.
    type Collected = (Vec<(u64, Vec<u8>)>, Vec<(u64, u64)>);

    fn collect(input: &[u8], chunk: usize, max: usize) -> Collected {
        let mut ch = LineChunker::new(input, chunk, max);
        let mut out = Vec::new();
        let mut over: Vec<(u64, u64)> = Vec::new();
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut sink = |line: u64, piece: &[u8]| {
            match pieces.last_mut() {
                Some((l, n)) if *l == line => *n += piece.len() as u64,
                _ => pieces.push((line, piece.len() as u64)),
            }
            Ok(())
        };
        while let Some(p) = ch.next_piece(&mut sink).unwrap() {
            match p {
                Piece::Lines(c) => out.extend(lines(&c).map(|(n, l)| (n, l.to_vec()))),
                Piece::Oversize => {}
            }
        }
        over.extend(pieces);
        (out, over)
    }

    #[test]
    fn numbers_lines_across_chunks_and_streams_oversize() {
        let long = vec![b'x'; 200_000];
        let mut input = b"a\r\nbb\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nccc");
        let (lines, over) = collect(&input, 4, 100);
        assert_eq!(
            lines,
            vec![
                (1, b"a\r".to_vec()),
                (2, b"bb".to_vec()),
                (4, b"ccc".to_vec())
            ]
        );
        assert_eq!(over, vec![(3, 200_000)]);
    }
}
