//! Plots the verify latencies the `verify` benchmark measured.
//!
//! `cargo bench --bench verify` writes `target/keyward-bench.csv` (under
//! `$CARGO_TARGET_DIR` if that is set). This example reads it and draws verify
//! latency against the number of keys, both on log scales, as an SVG:
//!
//! ```text
//! cargo run --example plot_benchmarks [-- [CSV] [SVG]]
//! ```
//!
//! CSV defaults to the benchmark's file and SVG to `docs/verify_latency.svg`;
//! both defaults are relative to the crate root, explicit paths to the current
//! directory. The CSV has the header `keys,name,median_ns`; a row with
//! `keys` 0 holds a figure that does not depend on the number of keys (the
//! Argon2id peer) and is drawn as a horizontal line. Series missing from the
//! CSV are left out of the plot.
//!
//! Text is written as SVG `<text>` elements, so no font files are needed (the
//! plotters `ttf` feature is off); the viewer picks a sans-serif font.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use plotters::prelude::*;

const TITLE: &str = "keyward verify latency vs. number of keys";
const SIZE: (u32, u32) = (960, 600);
const MARGIN: u32 = 15;
const X_LABEL_AREA: u32 = 50;
const Y_LABEL_AREA: u32 = 80;
const LEGEND_MARGIN: u32 = 10;
const FONT: &str = "sans-serif";

/// One plotted series: the benchmark name in the CSV, its legend label and
/// its colour, in legend order.
struct Spec {
    name: &'static str,
    label: &'static str,
    color: RGBColor,
}

const SERIES: [Spec; 7] = [
    Spec {
        name: "valid",
        label: "keyward: valid key verify",
        color: RGBColor(31, 119, 180),
    },
    Spec {
        name: "valid_one_at_a_time",
        label: "keyward: valid key verify, one at a time",
        color: RGBColor(23, 190, 207),
    },
    Spec {
        name: "floor_one_at_a_time",
        label: "floor, one at a time",
        color: RGBColor(188, 189, 34),
    },
    Spec {
        name: "bad_checksum",
        label: "keyward: bad checksum rejection",
        color: RGBColor(44, 160, 44),
    },
    Spec {
        name: "floor",
        label: "floor: BLAKE3 + one map lookup",
        color: RGBColor(127, 127, 127),
    },
    Spec {
        name: "peer_sha256_string_map",
        label: "peer: SHA-256 + String map",
        color: RGBColor(255, 127, 14),
    },
    Spec {
        name: "peer_argon2id_default",
        label: "peer: Argon2id, default parameters (independent of key count)",
        color: RGBColor(214, 39, 40),
    },
];

/// One data row of the CSV.
struct Row {
    keys: u64,
    name: String,
    median_ns: f64,
}

/// What a series looks like on the plot.
enum Shape {
    /// Medians at several key counts: a line through points.
    Curve(Vec<(f64, f64)>),
    /// One median independent of the key count: a horizontal line.
    Flat(f64),
}

impl Shape {
    /// The lowest and highest latency of the series, in ns.
    fn y_extent(&self) -> (f64, f64) {
        match self {
            Shape::Curve(points) => points
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
                    (lo.min(y), hi.max(y))
                }),
            Shape::Flat(y) => (*y, *y),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("plot_benchmarks: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    format!(
        "usage: cargo run --example plot_benchmarks [-- [CSV] [SVG]]\n\
         \n  CSV  benchmark results (default: {})\n  SVG  output file (default: {})",
        default_csv().display(),
        default_svg().display()
    )
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage());
        return Ok(());
    }
    if args.len() > 2 {
        return Err(format!("too many arguments\n{}", usage()));
    }
    let csv_path = args.first().map_or_else(default_csv, PathBuf::from);
    let svg_path = args.get(1).map_or_else(default_svg, PathBuf::from);

    let text = std::fs::read_to_string(&csv_path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `cargo bench --bench verify` first, or pass the CSV path)",
            csv_path.display()
        )
    })?;
    let rows = parse_csv(&text).map_err(|e| format!("{}: {e}", csv_path.display()))?;

    let mut series = Vec::new();
    for spec in &SERIES {
        match shape_of(spec, &rows) {
            Some(shape) => series.push((spec, shape)),
            None => eprintln!(
                "plot_benchmarks: note: no `{}` rows, series skipped",
                spec.name
            ),
        }
    }
    if series.is_empty() {
        let names: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        return Err(format!(
            "{}: none of the plotted series ({}) is in the file",
            csv_path.display(),
            names.join(", ")
        ));
    }

    if let Some(dir) = svg_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let svg = draw(&series).map_err(|e| format!("drawing the plot: {e}"))?;
    std::fs::write(&svg_path, svg)
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    println!("wrote {}", svg_path.display());
    Ok(())
}

/// The crate root, to which the default paths are relative.
fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `cargo bench --bench verify` writes its CSV. The benchmark runs in
/// the crate root, so a relative `CARGO_TARGET_DIR` is relative to it too.
fn default_csv() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from);
    crate_root().join(target).join("keyward-bench.csv")
}

