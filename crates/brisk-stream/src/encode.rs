//! Row streams to byte streams: a JSON array (optionally inside an envelope), NDJSON and CSV,
//! in chunks of bounded size, where a failure mid-stream never looks like a clean end.

use std::{
    fmt, mem,
    pin::Pin,
    task::{Context, Poll},
};

use brisk_metrics::Recorder;
use bytes::Bytes;
use futures_core::{Stream, TryStream};
use serde::Serialize;

use crate::{
    error::{BoxError, Error, Result},
    fields::Fields,
    metrics::EncodeMetrics,
};

/// The default chunk size: big enough that a chunk is one write of many rows, small enough
/// that the first rows leave early.
const DEFAULT_CHUNK_SIZE: usize = 32 * 1024;
/// Scheduler turns an encoder waits, after the last bytes before a failure, before it yields
/// the failure (see [`Encoder`]).
const LINGER: u8 = 16;
/// The largest chunk size accepted.
const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// Turns streams of rows into streams of encoded bytes.
///
/// Rows are serialized as they arrive into a buffer that is handed on as one chunk when it
/// reaches the [chunk size](EncoderBuilder::chunk_size) (32 KiB by default) or when the row
/// stream has nothing ready, so a fast source gives few large chunks and a slow one does not
/// hold rows back. Memory per stream is one chunk plus one row, however many rows flow.
///
/// **A failure never looks like a clean end.** When the row stream yields an error, or a row
/// cannot be serialized, the rows before it are sent and then the stream yields the error
/// ([`Error::Source`] or [`Error::Encode`]): an HTTP server (hyper, axum) then aborts the
/// response, so the client sees a transfer error, never a well-formed but truncated document.
/// A JSON array is left without its `]` and a CSV body ends at the last complete line; NDJSON
/// also writes a last line, `{"error":"row stream failed","rows":N}` (or `"a row could not be
/// encoded"`), for clients that read line by line, and then aborts. Between the last bytes and
/// the error the stream is `Pending` for a few scheduler turns (it wakes itself), so that a
/// server writes out the bytes it was handed before it drops the connection; a client that
/// reads too slowly to take them in that time may miss the last of them, but never sees a
/// clean end.
///
/// ```
/// use brisk_stream::Encoder;
/// use futures_util::{StreamExt, stream};
///
/// #[derive(serde::Serialize)]
/// struct Order { id: i64, total_cents: i64 }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let rows = stream::iter([Order { id: 1, total_cents: 1250 }, Order { id: 2, total_cents: 99 }])
///     .map(Ok::<_, std::io::Error>);
/// let body: Vec<_> = Encoder::default().ndjson(rows).collect().await;
/// let text: Vec<u8> = body.into_iter().flat_map(|chunk| chunk.unwrap()).collect();
/// assert_eq!(text, b"{\"id\":1,\"total_cents\":1250}\n{\"id\":2,\"total_cents\":99}\n");
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    chunk_size: usize,
    #[cfg_attr(not(feature = "csv"), allow(dead_code))]
    neutralise_csv: bool,
    metrics: EncodeMetrics,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            neutralise_csv: true,
            metrics: EncodeMetrics::noop(),
        }
    }
}

