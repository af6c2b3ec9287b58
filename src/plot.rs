//! `riskflow plot`: a PNG chart of a table's `feature_stats` — the daily mean of `risk_score`
//! and of each feature, one line per feature *definition* (so `ma50` as `sma(50)` and `ma50`
//! as `ema(50)` are told apart), with each version's start marked — so a person sees what each
//! version changed.
//!
//! Rendering is plain Rust: lines and a built-in 5×7 pixel font on an RGB canvas, encoded by
//! the `png` crate. No fonts, no external program.

use crate::plan::FeatureSetVersion;
use crate::record::Date;
use crate::sink::StoreUrl;
use crate::status;
use indexmap::IndexMap;
use std::path::Path;

const WIDTH: usize = 1200;
const HEIGHT: usize = 620;
/// The plot area inside the canvas: left, top, right, bottom.
const AREA: (usize, usize, usize, usize) = (90, 60, WIDTH - 30, HEIGHT - 70);
/// Text is the 5×7 font drawn at this many pixels per dot.
const SCALE: usize = 2;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const BOUNDARY: Rgb = [150, 150, 150];
/// Series colours, in order: risk_score first, then each feature definition.
const PALETTE: [Rgb; 7] = [
    [170, 170, 170],
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
];

/// What to draw.
#[derive(Clone, Debug, Default)]
pub struct PlotOptions {
    pub table: String,
    pub from: Option<Date>,
    pub to: Option<Date>,
    /// Only this version's rows.
    pub version: Option<u32>,
}

/// What was drawn.
#[derive(Clone, Debug)]
pub struct PlotSummary {
    pub days: usize,
    /// Series labels with their number of points.
    pub series: Vec<(String, usize)>,
}

/// Errors of `plot`.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot read {store}: {error}")]
    Store { store: String, error: String },
    #[error("{0}")]
    Empty(String),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        error: std::io::Error,
    },
}

