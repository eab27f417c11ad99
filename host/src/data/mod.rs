//! Kaggle "Facial Keypoints Detection" data: `.csv`, `.csv.gz` and the `.zip`
//! Kaggle ships (its first `.csv` entry).
//!
//! Format: a header line naming the 30 keypoint columns (`left_eye_center_x`,
//! ..., `mouth_center_bottom_lip_y`) and `Image`, in any order (other columns
//! are ignored); then one row per face. An empty keypoint cell is a missing
//! label (NaN in [`Sample::keypoints`]); `Image` holds 9216 space-separated
//! grey values 0..=255, row-major 96x96.
//!
//! A malformed row (wrong column count, pixel count not 9216, a value out of
//! range, an unparsable number) is a [`DataError`] naming the file, the line
//! (1-based, the header is line 1) and the column; with
//! [`LoadOptions::skip_bad_rows`] such rows are skipped and counted instead.

pub mod augment;
pub(crate) mod image_io;
pub mod synthetic;

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use facemark_core::network::{INPUT_LEN, INPUT_SIDE, KEYPOINT_NAMES, OUTPUTS};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// One face: a 96x96 grey image and 15 (x, y) keypoints in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Row-major grey pixels.
    pub image: Box<[u8; INPUT_LEN]>,
    /// Kaggle order (x then y per keypoint), pixels; NaN = missing label.
    pub keypoints: [f32; OUTPUTS],
}

impl Sample {
    /// 1.0 where the coordinate is labelled, 0.0 where it is missing.
    pub fn mask(&self) -> [f32; OUTPUTS] {
        self.keypoints.map(|v| if v.is_nan() { 0.0 } else { 1.0 })
    }

    /// True when all 30 coordinates are labelled.
    pub fn is_complete(&self) -> bool {
        self.keypoints.iter().all(|v| !v.is_nan())
    }
}

/// Loaded faces plus what the loader skipped.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    /// Where the rows came from (for messages).
    pub source: String,
    /// Rows skipped with [`LoadOptions::skip_bad_rows`].
    pub skipped: usize,
    /// The first few skipped rows' errors (at most [`MAX_SKIP_MESSAGES`]).
    pub skip_messages: Vec<String>,
}

/// How many skipped-row errors a [`Dataset`] keeps.
pub const MAX_SKIP_MESSAGES: usize = 10;

/// Loader options.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Skip malformed rows (and count them) instead of failing.
    pub skip_bad_rows: bool,
}

/// What is wrong with a row or a file.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorKind {
    /// The file could not be opened or read.
    Io(String),
    /// The file is empty (no header line).
    Empty,
    /// The header lacks a required column.
    MissingColumn(String),
    /// The header names a column twice.
    DuplicateColumn(String),
    /// A row has a different number of cells than the header.
    ColumnCount { expected: usize, found: usize },
    /// The image cell does not hold 9216 values.
    PixelCount { found: usize },
    /// A number that does not parse.
    Unparsable(String),
    /// A parsed number outside its range.
    OutOfRange { value: String, range: &'static str },
    /// A zip archive without a `.csv` entry.
    NoCsvInZip,
}