impl Encoder {
    /// Configures an encoder.
    pub fn builder() -> EncoderBuilder {
        EncoderBuilder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            neutralise_csv: true,
            metrics: EncodeMetrics::noop(),
        }
    }

    fn encode<S>(&self, rows: S, format: Format<S>) -> Encode<S> {
        Encode {
            rows,
            format,
            fields: None,
            buf: Vec::with_capacity(self.chunk_size),
            pending: Bytes::new(),
            failure: None,
            state: State::Start,
            rows_written: 0,
            row_hint: 0,
            linger: LINGER,
            chunk_size: self.chunk_size,
            metrics: self.metrics.clone(),
        }
    }

    /// `rows` as one JSON array, `[row,row,...]` (content type `application/json`).
    pub fn json_array<S>(&self, rows: S) -> Encode<S> {
        self.encode(rows, Format::Array)
    }

    /// `rows` as a JSON array inside an object, `{"<field>":[row,...], <trailer>}`. `trailer`
    /// runs after the last row with the row stream (so it can read, say, the next page's cursor
    /// from it) and returns a struct or map whose fields follow the array; return `()` for
    /// none. A trailer that is not an object aborts the body like a row that cannot be encoded.
    pub fn json_envelope<S, F, T>(&self, rows: S, field: &'static str, trailer: F) -> Encode<S>
    where
        F: FnOnce(&S) -> T + Send + 'static,
        T: Serialize,
    {
        self.encode(
            rows,
            Format::Envelope {
                field,
                trailer: Some(Box::new(move |rows: &S| {
                    serde_json::to_vec(&trailer(rows)).map_err(BoxError::from)
                })),
            },
        )
    }

    /// `rows` as newline-delimited JSON, one row per line (content type `application/x-ndjson`).
    pub fn ndjson<S>(&self, rows: S) -> Encode<S> {
        self.encode(rows, Format::Ndjson)
    }

    /// `rows` as CSV (RFC 4180, content type `text/csv`): a header line from the first row's
    /// field names, then one line per row. Rows must be flat (structs of numbers, strings,
    /// booleans and options); a nested value aborts the body as [`Error::Encode`]. No rows
    /// means an empty body, without a header.
    ///
    /// **Formulas are neutralised** (unless the encoder was built with
    /// [`no_csv_neutralising`](EncoderBuilder::no_csv_neutralising)): a text cell that starts
    /// with `=`, `+`, `-`, `@`, a NUL, a tab or a carriage return (OWASP's "CSV injection"
    /// list), which a spreadsheet would run as a formula, is written with a `'` in front
    /// (`=1+1` becomes `'=1+1`, and the cell is quoted where RFC 4180 requires it); so is one
    /// with `=`, `+`, `-` or `@` after leading blanks (spaces, tabs, line breaks, a no-break
    /// space or other Unicode whitespace, NULs: `  =1+1`), which a spreadsheet that trims
    /// cells runs. Numbers are left as they are: values of numeric types (`-5`, `-1.5`), and
    /// text that is a plain decimal number and nothing else (`-5.20`, `+44`, `-1e5`, as a
    /// `Decimal` writes itself), after spaces too (` -5.20`), which a spreadsheet reads as a
    /// number and never runs; `-1+1`, `-inf` or `-0x10` as text are neutralised, and so is
    /// anything whose leading blanks hold a NUL, tab or carriage return (`\t-5`).
    /// Field names come from code and are written as they are.
    #[cfg(feature = "csv")]
    #[cfg_attr(docsrs, doc(cfg(feature = "csv")))]
    pub fn csv<S>(&self, rows: S) -> Encode<S> {
        self.encode(
            rows,
            Format::Csv {
                writer: Box::new(
                    csv::WriterBuilder::new().from_writer(CsvSink(std::cell::Cell::default())),
                ),
                neutralise: self.neutralise_csv,
            },
        )
    }
}

/// Configures an [`Encoder`]; from [`Encoder::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EncoderBuilder {
    chunk_size: usize,
    neutralise_csv: bool,
    metrics: EncodeMetrics,
}

impl EncoderBuilder {
    /// The size a chunk is handed on at (a chunk is at most this size, but for the end of one
    /// row larger than it). Default 32 KiB; from 1 byte to 16 MiB.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Writes CSV text cells exactly as they are, without the `'` in front of those a
    /// spreadsheet would run as formulas (see [`Encoder::csv`]): for CSV read by programs
    /// only, never opened in a spreadsheet. Neutralising is on by default.
    #[cfg(feature = "csv")]
    #[cfg_attr(docsrs, doc(cfg(feature = "csv")))]
    pub fn no_csv_neutralising(mut self) -> Self {
        self.neutralise_csv = false;
        self
    }

    /// Counts rows and bytes streamed (`brisk_stream_rows_total`, `brisk_stream_bytes_total`)
    /// and bodies aborted by a failure (`brisk_stream_aborted_total`), labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = EncodeMetrics::new(recorder, name);
        self
    }

    /// The encoder, or [`Error::Config`] for a chunk size out of range.
    pub fn build(self) -> Result<Encoder> {
        if !(1..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(Error::config(
                "chunk_size",
                self.chunk_size,
                "must be from 1 byte to 16 MiB",
            ));
        }
        Ok(Encoder {
            chunk_size: self.chunk_size,
            neutralise_csv: self.neutralise_csv,
            metrics: self.metrics,
        })
    }
}

type Trailer<S> = Box<dyn FnOnce(&S) -> Result<Vec<u8>, BoxError> + Send>;

enum Format<S> {
    Array,
    Envelope {
        field: &'static str,
        trailer: Option<Trailer<S>>,
    },
    Ndjson,
    #[cfg(feature = "csv")]
    Csv {
        writer: Box<csv::Writer<CsvSink>>,
        /// Whether text cells that would start a formula get a `'` in front.
        neutralise: bool,
    },
}

/// Where the CSV writer puts each row, for the encoder to move into its buffer. (The writer
/// lends its sink only by shared reference, hence the cell.)
#[cfg(feature = "csv")]
struct CsvSink(std::cell::Cell<Vec<u8>>);

