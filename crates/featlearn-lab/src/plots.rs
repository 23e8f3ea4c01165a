//! Figures as SVG and PNG, rendered with plotters and an embedded font (no system font, no
//! display): error vs n per d, n*(d) with the fitted power laws and the theory's slopes, the
//! local slopes of n*(d), alignment vs n/d^2, transfer error vs n_target beside learning from
//! scratch.
//!
//! A method's colour and marker are a function of its label alone ([`style_of`]), the same in
//! every figure and every results folder; a fit is dashed in its method's colour, a reference
//! line grey. The legend has a panel of its own beside the plot, so it never covers data. Log
//! axes carry 1-2-5 labels and a light minor grid. Points are means over seeds with standard
//! error bars (a shaded band where a series has many points).

use anyhow::{anyhow, Context, Result};
use image::codecs::png::PngEncoder;
use image::{ColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use crate::files::write_atomic;
use crate::records::{mean_se, CurvePoint, Record};
use crate::report::{escape_task, Report, SLOPE_WINDOW};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Width and height of every figure, in pixels (the SVG's units too).
pub const SIZE: (u32, u32) = (960, 560);
/// Width of the legend panel at the right of every figure.
const LEGEND_WIDTH: u32 = 250;

/// What a series is, which decides how it is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Measured means with standard errors, in the method's colour; `variant` (0, 1, ...) picks
    /// the marker when one figure tells d or targets apart.
    Data { variant: usize },
    /// A fitted curve: dashed, in the method's colour, no markers.
    Fit,
    /// A reference (theory slope, threshold, level at initialisation): grey and thin; `pattern`
    /// (0, 1, ...) picks the dashes when one figure holds several.
    Reference { pattern: usize },
}

/// One line of a plot: points (x, y, standard error of y).
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// The method's label, which picks the colour ([`style_of`]); unused for references.
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
    /// A shade of the method's colour for data and fits, from -1 (black) through 0 (the colour
    /// itself) to 1 (white): a third channel where markers already tell one thing apart (a rank
    /// sweep's targets by marker, its ranks by shade). References stay grey.
    pub shade: f64,
    pub kind: Kind,
}

/// The markers, in the order methods and variants take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

const MARKERS: [Marker; 5] = [Marker::Circle, Marker::Square, Marker::Triangle, Marker::Diamond, Marker::Cross];

/// Colour and marker of each method the registry knows (Okabe-Ito's colour-blind-safe palette
/// and black).
const METHODS: [(&str, RGBColor, Marker); 11] = [
    ("onestep", RGBColor(0, 114, 178), Marker::Circle),
    ("onestep-authors", RGBColor(86, 180, 233), Marker::Diamond),
    ("transfer", RGBColor(0, 158, 115), Marker::Triangle),
    ("gd", RGBColor(204, 121, 167), Marker::Square),
    ("rf", RGBColor(230, 159, 0), Marker::Square),
    ("ntk", RGBColor(213, 94, 0), Marker::Triangle),
    ("nngp", RGBColor(150, 110, 0), Marker::Diamond),
    ("rbf", RGBColor(90, 90, 90), Marker::Circle),
    ("laplace", RGBColor(0, 0, 0), Marker::Cross),
    ("poly", RGBColor(140, 86, 75), Marker::Cross),
    ("sgd", RGBColor(120, 60, 160), Marker::Circle),
];

const GREY: RGBColor = RGBColor(120, 120, 120);

/// Dash and gap lengths of the reference lines, in pixels: dashed, dotted, long dashes.
const DASHES: [(i32, i32); 3] = [(6, 4), (2, 3), (12, 4)];

/// The colour and marker of a method's label, a function of the label alone: the method (the
/// label up to its first '/') picks a fixed colour and marker; the rest (the method's own axes,
/// `gd/mean-field/lr=0.05`) picks a shade of that colour, lighter or darker, by a hash of its
/// text. An unknown method gets a colour by a hash of its name.
pub fn style_of(label: &str) -> (RGBColor, Marker) {
    let (method, rest) = label.split_once('/').unwrap_or((label, ""));
    let (base, marker) = METHODS.iter().find(|(m, _, _)| *m == method).map(|&(_, c, k)| (c, k)).unwrap_or_else(|| {
        let h = fnv(method);
        let palette = [RGBColor(0, 114, 178), RGBColor(213, 94, 0), RGBColor(0, 158, 115), RGBColor(204, 121, 167)];
        (palette[(h % 4) as usize], MARKERS[(h / 4 % 5) as usize])
    });
    if rest.is_empty() {
        return (base, marker);
    }
    (shaded(base, [-0.45, -0.3, -0.15, 0.15, 0.3, 0.45][(fnv(rest) % 6) as usize]), marker)
}

/// `c` moved towards black (shade < 0) or white (shade > 0) by the fraction |shade|.
fn shaded(c: RGBColor, shade: f64) -> RGBColor {
    let mix = |c: u8| {
        let c = c as f64;
        (if shade < 0.0 { c * (1.0 + shade) } else { c + (255.0 - c) * shade }).round() as u8
    };
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// FNV-1a: a hash that is the same in every process and build.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// 1-2-5 labels for a log axis from `lo` to `hi` (every decade's 1 alone when 1-2-5 would print
/// more than 8), and the minor grid's 1..9 per decade.
pub fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let within = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let decade = |mults: &[f64]| -> Vec<f64> { (a..=b).flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e))).filter(within).collect() };
    let mut major = decade(&[1.0, 2.0, 5.0]);
    if major.len() > 8 {
        major = decade(&[1.0]);
    }
    // less than a decade wide (r from 1 to 4, say): two labels leave the far end unnamed, so
    // take the finer set when it stays within 8
    let finer = decade(&[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if major.len() < 2 || (major.len() == 2 && finer.len() <= 8) {
        major = finer;
    }
    if major.len() < 2 {
        // less than a factor of 1.5 wide: the ends and their geometric middle
        major = vec![lo, (lo * hi).sqrt(), hi];
    }
    let minor = decade(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]).into_iter().filter(|v| !major.contains(v)).collect();
    (major, minor)
}