/// A load error: file, line (1-based; 0 for whole-file errors), column.
#[derive(Clone, Debug, PartialEq)]
pub struct DataError {
    pub file: String,
    pub line: usize,
    /// Column name and 1-based column number, when one cell is at fault.
    pub column: Option<(String, usize)>,
    pub kind: ErrorKind,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Io(e) => write!(f, "cannot read: {e}"),
            ErrorKind::Empty => write!(f, "empty file (no header line)"),
            ErrorKind::MissingColumn(c) => write!(f, "the header has no column '{c}'"),
            ErrorKind::DuplicateColumn(c) => write!(f, "the header names column '{c}' twice"),
            ErrorKind::ColumnCount { expected, found } => {
                write!(f, "{found} columns, the header has {expected}")
            }
            ErrorKind::PixelCount { found } => {
                write!(
                    f,
                    "{found} pixel values, expected {INPUT_LEN} ({INPUT_SIDE}x{INPUT_SIDE})"
                )
            }
            ErrorKind::Unparsable(v) => write!(f, "cannot parse '{v}' as a number"),
            ErrorKind::OutOfRange { value, range } => {
                write!(f, "value {value} out of range {range}")
            }
            ErrorKind::NoCsvInZip => write!(f, "the zip archive holds no .csv file"),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some((name, number)) = &self.column {
            write!(f, ": column {number} ({name})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for DataError {}

/// Kaggle's column name for output `i` (`left_eye_center_x`, ...).
pub fn coordinate_name(i: usize) -> String {
    format!(
        "{}_{}",
        KEYPOINT_NAMES[i / 2],
        if i.is_multiple_of(2) { "x" } else { "y" }
    )
}

/// The Kaggle header line (30 keypoint columns, then `Image`).
pub fn header_line() -> String {
    let mut cols: Vec<String> = (0..OUTPUTS).map(coordinate_name).collect();
    cols.push("Image".into());
    cols.join(",")
}

/// Writes samples in Kaggle CSV format (missing keypoints as empty cells).
pub fn write_csv<W: std::io::Write>(mut w: W, samples: &[Sample]) -> std::io::Result<()> {
    writeln!(w, "{}", header_line())?;
    for s in samples {
        for v in &s.keypoints {
            if !v.is_nan() {
                write!(w, "{v}")?;
            }
            write!(w, ",")?;
        }
        let mut first = true;
        for p in s.image.iter() {
            if !first {
                write!(w, " ")?;
            }
            first = false;
            write!(w, "{p}")?;
        }
        writeln!(w)?;
    }
    Ok(())
}

impl Dataset {
    /// The rows `--skip-bad-rows` left out, as lines for the user (`what`
    /// names the file's role); `None` when every row was read.
    pub fn skip_report(&self, what: &str) -> Option<String> {
        if self.skipped == 0 {
            return None;
        }
        let mut s = format!(
            "{what}: skipped {} malformed rows in {}",
            self.skipped, self.source
        );
        for m in &self.skip_messages {
            s += &format!("\n  {m}");
        }
        if self.skipped > self.skip_messages.len() {
            s += &format!(
                "\n  ... and {} more",
                self.skipped - self.skip_messages.len()
            );
        }
        Some(s)
    }

    /// Loads a `.csv`, `.csv.gz` or `.zip` file (detected by content, not name).
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Dataset, DataError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io_err = |e: std::io::Error| DataError {
            file: name.clone(),
            line: 0,
            column: None,
            kind: ErrorKind::Io(e.to_string()),
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
        drop(file);
        let file = File::open(path).map_err(io_err)?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            let reader = BufReader::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)));
            parse_csv(reader, &name, options)
        } else if n == 4 && magic == *b"PK\x03\x04" {
            let mut archive =
                zip::ZipArchive::new(BufReader::new(file)).map_err(|e| DataError {
                    file: name.clone(),
                    line: 0,
                    column: None,
                    kind: ErrorKind::Io(e.to_string()),
                })?;
            let index = (0..archive.len())
                .find(|&i| {
                    archive.name_for_index(i).is_some_and(|n| {
                        n.to_ascii_lowercase().ends_with(".csv") && !n.starts_with("__MACOSX")
                    })
                })
                .ok_or_else(|| DataError {
                    file: name.clone(),
                    line: 0,
                    column: None,
                    kind: ErrorKind::NoCsvInZip,
                })?;
            let entry = archive.by_index(index).map_err(|e| DataError {
                file: name.clone(),
                line: 0,
                column: None,
                kind: ErrorKind::Io(e.to_string()),
            })?;
            let inner = format!("{name}:{}", entry.name());
            parse_csv(BufReader::new(entry), &inner, options)
        } else {
            parse_csv(BufReader::new(file), &name, options)
        }
    }

    /// Parses CSV text (for tests and in-memory data).
    pub fn from_csv_str(
        text: &str,
        name: &str,
        options: LoadOptions,
    ) -> Result<Dataset, DataError> {
        parse_csv(text.as_bytes(), name, options)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Rows with all 30 coordinates labelled.
    pub fn complete_count(&self) -> usize {
        self.samples.iter().filter(|s| s.is_complete()).count()
    }

    /// A seeded random split: the second part holds `round(len * fraction)`
    /// samples (at least one of each when there are two or more samples and
    /// `0 < fraction < 1`). The same seed always gives the same split.
    pub fn split(&self, fraction: f64, seed: u64) -> (Dataset, Dataset) {
        let n = self.samples.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        order.shuffle(&mut rng);
        let mut k = (n as f64 * fraction.clamp(0.0, 1.0)).round() as usize;
        if n >= 2 && fraction > 0.0 && fraction < 1.0 {
            k = k.clamp(1, n - 1);
        }
        let (val_idx, train_idx) = order.split_at(k);
        let mut val_idx = val_idx.to_vec();
        let mut train_idx = train_idx.to_vec();
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let pick = |idx: &[usize], part: &str| Dataset {
            samples: idx.iter().map(|&i| self.samples[i].clone()).collect(),
            source: format!("{} ({part})", self.source),
            skipped: 0,
            skip_messages: Vec::new(),
        };
        (
            pick(&train_idx, "train split"),
            pick(&val_idx, "validation split"),
        )
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Column positions found in the header.
struct Columns {
    count: usize,
    keypoints: [usize; OUTPUTS],
    image: usize,
    names: Vec<String>,
}

/// A cell's text, surrounding spaces trimmed (quotes are the csv reader's).
fn cell(record: &csv::ByteRecord, i: usize) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(record.get(i).unwrap_or_default().trim_ascii())
}

fn parse_header(record: &csv::ByteRecord, line: usize, file: &str) -> Result<Columns, DataError> {
    let names: Vec<String> = (0..record.len())
        .map(|i| cell(record, i).trim_start_matches('\u{feff}').to_string())
        .collect();
    let err = |kind| DataError {
        file: file.to_string(),
        line,
        column: None,
        kind,
    };
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) && !n.is_empty() {
            return Err(err(ErrorKind::DuplicateColumn(n.clone())));
        }
    }
    let find = |want: &str| {
        names
            .iter()
            .position(|n| n == want)
            .ok_or_else(|| err(ErrorKind::MissingColumn(want.into())))
    };
    let mut keypoints = [0usize; OUTPUTS];
    for (i, k) in keypoints.iter_mut().enumerate() {
        *k = find(&coordinate_name(i))?;
    }
    let image = find("Image")?;
    Ok(Columns {
        count: names.len(),
        keypoints,
        image,
        names,
    })
}