fn default_svg() -> PathBuf {
    crate_root().join("docs").join("verify_latency.svg")
}

/// Parses `keys,name,median_ns` rows. Blank lines are skipped; anything else
/// that is not a well-formed row is an error naming the line.
fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty());
    let Some((n, header)) = lines.next() else {
        return Err("the file is empty".into());
    };
    let header: Vec<&str> = header
        .trim_start_matches('\u{feff}')
        .split(',')
        .map(str::trim)
        .collect();
    if header != ["keys", "name", "median_ns"] {
        return Err(format!(
            "line {n}: expected the header `keys,name,median_ns`, found `{}`",
            header.join(",")
        ));
    }

    let mut rows: Vec<Row> = Vec::new();
    for (n, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [keys, name, median] = fields[..] else {
            return Err(format!(
                "line {n}: expected 3 comma-separated fields, found {}: `{line}`",
                fields.len()
            ));
        };
        let keys: u64 = keys.parse().map_err(|_| {
            format!("line {n}: `keys` must be a non-negative integer, found `{keys}`")
        })?;
        if name.is_empty() {
            return Err(format!("line {n}: empty `name`"));
        }
        let median_ns: f64 = median
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                format!("line {n}: `median_ns` must be a positive number, found `{median}`")
            })?;
        if rows.iter().any(|r| r.keys == keys && r.name == name) {
            return Err(format!("line {n}: second row for keys={keys}, name={name}"));
        }
        rows.push(Row {
            keys,
            name: name.to_owned(),
            median_ns,
        });
    }
    if rows.is_empty() {
        return Err("no data rows after the header".into());
    }
    Ok(rows)
}

/// The series' shape, or `None` if the CSV has no rows for it. Rows with a
/// key count make a curve; a lone `keys` = 0 row makes a horizontal line.
fn shape_of(spec: &Spec, rows: &[Row]) -> Option<Shape> {
    let mine = || rows.iter().filter(|r| r.name == spec.name);
    let mut points: BTreeMap<u64, f64> = BTreeMap::new();
    for row in mine().filter(|r| r.keys > 0) {
        points.insert(row.keys, row.median_ns);
    }
    let flat = mine().find(|r| r.keys == 0).map(|r| r.median_ns);
    if points.is_empty() {
        return flat.map(Shape::Flat);
    }
    if flat.is_some() {
        eprintln!(
            "plot_benchmarks: note: `{}` has rows with and without a key count; \
             the keys=0 row is ignored",
            spec.name
        );
    }
    Some(Shape::Curve(
        points.into_iter().map(|(k, v)| (k as f64, v)).collect(),
    ))
}

/// Draws the chart and returns it as SVG text.
fn draw(series: &[(&Spec, Shape)]) -> Result<String, String> {
    let mut svg = String::new();
    draw_into(series, SVGBackend::with_string(&mut svg, SIZE)).map_err(|e| e.to_string())?;
    Ok(svg)
}

fn draw_into(
    series: &[(&Spec, Shape)],
    backend: SVGBackend<'_>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.margin(MARGIN, MARGIN, MARGIN, MARGIN);
    // The title is drawn by hand rather than by `ChartBuilder::caption` so that
    // the plot height is known before the y range is chosen. Without a usable
    // font it is left out rather than failing the whole plot.
    let area = match root.titled(TITLE, (FONT, 24)) {
        Ok(area) => area,
        Err(e) => {
            eprintln!("plot_benchmarks: warning: title left out: {e}");
            root.clone()
        }
    };
    let plot_height = f64::from(area.dim_in_pixel().1.saturating_sub(X_LABEL_AREA).max(1));

    // x: the key counts measured, padded a little on both sides.
    let keys = series.iter().flat_map(|(_, shape)| match shape {
        Shape::Curve(points) => points.iter().map(|p| p.0).collect(),
        Shape::Flat(_) => Vec::new(),
    });
    let (x_lo, x_hi) = keys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), k| {
        (lo.min(k), hi.max(k))
    });
    let (x_lo, x_hi) = if x_lo.is_finite() {
        pad_log(x_lo, x_hi, 0.15)
    } else {
        pad_log(1e3, 1e6, 0.15)
    };

    // y: all latencies, padded, plus a band with room for the legend.
    let extents: Vec<(f64, f64)> = series
        .iter()
        .map(|(_, s)| {
            let (lo, hi) = s.y_extent();
            (lo.log10(), hi.log10())
        })
        .collect();
    // The legend box plus a little clearance above and below it.
    let legend_box = legend_height(series);
    let (y_lo, y_hi, legend_centre) = y_layout(&extents, (legend_box + 16.0) / plot_height);
    let (y_lo, y_hi) = (10f64.powf(y_lo), 10f64.powf(y_hi));

    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .with_key_points(log_ticks(x_lo, x_hi)),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(log_ticks(y_lo, y_hi)),
        )?;
    chart
        .configure_mesh()
        .x_desc("number of keys (log scale)")
        .y_desc("median verify latency (log scale)")
        .x_label_formatter(&|k| format_keys(*k))
        .y_label_formatter(&|ns| format_ns(*ns))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()?;

    for (spec, shape) in series {
        let style = ShapeStyle::from(&spec.color).stroke_width(2);
        let anno = match shape {
            Shape::Curve(points) => {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, style.filled())))?;
                chart.draw_series(LineSeries::new(points.iter().copied(), style))?
            }
            Shape::Flat(y) => {
                chart.draw_series(LineSeries::new([(x_lo, *y), (x_hi, *y)], style))?
            }
        };
        // Curves get a point in their legend entry, the flat line does not (a
        // transparent point is not drawn at all).
        let marker = match shape {
            Shape::Curve(_) => style.filled(),
            Shape::Flat(_) => TRANSPARENT.filled(),
        };
        anno.label(spec.label).legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new([(0, 0), (20, 0)], style)
                + Circle::new((10, 0), 4, marker)
        });
    }

    // Put the legend's middle at the chosen height, in plotting-area pixels.
    let plot_h = f64::from(chart.plotting_area().dim_in_pixel().1);
    let centre_px = plot_h * (y_hi.log10() - legend_centre) / (y_hi / y_lo).log10();
    let top = (centre_px - legend_box / 2.0).round().max(0.0) as i32;
    let legend = chart
        .configure_series_labels()
        .position(SeriesLabelPosition::Coordinate(12, top))
        .margin(LEGEND_MARGIN)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .draw();
    if let Err(e) = legend {
        eprintln!("plot_benchmarks: warning: legend left out: {e}");
    }

    root.present()?;
    Ok(())
}