/// Draws the series on log-log axes (or log x / linear y) into `stem.svg` and `stem.png`.
pub fn line_plot(stem: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<Vec<PathBuf>> {
    ensure_font();
    let pts: Vec<(f64, f64)> = series
        .iter()
        .filter(|s| !matches!(s.kind, Kind::Reference { .. }))
        .flat_map(|s| s.points.iter().map(|p| (p.0, p.1)))
        .filter(|p| p.0 > 0.0 && p.1.is_finite() && (!log_y || p.1 > 0.0))
        .collect();
    if pts.is_empty() {
        return Ok(Vec::new());
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::INFINITY, 0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
    // horizontal references (one point per end) widen only the y range
    // the y range holds every point with its error bar
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.1 - p.2, p.1 + p.2]))
        .filter(|&y| y.is_finite() && (!log_y || y > 0.0))
        .collect();
    let (mut y0, mut y1) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &y| (a.min(y), b.max(y)));
    if x1 <= x0 {
        x0 /= 1.5;
        x1 *= 1.5;
    }
    (x0, x1) = (x0 / 1.1, x1 * 1.1);
    if log_y {
        y0 /= 1.3;
        y1 *= 1.3;
    } else {
        let pad = ((y1 - y0) * 0.06).max(1e-3);
        y0 -= pad;
        y1 += pad;
    }
    let (svg, png) = (stem.with_extension("svg"), stem.with_extension("png"));
    let (width, height) = SIZE;
    let axes = Axes { title, x_label, y_label, x: (x0, x1), y: (y0, y1), log_y };
    // both are drawn in memory, then written whole (a full disk leaves no truncated figure)
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, SIZE).into_drawing_area();
        draw(&root, &axes, series).with_context(|| format!("cannot draw {}", svg.display()))?;
    }
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(&root, &axes, series).with_context(|| format!("cannot draw {}", png.display()))?;
    }
    let mut png_bytes = Vec::new();
    PngEncoder::new(&mut png_bytes)
        .write_image(&pixels, width, height, ColorType::Rgb8)
        .map_err(|e| anyhow!("cannot encode {}: {e}", png.display()))?;
    write_atomic(&svg, svg_text.as_bytes())?;
    write_atomic(&png, &png_bytes)?;
    Ok(vec![svg, png])
}

/// A figure's title, axis labels and ranges.
struct Axes<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: (f64, f64),
    y: (f64, f64),
    log_y: bool,
}

/// The colour, marker and line of a series.
fn look(s: &Series) -> (RGBColor, Option<Marker>) {
    let (color, marker) = style_of(&s.label);
    // a shade of 0 leaves the colour as it is
    let color = shaded(color, s.shade);
    match s.kind {
        Kind::Reference { .. } => (GREY, None),
        Kind::Fit => (color, None),
        Kind::Data { variant: 0 } => (color, Some(marker)),
        Kind::Data { variant } => (color, Some(MARKERS[variant % MARKERS.len()])),
    }
}

/// The stroke of a series' line and its dashes (None: solid), the same in the plot and in the
/// legend: data solid (dashed past the markers' variants), fits dashed, references grey with
/// their pattern.
fn line_style(s: &Series) -> (ShapeStyle, Option<(i32, i32)>) {
    let color = look(s).0;
    match s.kind {
        Kind::Data { variant } if variant >= MARKERS.len() => (color.stroke_width(2), Some((9, 4))),
        Kind::Data { .. } => (color.stroke_width(2), None),
        Kind::Fit => (color.stroke_width(2), Some((9, 6))),
        Kind::Reference { pattern } => (GREY.stroke_width(1), Some(DASHES[pattern % DASHES.len()])),
    }
}