fn parse_row(
    record: &csv::ByteRecord,
    line: usize,
    cols: &Columns,
    file: &str,
) -> Result<Sample, DataError> {
    let err = |col: Option<usize>, kind| DataError {
        file: file.to_string(),
        line,
        column: col.map(|c| (cols.names[c].clone(), c + 1)),
        kind,
    };
    if record.len() != cols.count {
        return Err(err(
            None,
            ErrorKind::ColumnCount {
                expected: cols.count,
                found: record.len(),
            },
        ));
    }
    let mut keypoints = [f32::NAN; OUTPUTS];
    for (k, &c) in keypoints.iter_mut().zip(&cols.keypoints) {
        let text = cell(record, c);
        if text.is_empty() {
            continue;
        }
        let v: f32 = text
            .parse()
            .map_err(|_| err(Some(c), ErrorKind::Unparsable(text.to_string())))?;
        if !v.is_finite() || !(0.0..=INPUT_SIDE as f32).contains(&v) {
            return Err(err(
                Some(c),
                ErrorKind::OutOfRange {
                    value: text.to_string(),
                    range: "0..=96",
                },
            ));
        }
        *k = v;
    }
    let text = cell(record, cols.image);
    let mut image = Box::new([0u8; INPUT_LEN]);
    let mut count = 0usize;
    for tok in text.split_ascii_whitespace() {
        if count < INPUT_LEN {
            let v: i64 = tok
                .parse()
                .map_err(|_| err(Some(cols.image), ErrorKind::Unparsable(tok.to_string())))?;
            if !(0..=255).contains(&v) {
                return Err(err(
                    Some(cols.image),
                    ErrorKind::OutOfRange {
                        value: tok.to_string(),
                        range: "0..=255",
                    },
                ));
            }
            image[count] = v as u8;
        }
        count += 1;
    }
    if count != INPUT_LEN {
        return Err(err(
            Some(cols.image),
            ErrorKind::PixelCount { found: count },
        ));
    }
    Ok(Sample { image, keypoints })
}

/// A line of spaces (the csv reader skips only empty ones).
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|f| f.trim_ascii().is_empty()) && record.len() <= 1
}

/// Reads Kaggle CSV with the `csv` crate (quoting, CRLF, blank lines); rows
/// are checked here, each error naming its file, line and column.
fn parse_csv<R: Read>(reader: R, file: &str, options: LoadOptions) -> Result<Dataset, DataError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    let mut next = |record: &mut csv::ByteRecord| -> Result<Option<usize>, DataError> {
        loop {
            let more = csv.read_byte_record(record).map_err(|e| DataError {
                file: file.to_string(),
                line: e.position().map_or(0, |p| p.line() as usize),
                column: None,
                kind: ErrorKind::Io(e.to_string()),
            })?;
            if !more {
                return Ok(None);
            }
            if !is_blank(record) {
                return Ok(Some(record.position().map_or(0, |p| p.line() as usize)));
            }
        }
    };
    // Header: the first non-blank line.
    let Some(header_line) = next(&mut record)? else {
        return Err(DataError {
            file: file.to_string(),
            line: 0,
            column: None,
            kind: ErrorKind::Empty,
        });
    };
    let cols = parse_header(&record, header_line, file)?;
    let mut ds = Dataset {
        source: file.to_string(),
        ..Default::default()
    };
    while let Some(line) = next(&mut record)? {
        match parse_row(&record, line, &cols, file) {
            Ok(s) => ds.samples.push(s),
            Err(e) if options.skip_bad_rows => {
                ds.skipped += 1;
                if ds.skip_messages.len() < MAX_SKIP_MESSAGES {
                    ds.skip_messages.push(e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ds)
}

/// Loads a file that must hold at least one usable row; `what` names its
/// role in the error. Skipped rows are in the dataset ([`Dataset::skip_report`]).
pub fn load_checked(path: &Path, options: LoadOptions, what: &str) -> anyhow::Result<Dataset> {
    let ds = Dataset::load(path, options)?;
    anyhow::ensure!(
        !ds.is_empty(),
        "{what}: {} holds no usable rows",
        path.display()
    );
    Ok(ds)
}

/// A path as a display string (for configs).
pub fn path_string(p: &Path) -> String {
    p.display().to_string()
}

/// Resolves a path relative to the current directory (for configs).
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