/// Reads the table's stats from the store and writes the chart to `out`.
pub fn plot(store: &StoreUrl, options: &PlotOptions, out: &Path) -> Result<PlotSummary, PlotError> {
    let failed = |error: String| PlotError::Store {
        store: store.to_string(),
        error,
    };
    let mut reader = status::open(store).map_err(|e| failed(e.to_string()))?;
    let versions: Vec<FeatureSetVersion> = reader
        .query(
            "SELECT CAST(version AS TEXT), applies_from, features FROM feature_versions
             WHERE table_name = $1 ORDER BY version",
            &[&options.table],
        )
        .map_err(&failed)?
        .into_iter()
        .filter_map(|r| {
            Some(FeatureSetVersion {
                id: r[0].as_deref()?.parse().ok()?,
                applies_from: r[1].as_deref()?.parse().ok()?,
                features: serde_json::from_str(r[2].as_deref()?).ok()?,
                registered_by: String::new(),
                registered_at: String::new(),
            })
        })
        .collect();
    let stats = reader
        .query(
            "SELECT CAST(_version AS TEXT), CAST(application_date AS TEXT), column_name, CAST(mean AS TEXT)
             FROM feature_stats WHERE table_name = $1 ORDER BY application_date",
            &[&options.table],
        )
        .map_err(&failed)?;
    // Series: label → points (day number, mean).
    let mut series: IndexMap<String, Vec<(f64, f64)>> = IndexMap::new();
    series.insert("risk_score (daily mean)".into(), Vec::new());
    let mut days = std::collections::BTreeSet::new();
    for row in &stats {
        let (Some(version), Some(day), Some(column), Some(mean)) = (
            row[0].as_deref().and_then(|v| v.parse::<u32>().ok()),
            row[1].as_deref().and_then(Date::parse),
            row[2].as_deref(),
            row[3].as_deref().and_then(|m| m.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if options.version.is_some_and(|v| v != version)
            || options.from.is_some_and(|f| day < f)
            || options.to.is_some_and(|t| day > t)
        {
            continue;
        }
        let label = if column == "risk_score" {
            "risk_score (daily mean)".to_owned()
        } else {
            let definition = versions
                .iter()
                .find(|v| v.id == version)
                .and_then(|v| v.features.get(column))
                .map_or_else(|| "?".to_owned(), ToString::to_string);
            format!("{column} = {definition}")
        };
        let x = f64::from(day.days_since_2000());
        series.entry(label).or_default().push((x, mean));
        days.insert(day);
    }
    series.retain(|_, points| !points.is_empty());
    if series.is_empty() {
        let range = match (options.from, options.to) {
            (None, None) => String::new(),
            (from, to) => format!(
                " between {} and {}",
                from.map_or("the start".into(), |d| d.to_string()),
                to.map_or("the end".into(), |d| d.to_string())
            ),
        };
        return Err(PlotError::Empty(format!(
            "nothing to plot: `{}` has no feature_stats{range}{} in {store}",
            options.table,
            options
                .version
                .map_or(String::new(), |v| format!(" for version {v}"))
        )));
    }
    let (first, last) = (*days.first().expect("a day"), *days.last().expect("a day"));
    let boundaries: Vec<(f64, String)> = versions
        .iter()
        .filter(|v| v.applies_from > first && v.applies_from <= last)
        .map(|v| {
            (
                f64::from(v.applies_from.days_since_2000()),
                format!("v{} from {}", v.id, v.applies_from),
            )
        })
        .collect();
    let title = format!(
        "{}: daily means, {first} to {last}{}",
        options.table,
        options
            .version
            .map_or(String::new(), |v| format!(", version {v}"))
    );
    let canvas = draw(&title, &series, &boundaries, (first, last));
    canvas.write_png(out)?;
    Ok(PlotSummary {
        days: days.len(),
        series: series.iter().map(|(l, p)| (l.clone(), p.len())).collect(),
    })
}

/// The chart on a canvas.
fn draw(
    title: &str,
    series: &IndexMap<String, Vec<(f64, f64)>>,
    boundaries: &[(f64, String)],
    (first, last): (Date, Date),
) -> Canvas {
    let mut canvas = Canvas::new();
    let (left, top, right, bottom) = AREA;
    let x0 = f64::from(first.days_since_2000());
    let x1 = f64::from(last.days_since_2000()).max(x0 + 1.0);
    let values = series.values().flatten().map(|p| p.1);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_ticks, y0, y1) = nice_ticks(lo, hi);
    let px = |x: f64| left as f64 + (x - x0) / (x1 - x0) * (right - left) as f64;
    let py = |y: f64| bottom as f64 - (y - y0) / (y1 - y0) * (bottom - top) as f64;

    for &tick in &y_ticks {
        let y = py(tick).round() as usize;
        canvas.line(left as f64, y as f64, right as f64, y as f64, GRID);
        let label = format_tick(tick);
        canvas.text(left - 8 - text_width(&label), y - 7, &label, INK);
    }
    for year in first.year()..=last.year() + 1 {
        let Some(jan1) = Date::from_ymd(year, 1, 1) else {
            continue;
        };
        let x = f64::from(jan1.days_since_2000());
        if x < x0 || x > x1 {
            continue;
        }
        let x = px(x);
        canvas.line(x, top as f64, x, bottom as f64, GRID);
        let label = year.to_string();
        canvas.text(
            x as usize - text_width(&label) / 2,
            bottom + 14,
            &label,
            INK,
        );
    }
    for (x, label) in boundaries {
        let x = px(*x);
        canvas.dashed_vertical(x as usize, top, bottom, BOUNDARY);
        canvas.text(x as usize + 4, top + 4, label, BOUNDARY);
    }
    canvas.rectangle(left, top, right, bottom, INK);
    for (i, points) in series.values().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        for pair in points.windows(2) {
            // Days without stats (no rows) break the line rather than bridge the gap.
            if pair[1].0 - pair[0].0 > 7.0 {
                continue;
            }
            canvas.line(
                px(pair[0].0),
                py(pair[0].1),
                px(pair[1].0),
                py(pair[1].1),
                colour,
            );
        }
    }
    canvas.text(left, 20, title, INK);
    // Legend, bottom right under the axis labels.
    let mut x = left;
    for (i, label) in series.keys().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = HEIGHT - 26;
        canvas.fill(x, y + 4, x + 24, y + 9, colour);
        canvas.text(x + 30, y, label, INK);
        x += 30 + text_width(label) + 30;
    }
    canvas
}