fn marker_at<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, marker: Marker, (x, y): (i32, i32), color: RGBColor) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    let style = color.filled();
    match marker {
        Marker::Circle => area.draw(&Circle::new((x, y), 4, style)).map_err(err),
        Marker::Square => area.draw(&Rectangle::new([(x - 4, y - 4), (x + 4, y + 4)], style)).map_err(err),
        Marker::Triangle => area.draw(&Polygon::new(vec![(x, y - 5), (x - 5, y + 4), (x + 5, y + 4)], style)).map_err(err),
        Marker::Diamond => area.draw(&Polygon::new(vec![(x, y - 5), (x - 5, y), (x, y + 5), (x + 5, y)], style)).map_err(err),
        Marker::Cross => {
            area.draw(&PathElement::new(vec![(x - 4, y - 4), (x + 4, y + 4)], color.stroke_width(2))).map_err(err)?;
            area.draw(&PathElement::new(vec![(x - 4, y + 4), (x + 4, y - 4)], color.stroke_width(2))).map_err(err)
        }
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, axes: &Axes, series: &[Series]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    root.fill(&WHITE).map_err(err)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let (x0, x1) = axes.x;
    let (y0, y1) = axes.y;
    let (x_major, x_minor) = log_ticks(x0, x1);
    let mut builder = ChartBuilder::on(&plot_area);
    builder.caption(axes.title, ("sans-serif", 17)).margin(12).x_label_area_size(46).y_label_area_size(66);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(axes.x_label)
                .y_desc(axes.y_label)
                .x_label_formatter(&|v: &f64| tick(*v))
                .y_label_formatter(&|v: &f64| tick(*v))
                .label_style(("sans-serif", 14))
                .bold_line_style(RGBColor(215, 215, 215))
                .light_line_style(RGBColor(240, 240, 240))
                .draw()
                .map_err(err)?;
            for s in series {
                let (color, marker) = look(s);
                let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).filter(|p| p.1.is_finite() && (!axes.log_y || p.1 > 0.0)).collect();
                if let Kind::Data { .. } = s.kind {
                    if s.points.len() > 8 {
                        // many points: a shaded band of +- one standard error
                        let upper = s.points.iter().map(|p| (p.0, p.1 + p.2));
                        let lower = s.points.iter().rev().map(|p| (p.0, p.1 - p.2));
                        let band: Vec<(f64, f64)> = upper.chain(lower).filter(|p| !axes.log_y || p.1 > 0.0).collect();
                        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.18).filled()))).map_err(err)?;
                    } else {
                        chart
                            .draw_series(s.points.iter().filter(|p| p.2 > 0.0 && (!axes.log_y || p.1 - p.2 > 0.0)).map(|p| {
                                ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, color.stroke_width(1), 6)
                            }))
                            .map_err(err)?;
                    }
                }
                match line_style(s) {
                    (style, None) => chart.draw_series(LineSeries::new(line.clone(), style)).map_err(err)?,
                    (style, Some((dash, gap))) => chart.draw_series(DashedLineSeries::new(line.clone(), dash, gap, style)).map_err(err)?,
                };
                if let Some(marker) = marker {
                    // the markers in pixels of the plotting area, drawn as the legend draws them
                    let area = chart.plotting_area();
                    let (bx, by) = area.get_base_pixel();
                    let pixels = area.strip_coord_spec();
                    for p in &line {
                        let (x, y) = area.map_coordinate(p);
                        marker_at(&pixels, marker, (x - bx, y - by), color)?;
                    }
                }
            }
        }};
    }
    let x_axis = (x0..x1).log_scale().with_key_points(x_major).with_light_points(x_minor);
    if axes.log_y {
        let (y_major, y_minor) = log_ticks(y0, y1);
        body!(builder.build_cartesian_2d(x_axis, (y0..y1).log_scale().with_key_points(y_major).with_light_points(y_minor)).map_err(err)?);
    } else {
        body!(builder.build_cartesian_2d(x_axis, y0..y1).map_err(err)?);
    }
    draw_legend(&legend_area, series)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The legend in its own panel: a sample of each series' line and marker, then its name. When
/// the entries do not fit the panel's height they are drawn closer in a smaller font, and what
/// still does not fit is counted on a last line rather than cut off.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
    // long names wrap onto further lines
    let wrap = |name: &str| {
        let mut lines = vec![String::new()];
        for word in name.split(' ') {
            let last = lines.last_mut().expect("one line at least");
            if !last.is_empty() && last.len() + word.len() > 26 {
                lines.push(word.to_string());
            } else {
                if !last.is_empty() {
                    last.push(' ');
                }
                last.push_str(word);
            }
        }
        lines
    };
    // series without a name are drawn, but named by an earlier entry
    let entries: Vec<(&Series, Vec<String>)> = series.iter().filter(|s| !s.name.is_empty()).map(|s| (s, wrap(&s.name))).collect();
    let (top, bottom) = (44, area.dim_in_pixel().1 as i32 - 12);
    let height = |line: i32, gap: i32| entries.iter().map(|(_, lines)| line * lines.len() as i32 + gap).sum::<i32>();
    let (size, line, gap) = if top + height(16, 8) <= bottom { (13, 16, 8) } else { (11, 13, 3) };
    let font = ("sans-serif", size).into_font();
    let mut y = top;
    for (k, (s, lines)) in entries.iter().enumerate() {
        if y + line * lines.len() as i32 > bottom - line {
            let more = entries.len() - k;
            area.draw(&Text::new(format!("... {more} more (report.md)"), (44, y - 7), font.clone())).map_err(err)?;
            break;
        }
        let (color, marker) = look(s);
        let (style, dashes) = line_style(s);
        let (dash, gap_px) = dashes.unwrap_or((30, 0));
        let mut a = 6;
        while a < 36 {
            area.draw(&PathElement::new(vec![(a, y), ((a + dash).min(36), y)], style)).map_err(err)?;
            a += dash + gap_px.max(1);
        }
        if let Some(marker) = marker {
            marker_at(area, marker, (21, y), color)?;
        }
        for (j, text) in lines.iter().enumerate() {
            area.draw(&Text::new(text.clone(), (44, y - 7 + line * j as i32), font.clone())).map_err(err)?;
        }
        y += line * lines.len() as i32 + gap;
    }
    Ok(())
}