/// The legend box height in pixels, as plotters will lay it out.
fn legend_height(series: &[(&Spec, Shape)]) -> f64 {
    let font = (FONT, 15).into_font();
    let mut text = MultiLineText::<(i32, i32), &str>::new((0, 0), font);
    for (spec, _) in series {
        text.push_line(spec.label);
    }
    let height = text
        .estimate_dimension()
        .map_or(series.len() as f64 * 20.0, |(_, h)| f64::from(h));
    height + 2.0 * f64::from(LEGEND_MARGIN)
}

/// Widens `lo..hi` by `pad` decades on each side (half a decade if the range
/// is a single value).
fn pad_log(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    let pad = if hi > lo { pad } else { 0.5 };
    (lo / 10f64.powf(pad), hi * 10f64.powf(pad))
}

/// Chooses the y range (in log10 ns) and the log10 height at which the
/// legend's middle goes: in the widest horizontal band no series crosses if
/// that band is tall enough for a legend `fraction` of the plot high, else in
/// a band added above all the series.
fn y_layout(extents: &[(f64, f64)], fraction: f64) -> (f64, f64, f64) {
    let lo = extents.iter().map(|e| e.0).fold(f64::INFINITY, f64::min);
    let hi = extents
        .iter()
        .map(|e| e.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = if hi > lo { 0.2 } else { 0.5 };
    let (y_lo, y_hi) = (lo - pad, hi + pad);

    // The free bands between the merged extents, widest first.
    let mut sorted = extents.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut gaps = Vec::new();
    let mut covered = y_lo;
    for &(a, b) in &sorted {
        if a > covered {
            gaps.push((covered, a));
        }
        covered = covered.max(b);
    }
    gaps.push((covered, y_hi));
    let widest = gaps
        .into_iter()
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        .unwrap_or((y_lo, y_hi));
    if widest.1 - widest.0 >= fraction * (y_hi - y_lo) {
        return (y_lo, y_hi, (widest.0 + widest.1) / 2.0);
    }
    // Raise the top so that the band above the highest series is tall enough:
    // (top - hi) = fraction * (top - y_lo).
    let fraction = fraction.min(0.6);
    let top = (hi - fraction * y_lo) / (1.0 - fraction);
    (y_lo, top, (hi + top) / 2.0)
}

/// Tick positions for a log axis over `lo..hi`: the powers of ten, plus 2
/// and 5 times them (or every multiple) if the range spans few decades.
/// (plotters' own log ticks crowd and repeat labels on short ranges.)
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = (hi / lo).log10();
    let multiples: &[f64] = if decades >= 3.0 {
        &[1.0]
    } else if decades >= 1.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    };
    let mut ticks = Vec::new();
    for exponent in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for m in multiples {
            let tick = m * 10f64.powi(exponent);
            if (lo..=hi).contains(&tick) {
                ticks.push(tick);
            }
        }
    }
    ticks
}

/// `1000` as `1k`, `2000000` as `2M`.
fn format_keys(keys: f64) -> String {
    let (value, unit) = if keys >= 1e6 {
        (keys / 1e6, "M")
    } else if keys >= 1e3 {
        (keys / 1e3, "k")
    } else {
        (keys, "")
    };
    format!("{}{unit}", trim_number(value))
}

/// Nanoseconds with a unit: `250 ns`, `1 µs`, `13.7 ms`.
fn format_ns(ns: f64) -> String {
    let (value, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "µs")
    } else {
        (ns, "ns")
    };
    format!("{} {unit}", trim_number(value))
}

/// A number with at most two decimals and no trailing zeros.
fn trim_number(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