/// About five round tick values covering `lo..hi`, and the axis range they span.
fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64, f64) {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let ticks = (0..=((end - start) / step).round() as usize)
        .map(|i| start + i as f64 * step)
        .collect();
    (ticks, start, end.max(start + step))
}

fn format_tick(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// An RGB image being drawn.
struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas {
            pixels: WHITE.repeat(WIDTH * HEIGHT),
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: Rgb) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            let at = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&colour);
        }
    }

    fn fill(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, colour: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x as i64, y as i64, colour);
            }
        }
    }

    /// A line two pixels thick (Bresenham, doubled downwards).
    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, colour: Rgb) {
        let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
        let (x1, y1) = (x1.round() as i64, y1.round() as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut error = dx + dy;
        loop {
            self.set(x, y, colour);
            self.set(x, y + 1, colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * error;
            if e2 >= dy {
                error += dy;
                x += sx;
            }
            if e2 <= dx {
                error += dx;
                y += sy;
            }
        }
    }

    fn dashed_vertical(&mut self, x: usize, top: usize, bottom: usize, colour: Rgb) {
        for y in (top..bottom).filter(|y| y / 6 % 2 == 0) {
            self.set(x as i64, y as i64, colour);
            self.set(x as i64 + 1, y as i64, colour);
        }
    }

    fn rectangle(&mut self, left: usize, top: usize, right: usize, bottom: usize, colour: Rgb) {
        let (l, t, r, b) = (left as f64, top as f64, right as f64, bottom as f64);
        self.line(l, t, r, t, colour);
        self.line(l, b, r, b, colour);
        self.line(l, t, l, b, colour);
        self.line(r, t, r, b, colour);
    }

    /// Text in the built-in font (upper case), top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, colour: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let left = x + i * 6 * SCALE;
            for (row, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        let (px, py) = (left + col * SCALE, y + row * SCALE);
                        self.fill(px, py, px + SCALE, py + SCALE, colour);
                    }
                }
            }
        }
    }

    fn write_png(&self, path: &Path) -> Result<(), PlotError> {
        let failed = |error: std::io::Error| PlotError::Write {
            path: path.display().to_string(),
            error,
        };
        let file = std::fs::File::create(path).map_err(failed)?;
        let mut encoder =
            png::Encoder::new(std::io::BufWriter::new(file), WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let encoded = encoder
            .write_header()
            .and_then(|mut writer| writer.write_image_data(&self.pixels));
        encoded.map_err(|e| failed(std::io::Error::other(e)))
    }
}

/// Width in pixels of `text` in the built-in font.
fn text_width(text: &str) -> usize {
    text.chars().count() * 6 * SCALE
}

/// The 5×7 dots of a character (rows top to bottom, bit 4 = leftmost); letters are drawn in
/// upper case, unknown characters as a box.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'D' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11110,
        ],
        'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        'F' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'G' => [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
        'H' => [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'I' => [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'J' => [
            0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'K' => [
            0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
        ],
        'L' => [
            0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
        ],
        'M' => [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
        'N' => [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
        'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'Q' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
        ],
        'R' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
        'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        'T' => [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'U' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'V' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        'X' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
        'Y' => [
            0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100,
        ],
        'Z' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
        ],
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '3' => [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        ' ' => [0; 7],
        '-' => [0, 0, 0, 0b11111, 0, 0, 0],
        '+' => [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0],
        '=' => [0, 0, 0b11111, 0, 0b11111, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0b11111],
        '.' => [0, 0, 0, 0, 0, 0b01100, 0b01100],
        ',' => [0, 0, 0, 0, 0b01100, 0b00100, 0b01000],
        ':' => [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0],
        '/' => [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0],
        '(' => [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
        ')' => [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
        _ => [
            0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (ticks, lo, hi) = nice_ticks(603.2, 681.7);
        assert_eq!(ticks, vec![600.0, 620.0, 640.0, 660.0, 680.0, 700.0]);
        assert_eq!((lo, hi), (600.0, 700.0));
        let (ticks, _, _) = nice_ticks(5.0, 5.0);
        assert!(!ticks.is_empty());
    }
}