/// A tick label with three significant digits (0.6, 0.25, 1000), without float noise.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// mean ± se of a record field per (d, label, target, x).
fn grouped(records: &[Record], keep: impl Fn(&Record) -> bool, x: impl Fn(&Record) -> f64, y: impl Fn(&Record) -> Option<f64>) -> BTreeMap<(usize, String, String), Vec<(f64, f64, f64)>> {
    let mut acc: BTreeMap<(usize, String, String), BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    let (target, method) = (crate::report::target_name(records), crate::report::method_name(records));
    for r in records.iter().filter(|r| r.status == "ok" && keep(r)) {
        if let Some(v) = y(r) {
            acc.entry((r.trial.d, method(&r.trial), target(&r.trial))).or_default().entry(x(r).to_bits()).or_default().push(v);
        }
    }
    acc.into_iter()
        .map(|(k, by_x)| {
            let mut pts: Vec<(f64, f64, f64)> = by_x
                .into_iter()
                .map(|(xb, vs)| {
                    let (m, se) = mean_se(&vs);
                    (f64::from_bits(xb), m, se)
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, pts)
        })
        .collect()
}

/// A horizontal reference line at `y` across `xs`' range.
fn level(name: String, y: f64, xs: impl Iterator<Item = f64>, pattern: usize) -> Option<Series> {
    let (lo, hi) = xs.fold((f64::INFINITY, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    (lo.is_finite() && hi > 0.0).then(|| Series { name, label: String::new(), points: vec![(lo / 1.1, y, 0.0), (hi * 1.1, y, 0.0)], shade: 0.0, kind: Kind::Reference { pattern } })
}

/// A target's name split into the target and its rank: a rank sweep names its targets
/// `quadratic r=4` ([`crate::report::target_name`]).
fn without_rank(target: &str) -> (&str, Option<usize>) {
    target.split_once(" r=").map_or((target, None), |(base, r)| (base, r.parse().ok()))
}

/// The marker variant and the shade of each of a figure's targets: the target picks the marker;
/// in a rank sweep r picks a shade of the method's colour, from light (+0.45) for the smallest r
/// to dark (-0.45) for the largest, so that its eight series of one method stay apart.
fn target_looks(targets: &BTreeSet<String>) -> impl Fn(&str) -> (usize, f64) {
    let bases: Vec<String> = targets.iter().map(|t| without_rank(t).0.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let ranks: Vec<usize> = targets.iter().filter_map(|t| without_rank(t).1).collect::<BTreeSet<_>>().into_iter().collect();
    move |target| {
        let (base, r) = without_rank(target);
        let variant = bases.iter().position(|x| x == base).unwrap_or(0);
        let shade = match r.and_then(|r| ranks.iter().position(|&x| x == r)) {
            Some(i) if ranks.len() > 1 => 0.45 - 0.9 * i as f64 / (ranks.len() - 1) as f64,
            _ => 0.0,
        };
        (variant, shade)
    }
}

/// All figures of a results folder, from its records, the curve points of its ok trials
/// ([`crate::report::ok_curves`]) and its report; returns the files written.
pub fn draw_all(dir: &Path, records: &[Record], curves: &[CurvePoint], report: &Report) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let target_name = crate::report::target_name(records);
    let targets: BTreeSet<String> = records.iter().map(|r| target_name(&r.trial)).collect();
    let several_targets = targets.len() > 1;
    let look_of_target = target_looks(&targets);
    let name = |label: &str, target: &str| if several_targets { format!("{label} on {target}") } else { label.to_string() };
    const SE: &str = "(mean ± s.e. over seeds)";

    // error vs n, one figure per d, with eps (sgd's n is not its sample count: see below)
    let errors = grouped(records, |r| r.escaped.is_none(), |r| r.trial.n as f64, |r| r.test_mse);
    let dims: BTreeSet<usize> = errors.keys().map(|k| k.0).collect();
    for &d in &dims {
        let mut series: Vec<Series> = errors
            .iter()
            .filter(|(k, _)| k.0 == d)
            .map(|(k, pts)| {
                let (variant, shade) = look_of_target(&k.2);
                Series { name: name(&k.1, &k.2), label: k.1.clone(), points: pts.clone(), shade, kind: Kind::Data { variant } }
            })
            .collect();
        let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
        series.extend(level(format!("eps = {} (defines n*)", report.eps), report.eps, xs.into_iter(), 0));
        files.extend(line_plot(&dir.join(format!("error_vs_n_d{d}")), &format!("test error vs n, d = {d} {SE}"), "n (training samples)", "test MSE / E[f*^2]", &series, true)?);
    }

    // n*(d) with fitted power laws and the theory's d^2 and d^p, anchored at the smallest d
    let mut nstar: Vec<Series> = Vec::new();
    let mut by_method: BTreeMap<(String, String), Vec<(f64, f64, f64)>> = BTreeMap::new();
    for r in report.n_star.iter() {
        if let Some(v) = r.n_star {
            // the bootstrap interval, drawn symmetric as half its width (none when its upper end
            // was not reached)
            let half = r.interval.and_then(|(lo, hi)| hi.map(|hi| (hi - lo) / 2.0)).unwrap_or(0.0);
            by_method.entry((r.method.clone(), r.target.clone())).or_default().push((r.d as f64, v, half));
        }
    }
    for ((label, target), pts) in &by_method {
        let (variant, shade) = look_of_target(target);
        nstar.push(Series { name: name(label, target), label: label.clone(), points: pts.clone(), shade, kind: Kind::Data { variant } });
        if let Some(fit) = report.exponents.iter().find(|e| &e.method == label && &e.target == target) {
            let c = pts.iter().map(|p| p.1.ln() - fit.exponent * p.0.ln()).sum::<f64>() / pts.len() as f64;
            let (a, b) = (pts.first().expect("a reached d").0, pts.last().expect("a reached d").0);
            let line = (0..=20).map(|i| a * (b / a).powf(i as f64 / 20.0)).map(|d| (d, (c + fit.exponent * d.ln()).exp(), 0.0)).collect();
            nstar.push(Series { name: format!("{} fit: d^{:.2}", name(label, target), fit.exponent), label: label.clone(), points: line, shade, kind: Kind::Fit });
        }
    }
    let all: Vec<(f64, f64)> = by_method.values().flatten().map(|p| (p.0, p.1)).collect();
    if let (Some(d_min), Some(d_max)) = (all.iter().map(|p| p.0).reduce(f64::min), all.iter().map(|p| p.0).reduce(f64::max)) {
        if d_max > d_min {
            let anchor = all.iter().filter(|p| p.0 == d_min).map(|p| p.1).fold(f64::INFINITY, f64::min);
            let ps: BTreeSet<usize> = records.iter().map(|r| r.trial.p).collect();
            let mut guides = vec![(2.0, "d^2: theory, Algorithm 1".to_string())];
            guides.extend(ps.iter().filter(|&&p| p > 2).map(|&p| (p as f64, format!("d^{p}: theory, kernels (p = {p})"))));
            for (pattern, (k, text)) in guides.into_iter().enumerate() {
                let line = (0..=20).map(|i| d_min * (d_max / d_min).powf(i as f64 / 20.0)).map(|d| (d, anchor * (d / d_min).powf(k), 0.0)).collect();
                nstar.push(Series { name: text, label: String::new(), points: line, shade: 0.0, kind: Kind::Reference { pattern } });
            }
        }
    }
    let title = format!("n*(d) at eps = {} (bars: 95% bootstrap, ± half width; theory from the smallest d)", report.eps);
    files.extend(line_plot(&dir.join("nstar"), &title, "d", "n* (interpolated in log n)", &nstar, true)?);

    // local slopes of n*(d): each window at the geometric mean of its d, with its interval
    let mut slopes: BTreeMap<(String, String), Vec<(f64, f64, f64)>> = BTreeMap::new();
    for l in &report.local_slopes {
        let centre = (l.dims.iter().map(|&d| (d as f64).ln()).sum::<f64>() / l.dims.len() as f64).exp();
        let half = l.interval.map_or(0.0, |(lo, hi)| (hi - lo) / 2.0);
        slopes.entry((l.method.clone(), l.target.clone())).or_default().push((centre, l.slope, half));
    }
    if !slopes.is_empty() {
        let mut series: Vec<Series> = slopes
            .iter()
            .map(|((label, target), pts)| {
                let (variant, shade) = look_of_target(target);
                Series { name: name(label, target), label: label.clone(), points: pts.clone(), shade, kind: Kind::Data { variant } }
            })
            .collect();
        let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
        let ps: BTreeSet<usize> = records.iter().map(|r| r.trial.p).collect();
        series.extend(level("2: theory, Algorithm 1".into(), 2.0, xs.iter().copied(), 0));
        for (pattern, p) in ps.into_iter().filter(|&p| p > 2).enumerate() {
            series.extend(level(format!("{p}: theory, kernels (p = {p})"), p as f64, xs.iter().copied(), pattern + 1));
        }
        let title = format!("local slope of n*(d) over {SLOPE_WINDOW} consecutive d (bars: ± half the 95% bootstrap width)");
        files.extend(line_plot(&dir.join("nstar_local_slopes"), &title, "d (geometric mean of the window)", "k in n* ~ d^k", &series, false)?);
    }

    // alignment vs n / d^2 (onestep), one marker per d, with r/d at initialisation
    let align = grouped(records, |r| r.trial.method == "onestep", |r| r.trial.n as f64 / (r.trial.d * r.trial.d) as f64, |r| r.alignment);
    // one marker per (target, d): both tell the curves apart here (in a rank sweep r's shade too)
    let align_keys: Vec<(&str, usize)> = align.keys().map(|k| (without_rank(&k.2).0, k.0)).collect::<BTreeSet<_>>().into_iter().collect();
    let mut series: Vec<Series> = align
        .iter()
        .map(|(k, pts)| Series {
            name: format!("{} d = {}", name(&k.1, &k.2), k.0),
            label: k.1.clone(),
            points: pts.clone(),
            shade: look_of_target(&k.2).1,
            kind: Kind::Data { variant: align_keys.iter().position(|x| x.0 == without_rank(&k.2).0 && x.1 == k.0).unwrap_or(0) },
        })
        .collect();
    let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let mut levels: BTreeSet<(usize, usize)> = BTreeSet::new();
    for r in records.iter().filter(|r| r.trial.method == "onestep") {
        levels.insert((r.trial.r, r.trial.d));
    }
    let ratios: Vec<f64> = levels.iter().map(|&(r, d)| r as f64 / d as f64).collect();
    for (k, &ratio) in ratios.iter().enumerate() {
        let name = match (k, ratios.len()) {
            (0, 1) => format!("r/d = {ratio:.3} at initialisation"),
            (0, _) => format!("r/d at initialisation, one line per d ({:.3} to {:.3})", ratios.iter().copied().fold(f64::INFINITY, f64::min), ratios.iter().copied().fold(0.0, f64::max)),
            _ => String::new(),
        };
        series.extend(level(name, ratio, xs.iter().copied(), 0));
    }
    files.extend(line_plot(&dir.join("alignment_vs_n_over_d2"), &format!("alignment of W vs n / d^2, onestep {SE}"), "n / d^2", "||W P_U||^2 / ||W||^2", &series, false)?);

    // transfer: the target's error vs n_target, beside onestep learning the target from scratch
    let transfer_dims: BTreeSet<usize> = records.iter().filter(|r| r.trial.method == "transfer").map(|r| r.trial.d).collect();
    let tr = grouped(records, |r| transfer_dims.contains(&r.trial.d) && matches!(r.trial.method.as_str(), "transfer" | "onestep"), |r| r.trial.n as f64, |r| r.test_mse);
    let tr_dims: Vec<usize> = transfer_dims.iter().copied().collect();
    let series: Vec<Series> = tr
        .iter()
        .map(|(k, pts)| {
            let what = if k.1.starts_with("transfer") { "" } else { " (from scratch)" };
            Series { name: format!("{}{what} d = {}", name(&k.1, &k.2), k.0), label: k.1.clone(), points: pts.clone(), shade: 0.0, kind: Kind::Data { variant: tr_dims.iter().position(|&d| d == k.0).unwrap_or(0) } }
        })
        .collect();
    if !transfer_dims.is_empty() {
        files.extend(line_plot(&dir.join("transfer_vs_n_target"), &format!("transfer vs from scratch: error vs n_target {SE}"), "n_target (target samples)", "test MSE / E[f*^2]", &series, true)?);
    }
    // n* against r (a rank sweep), one figure per target, one marker per d, with the paper's two
    // terms d^2 r and d r^p (grey, p the target's degree) through the smallest r's n* at each d
    let ranks: BTreeSet<usize> = report.n_star.iter().map(|r| r.r).collect();
    if ranks.len() > 1 {
        let base = |t: &str| t.split(" r=").next().unwrap_or(t).to_string();
        let mut by: BTreeMap<String, BTreeMap<(String, usize), Vec<(f64, f64, f64)>>> = BTreeMap::new();
        // the ranks whose error never reached eps, named in the legend
        let mut lost: BTreeMap<(String, String, usize), Vec<usize>> = BTreeMap::new();
        for row in report.n_star.iter() {
            match row.n_star {
                Some(v) => by.entry(base(&row.target)).or_default().entry((row.method.clone(), row.d)).or_default().push((row.r as f64, v, 0.0)),
                None => lost.entry((base(&row.target), row.method.clone(), row.d)).or_default().push(row.r),
            }
        }
        for (target, groups) in by {
            // the target's degree: task.p, except quadratic's, which is 2 whatever task.p says
            let p = if target == "quadratic" { 2.0 } else { records.iter().find(|r| r.trial.target == target).map_or(2, |r| r.trial.p) as f64 };
            let dims: Vec<usize> = groups.keys().map(|k| k.1).collect::<BTreeSet<_>>().into_iter().collect();
            let mut series = Vec::new();
            for ((label, d), mut pts) in groups {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let variant = dims.iter().position(|&x| x == d).unwrap_or(0);
                let missing = lost.get(&(target.clone(), label.clone(), d)).cloned().unwrap_or_default();
                let (r0, n0, r1) = (pts[0].0, pts[0].1, pts[pts.len() - 1].0);
                if r1 > r0 {
                    let df = d as f64;
                    let grid = |f: &dyn Fn(f64) -> f64| (0..=20).map(|i| r0 * (r1 / r0).powf(i as f64 / 20.0)).map(|r| (r, n0 * f(r) / f(r0), 0.0)).collect::<Vec<_>>();
                    series.push(Series { name: format!("d^2 r at d = {d}"), label: String::new(), points: grid(&|r| df * df * r), shade: 0.0, kind: Kind::Reference { pattern: 0 } });
                    series.push(Series { name: format!("d r^{p} at d = {d}"), label: String::new(), points: grid(&|r| df * r.powf(p)), shade: 0.0, kind: Kind::Reference { pattern: 1 } });
                }
                let name = match missing.as_slice() {
                    [] => format!("{label} d = {d}"),
                    rs => format!("{label} d = {d} (r = {} not reached)", rs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")),
                };
                series.push(Series { name, label: label.clone(), points: pts, shade: 0.0, kind: Kind::Data { variant } });
            }
            let stem: String = format!("nstar_vs_r_{target}").chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
            let title = format!("n* against r on {target} at eps = {} (grey: d^2 r and d r^p through the smallest r)", report.eps);
            files.extend(line_plot(&dir.join(stem), &title, "r", "n* (interpolated in log n)", &series, true)?);
        }
    }

    // sgd's curves for the escape figures, of the trials that finished
    let curves: Vec<&CurvePoint> = curves.iter().filter(|c| c.overlap.is_some()).collect();
    files.extend(draw_escape(dir, report, &curves)?);
    files.extend(draw_directions(dir, report)?);
    Ok(files)
}

/// The giant-step figure, for sgd runs on a teacher of several directions (r >= 2): the overlap
/// with each direction u_k (the report's [`crate::report::DirectionCurve`]) against the step
/// index from 1, a colour per label and a marker per direction, at each (task, d); the random
/// start's 1/d in grey.
fn draw_directions(dir: &Path, report: &Report) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut groups: BTreeMap<(&str, usize), Vec<&crate::report::DirectionCurve>> = BTreeMap::new();
    for c in &report.directions {
        groups.entry((c.target.as_str(), c.d)).or_default().push(c);
    }
    for ((task, d), curves) in groups {
        let mut series = Vec::new();
        let mut last_step = 1usize;
        for c in curves {
            last_step = last_step.max(c.points.last().map_or(1, |p| p.0));
            // the axis is logarithmic: the start (step 0) is the grey 1/d line
            let points = c.points.iter().filter(|p| p.0 > 0).map(|&(t, m, se)| (t as f64, m, se)).collect();
            series.push(Series { name: format!("{}: u_{}", c.method, c.direction), label: c.method.clone(), points, shade: 0.0, kind: Kind::Data { variant: c.direction - 1 } });
        }
        if let Some(start) = level(format!("random start: 1/d = {:.1e}", 1.0 / d as f64), 1.0 / d as f64, [1.0, last_step as f64].into_iter(), 0) {
            series.push(start);
        }
        let stem: String = format!("directions_{task}_d{d}").chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
        let title = format!("overlap with each teacher direction after each step, {task} at d = {d} (mean over seeds)");
        files.extend(line_plot(&dir.join(stem), &title, "step", "mean over neurons of cos^2(w_j, u_k)", &series, true)?);
    }
    Ok(files)
}

/// `sgd`'s figures: the median escape samples against d with the fitted power law (error bars
/// from the quartiles), and the mean overlap over seeds against t / d^k with k the fitted
/// exponent of the escape steps, one curve per d (a seed stopped at its escape holds its last
/// overlap): at the right k the curves fall on one another.
fn draw_escape(dir: &Path, report: &Report, curves: &[&CurvePoint]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if report.escape.is_empty() {
        return Ok(files);
    }
    let mut series = Vec::new();
    let mut medians: BTreeMap<(String, String), Vec<(f64, f64, f64)>> = BTreeMap::new();
    for r in &report.escape {
        if let (Some(q1), Some(m), q3) = r.samples {
            // the bar spans the quartiles, drawn symmetric as half their distance
            let half = q3.map_or(m - q1, |q3| (q3 - q1) / 2.0);
            medians.entry((r.method.clone(), r.target.clone())).or_default().push((r.d as f64, m, half));
        }
    }
    // the task (he1, he2, ...) always names the series: it is what tells them apart here
    let name = |label: &str, task: &str| format!("{label} on {task}");
    for (variant, ((label, target), pts)) in medians.iter().enumerate() {
        series.push(Series { name: name(label, target), label: label.clone(), points: pts.clone(), shade: 0.0, kind: Kind::Data { variant } });
        if let Some(fit) = report.escape_fits.iter().find(|f| &f.method == label && &f.target == target && f.quantity == "samples") {
            let c = pts.iter().map(|p| p.1.ln() - fit.exponent * p.0.ln()).sum::<f64>() / pts.len() as f64;
            let (a, b) = (pts.first().expect("a point").0, pts.last().expect("a point").0);
            let line = (0..=20).map(|i| a * (b / a).powf(i as f64 / 20.0)).map(|d| (d, (c + fit.exponent * d.ln()).exp(), 0.0)).collect();
            series.push(Series { name: format!("{} fit: d^{:.2}", name(label, target), fit.exponent), label: label.clone(), points: line, shade: 0.0, kind: Kind::Fit });
        }
    }
    if !series.is_empty() {
        files.extend(line_plot(&dir.join("escape_samples"), "samples until the overlap reaches the threshold (median over seeds; bars: quartiles)", "d", "samples", &series, true)?);
    }
    for fit in report.escape_fits.iter().filter(|f| f.quantity == "steps") {
        // each seed's curve by d; a seed that stopped at its escape holds its last overlap after
        let mut by_d: BTreeMap<usize, BTreeMap<u64, Vec<(usize, f64)>>> = BTreeMap::new();
        for c in curves.iter().filter(|c| c.trial.label == fit.method && escape_task(&c.trial) == fit.target) {
            by_d.entry(c.trial.d).or_default().entry(c.trial.seed).or_default().push((c.step, c.overlap.expect("filtered")));
        }
        let series: Vec<Series> = by_d
            .iter()
            .enumerate()
            .map(|(variant, (&d, seeds))| {
                let steps: BTreeSet<usize> = seeds.values().flatten().map(|p| p.0).filter(|&t| t > 0).collect();
                let held = |curve: &[(usize, f64)], t: usize| curve.iter().take_while(|p| p.0 <= t).last().map_or(f64::NAN, |p| p.1);
                let points = steps
                    .iter()
                    .map(|&t| {
                        let values: Vec<f64> = seeds.values().map(|c| held(c, t)).collect();
                        (t as f64 / (d as f64).powf(fit.exponent), mean_se(&values).0, 0.0)
                    })
                    .collect();
                Series { name: format!("{} d = {d}", name(&fit.method, &fit.target)), label: fit.method.clone(), points, shade: 0.0, kind: Kind::Data { variant } }
            })
            .collect();
        if !series.is_empty() {
            // a file name of the label and task: '/', '.' and spaces become '_' (a '.' would be
            // read as the extension's start: "displace=0.1" would lose its ".1_...")
            let stem: String = format!("overlap_collapse_{}_{}", fit.method, fit.target).chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
            let title = format!("mean overlap over seeds vs t / d^{:.2} (the fitted escape exponent), {}", fit.exponent, name(&fit.method, &fit.target));
            files.extend(line_plot(&dir.join(stem), &title, &format!("t / d^{:.2}", fit.exponent), "overlap", &series, false)?);
        }
    }
    // escape against the batch size: median steps and samples, and the knee fit of the steps
    let mut sweeps: BTreeMap<(String, usize), Vec<&crate::report::BatchSweep>> = BTreeMap::new();
    for w in &report.batch_sweeps {
        sweeps.entry((w.target.clone(), w.d)).or_default().push(w);
    }
    for ((target, d), ws) in sweeps {
        let mut series = Vec::new();
        for w in ws {
            let who = name(&w.method, &w.target);
            series.push(Series { name: format!("{who}: steps"), label: w.method.clone(), points: w.points.iter().map(|p| (p.0 as f64, p.1, 0.0)).collect(), shade: 0.0, kind: Kind::Data { variant: 0 } });
            series.push(Series { name: format!("{who}: samples"), label: w.method.clone(), points: w.points.iter().map(|p| (p.0 as f64, p.2, 0.0)).collect(), shade: 0.0, kind: Kind::Data { variant: 1 } });
            let knee = w.knee.unwrap_or(f64::INFINITY);
            let (a, b) = (w.points.first().expect("a point").0 as f64, w.points.last().expect("a point").0 as f64);
            let line = (0..=40).map(|i| a * (b / a).powf(i as f64 / 40.0)).map(|x| (x, (w.level - x.min(knee).ln()).exp(), 0.0)).collect();
            let fit = w.knee.map_or("steps ~ 1/b, no knee within the sweep".into(), |k| format!("steps ~ 1/min(b, {k:.0})"));
            series.push(Series { name: format!("{who} fit: {fit}"), label: w.method.clone(), points: line, shade: 0.0, kind: Kind::Fit });
        }
        let stem: String = format!("escape_vs_batch_{target}_d{d}").chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
        let title = format!("escape against the batch size b at d = {d} (median over seeds)");
        files.extend(line_plot(&dir.join(stem), &title, "b", "steps, samples", &series, true)?);
    }
    // where a larger batch stops escaping, against d: the bracket at each d, the theory's
    // d^(k*/2) in grey through the first bracket's geometric mean (k* read from `heK`)
    let mut edges: BTreeMap<&str, Vec<&crate::report::BatchEdge>> = BTreeMap::new();
    for e in report.batch_edges.iter().filter(|e| e.brackets.len() >= 2) {
        edges.entry(e.target.as_str()).or_default().push(e);
    }
    for (target, es) in edges {
        let mut series = Vec::new();
        for e in &es {
            let who = name(&e.method, &e.target);
            let k = e.exponent.map_or(String::new(), |k| format!(", slope {k:.2}"));
            series.push(Series { name: format!("{who}: last b escaped{k}"), label: e.method.clone(), points: e.brackets.iter().map(|p| (p.0 as f64, p.1 as f64, 0.0)).collect(), shade: 0.0, kind: Kind::Data { variant: 0 } });
            series.push(Series { name: format!("{who}: first b not escaped"), label: e.method.clone(), points: e.brackets.iter().map(|p| (p.0 as f64, p.2 as f64, 0.0)).collect(), shade: 0.0, kind: Kind::Data { variant: 1 } });
        }
        if let Some(k) = target.strip_prefix("he").and_then(|k| k.parse::<f64>().ok()) {
            let &(d0, a, b) = &es[0].brackets[0];
            let mid = (a as f64 * b as f64).sqrt();
            let line = es[0].brackets.iter().map(|p| (p.0 as f64, mid * (p.0 as f64 / d0 as f64).powf(k / 2.0), 0.0)).collect();
            series.push(Series { name: format!("d^{} (k* / 2)", k / 2.0), label: String::new(), points: line, shade: 0.0, kind: Kind::Reference { pattern: 0 } });
        }
        let stem: String = format!("batch_edge_{target}").chars().map(|c| if c.is_ascii_alphanumeric() || "-_=".contains(c) { c } else { '_' }).collect();
        files.extend(line_plot(&dir.join(stem), &format!("where a larger batch stops escaping on {target}"), "d", "b", &series, true)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legend that fits is drawn in the 13-point font; 18 entries (a rank sweep's n*(d):
    /// eight series, eight fits, two references) are drawn closer in 11 points, all of them; 60
    /// are counted on a last line rather than cut off.
    #[test]
    fn a_long_legend_is_drawn_smaller_and_what_does_not_fit_is_counted() {
        let dir = std::env::temp_dir().join(format!("featlearn-legend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = |count: usize| {
            let series: Vec<Series> = (0..count)
                .map(|i| Series { name: format!("onestep on he2-plus-hep r={i}"), label: "onestep".into(), points: vec![(1.0, 1.0 + i as f64, 0.0), (2.0, 2.0 + i as f64, 0.0)], shade: 0.0, kind: Kind::Data { variant: i % 4 } })
                .collect();
            line_plot(&dir.join(format!("legend{count}")), "legend", "x", "y", &series, true).unwrap();
            std::fs::read_to_string(dir.join(format!("legend{count}.svg"))).unwrap()
        };
        let (few, eighteen, sixty) = (svg(3), svg(18), svg(60));
        assert!(few.contains("r=2") && !few.contains("more (report.md)"));
        assert!(eighteen.contains("r=17") && !eighteen.contains("more (report.md)"));
        assert!(few.contains("font-size=\"13") && eighteen.contains("font-size=\"11"), "font sizes");
        assert!(sixty.contains("more (report.md)") && !sixty.contains("r=59<"), "the last entries are counted");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rank_sweeps_targets_take_a_marker_each_and_its_ranks_a_shade_in_order() {
        let sweep: BTreeSet<String> = ["quadratic", "he2-plus-hep"].iter().flat_map(|t| [1, 2, 4, 16].map(|r| format!("{t} r={r}"))).collect();
        let look = target_looks(&sweep);
        // markers by target (sorted: he2-plus-hep first), shades by r in numeric order (16 after
        // 4, though "16" sorts before "2" as text), from light to dark
        assert_eq!(look("he2-plus-hep r=1"), (0, 0.45));
        assert_eq!(look("quadratic r=16"), (1, -0.45));
        let shades: Vec<f64> = [1, 2, 4, 16].iter().map(|r| look(&format!("quadratic r={r}")).1).collect();
        assert!(shades.windows(2).all(|w| w[0] > w[1]), "{shades:?}");
        // the shades are colours apart: each step of r moves the blue channel of onestep's colour
        let blues: Vec<u8> = shades.iter().map(|&s| shaded(style_of("onestep").0, s).2).collect();
        assert!(blues.windows(2).all(|w| w[0] > w[1] + 20), "{blues:?}");
        // without a rank sweep every target keeps the method's colour and has its own marker
        let plain: BTreeSet<String> = ["quadratic", "he2-plus-hep"].iter().map(|t| t.to_string()).collect();
        let look = target_looks(&plain);
        assert_eq!((look("he2-plus-hep"), look("quadratic")), ((0, 0.0), (1, 0.0)));
        assert_eq!(shaded(style_of("onestep").0, 0.0), style_of("onestep").0);
    }

    #[test]
    fn a_methods_colour_is_a_function_of_its_label_alone() {
        // the same label gives the same colour whatever else a figure holds, and in any order
        assert_eq!(style_of("ntk"), style_of("ntk"));
        assert_eq!(style_of("onestep").0, RGBColor(0, 114, 178));
        assert_eq!(style_of("gd/mean-field/lr=0.05"), style_of("gd/mean-field/lr=0.05"));
        // the method's axes shade its colour: same family, another shade
        assert_ne!(style_of("gd/mean-field/lr=0.05").0, style_of("gd").0);
        assert_eq!(style_of("gd/mean-field/lr=0.05").1, style_of("gd").1);
        // every registered method has its own colour
        let colours: BTreeSet<(u8, u8, u8)> = METHODS.iter().map(|(m, _, _)| style_of(m).0).map(|c| (c.0, c.1, c.2)).collect();
        assert_eq!(colours.len(), METHODS.len());
    }

    #[test]
    fn log_ticks_are_1_2_5_and_never_too_many() {
        let (major, minor) = log_ticks(100.0, 9000.0);
        assert_eq!(major, [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]);
        assert!(minor.contains(&300.0) && minor.contains(&9000.0) && !minor.contains(&200.0));
        let (wide, _) = log_ticks(1e-3, 1e4);
        assert_eq!(wide.len(), 8); // 1e-3 .. 1e4, one label a decade
        let (narrow, _) = log_ticks(120.0, 180.0);
        assert!(narrow.len() >= 2, "{narrow:?}");
        // two 1-2-5 labels in a short range give way to the finer set, up to 8 labels
        assert_eq!(log_ticks(1.0, 4.0).0, [1.0, 1.5, 2.0, 3.0, 4.0]);
        assert_eq!(log_ticks(1.0, 8.0).0, [1.0, 2.0, 5.0]);
    }
}