#[cfg(feature = "csv")]
impl std::io::Write for CsvSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.get_mut().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<S> Format<S> {
    fn name(&self) -> &'static str {
        match self {
            Self::Array => "JSON array",
            Self::Envelope { .. } => "JSON envelope",
            Self::Ndjson => "NDJSON",
            #[cfg(feature = "csv")]
            Self::Csv { .. } => "CSV",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing written yet.
    Start,
    /// At least the opening written; rows flowing.
    Rows,
    /// The last bytes are in the buffer; the stream ends once they are out.
    Done,
}

pin_project_lite::pin_project! {
    /// A stream of encoded chunks from a stream of rows; from an [`Encoder`].
    ///
    /// With feature `axum` it is also a response (`IntoResponse`) with its content type.
    #[must_use = "streams do nothing unless polled"]
    pub struct Encode<S> {
        #[pin]
        rows: S,
        format: Format<S>,
        fields: Option<Fields>,
        buf: Vec<u8>,
        // Full chunks waiting to be handed on.
        pending: Bytes,
        // The error the stream ends with, once what came before it is out.
        failure: Option<Error>,
        state: State,
        rows_written: u64,
        // About the size of the rows lately (the largest, decaying): a chunk leaves before a
        // row would overflow it, so the buffer is never regrown nor copied.
        row_hint: usize,
        // Scheduler turns left to wait before yielding a failure.
        linger: u8,
        chunk_size: usize,
        metrics: EncodeMetrics,
    }
}

impl<S> fmt::Debug for Encode<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encode")
            .field("format", &self.format.name())
            .field("fields", &self.fields)
            .field("rows_written", &self.rows_written)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl<S> Encode<S> {
    /// Writes only the chosen top-level fields of each row (see [`Fields`]).
    pub fn select(mut self, fields: Fields) -> Self {
        self.fields = Some(fields);
        self
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        match self.format {
            Format::Array | Format::Envelope { .. } => "application/json",
            Format::Ndjson => "application/x-ndjson",
            #[cfg(feature = "csv")]
            Format::Csv { .. } => "text/csv; charset=utf-8",
        }
    }

    /// Rows encoded so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }
}

/// Serializes `row` (or its chosen fields) as JSON onto `buf`.
fn json<T: Serialize>(buf: &mut Vec<u8>, fields: Option<&Fields>, row: &T) -> Result<(), BoxError> {
    match fields {
        Some(fields) => serde_json::to_writer(buf, &fields.select(row)),
        None => serde_json::to_writer(buf, row),
    }
    .map_err(BoxError::from)
}

impl<S, T> Encode<S>
where
    S: TryStream<Ok = T>,
    S::Error: Into<BoxError>,
    T: Serialize,
{
    /// Writes one row; on failure the buffer is as it was before.
    fn write_row(self: Pin<&mut Self>, row: &T) -> Result<(), BoxError> {
        let this = self.project();
        let start = this.buf.len();
        let first = *this.rows_written == 0;
        let written = match this.format {
            Format::Array | Format::Envelope { .. } => {
                if !first {
                    this.buf.push(b',');
                }
                json(this.buf, this.fields.as_ref(), row)
            }
            Format::Ndjson => {
                json(this.buf, this.fields.as_ref(), row).map(|()| this.buf.push(b'\n'))
            }
            #[cfg(feature = "csv")]
            Format::Csv { writer, neutralise } => {
                use crate::neutralise::Neutralised;
                let serialized = match (this.fields, *neutralise) {
                    (Some(fields), true) => writer.serialize(Neutralised(&fields.select(row))),
                    (Some(fields), false) => writer.serialize(fields.select(row)),
                    (None, true) => writer.serialize(Neutralised(row)),
                    (None, false) => writer.serialize(row),
                };
                serialized
                    .and_then(|()| writer.flush().map_err(csv::Error::from))
                    .map(|()| {
                        let mut row = writer.get_ref().0.take();
                        this.buf.append(&mut row);
                        writer.get_ref().0.set(row);
                    })
                    .map_err(BoxError::from)
            }
        };
        match written {
            Ok(()) => {
                let size = this.buf.len() - start;
                *this.row_hint = size.max(*this.row_hint - *this.row_hint / 8);
                *this.rows_written += 1;
                this.metrics.rows.increment();
                Ok(())
            }
            Err(error) => {
                this.buf.truncate(start);
                Err(error)
            }
        }
    }

    /// The opening of the document, before any row (or at the end, for no rows).
    fn open(self: Pin<&mut Self>) {
        let this = self.project();
        match this.format {
            Format::Array => this.buf.push(b'['),
            Format::Envelope { field, .. } => {
                this.buf.extend_from_slice(b"{");
                // A field name from code, not from a client; serialized to escape it anyway.
                let _ = serde_json::to_writer(&mut *this.buf, field);
                this.buf.extend_from_slice(b":[");
            }
            Format::Ndjson => {}
            #[cfg(feature = "csv")]
            Format::Csv { .. } => {}
        }
        *this.state = State::Rows;
    }

    /// The end of the document after the last row.
    fn close(self: Pin<&mut Self>) -> Result<(), BoxError> {
        let this = self.project();
        *this.state = State::Done;
        match this.format {
            Format::Array => this.buf.push(b']'),
            Format::Envelope { trailer, .. } => {
                this.buf.push(b']');
                if let Some(trailer) = trailer.take() {
                    let object = trailer(this.rows.as_ref().get_ref())?;
                    match object.as_slice() {
                        b"null" | b"{}" => {}
                        [b'{', inner @ .., b'}'] => {
                            this.buf.push(b',');
                            this.buf.extend_from_slice(inner);
                        }
                        _ => return Err("the envelope's trailer is not a JSON object".into()),
                    }
                }
                this.buf.push(b'}');
            }
            Format::Ndjson => {}
            #[cfg(feature = "csv")]
            Format::Csv { .. } => {}
        }
        Ok(())
    }

    /// Ends the body with `error` after what is buffered.
    fn fail(self: Pin<&mut Self>, error: Error) {
        let this = self.project();
        if let Format::Ndjson = this.format {
            let what = match error {
                Error::Encode { .. } => "a row could not be encoded",
                _ => "row stream failed",
            };
            let _ = serde_json::to_writer(
                &mut *this.buf,
                &serde_json::json!({ "error": what, "rows": *this.rows_written }),
            );
            this.buf.push(b'\n');
        }
        this.metrics.aborted.increment();
        *this.failure = Some(error);
        *this.state = State::Done;
    }
}

impl<S, T> Stream for Encode<S>
where
    S: TryStream<Ok = T>,
    S::Error: Into<BoxError>,
    T: Serialize,
{
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let this = self.as_mut().project();
            if !this.pending.is_empty() {
                let size = (*this.chunk_size).min(this.pending.len());
                let chunk = this.pending.split_to(size);
                this.metrics.bytes.add(chunk.len() as u64);
                return Poll::Ready(Some(Ok(chunk)));
            }
            if this.buf.len() >= *this.chunk_size {
                // Whole chunks go out; the tail (less than a chunk) stays to be filled.
                let mut all =
                    Bytes::from(mem::replace(this.buf, Vec::with_capacity(*this.chunk_size)));
                let whole = all.len() / *this.chunk_size * *this.chunk_size;
                *this.pending = all.split_to(whole);
                this.buf.extend_from_slice(&all);
                continue;
            }
            if !this.buf.is_empty() && this.buf.len() + *this.row_hint > *this.chunk_size {
                // The next row would likely not fit: the chunk leaves as it is.
                *this.pending =
                    Bytes::from(mem::replace(this.buf, Vec::with_capacity(*this.chunk_size)));
                continue;
            }
            match *this.state {
                State::Start => {
                    self.as_mut().open();
                    continue;
                }
                State::Done => {
                    if !this.buf.is_empty() {
                        *this.pending = Bytes::from(mem::take(this.buf));
                        continue;
                    }
                    if this.failure.is_some() && *this.linger > 0 {
                        // Before the error, let the server write out what it was handed: hyper
                        // drops its unsent buffer when a body fails, and flushes it when the
                        // body has nothing ready. A few scheduler turns, no timer.
                        *this.linger -= 1;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Ready(this.failure.take().map(Err));
                }
                State::Rows => {}
            }
            let polled = this.rows.try_poll_next(cx);
            let next = match polled {
                Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    // Nothing more is ready: what is buffered leaves now rather than waiting.
                    *this.pending =
                        Bytes::from(mem::replace(this.buf, Vec::with_capacity(*this.chunk_size)));
                    continue;
                }
                Poll::Ready(next) => next,
            };
            let rows = *this.rows_written;
            match next {
                Some(Ok(row)) => {
                    if let Err(source) = self.as_mut().write_row(&row) {
                        self.as_mut().fail(Error::Encode { source });
                    }
                }
                Some(Err(source)) => self.as_mut().fail(Error::Source {
                    rows,
                    source: source.into(),
                }),
                None => {
                    if let Err(source) = self.as_mut().close() {
                        self.as_mut().fail(Error::Encode { source });
                    }
                }
            }
        }
    }
}
